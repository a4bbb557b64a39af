"""Series identity, label sets and Prometheus' staleness marker.

A series is identified by its label set including ``__name__``. Its
``series_id`` is a stable unsigned 64-bit hash of the canonical form (labels
sorted by name, encoded as compact JSON), so the same labels get the same id in
any store, on any machine.

Staleness: Prometheus marks the end of a series with a special NaN whose bit
pattern is ``0x7ff0000000000002`` (``value.StaleNaN``). The store keeps that
exact bit pattern in its float64 ``value`` column (DuckDB and Arrow preserve NaN
payloads), so an ordinary NaN sample and a staleness marker stay distinct.

Example
-------
>>> labels = {"job": "api", "__name__": "up"}
>>> canonical_labels(labels)
'{"__name__":"up","job":"api"}'
>>> series_id(labels) == series_id({"__name__": "up", "job": "api"})
True
>>> import numpy as np
>>> bool(is_stale(np.array([STALE_NAN]))[0]), bool(is_stale(np.array([float("nan")]))[0])
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import orjson
import polars as pl

__all__ = [
    "STALE_NAN_BITS",
    "STALE_NAN",
    "is_stale",
    "canonical_labels",
    "series_id",
    "series_ids",
    "parse_labels_json",
    "format_series",
    "SERIES_SCHEMA",
    "SAMPLE_SCHEMA",
    "labels_frame",
]

#: the ``series`` table / frame: identity, metric name, canonical label JSON
SERIES_SCHEMA = {"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8}
#: the long samples frame every module passes around
SAMPLE_SCHEMA = {"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64}

#: Prometheus' staleness marker bit pattern (prometheus/model/value.StaleNaN)
STALE_NAN_BITS = 0x7FF0000000000002
#: the staleness marker as a Python float (compare with :func:`is_stale`, never with ==)
STALE_NAN: float = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])


def is_stale(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the staleness markers in a float64 array."""
    arr = np.ascontiguousarray(values, dtype=np.float64)
    return arr.view(np.uint64) == np.uint64(STALE_NAN_BITS)


def canonical_labels(labels: Mapping[str, str]) -> str:
    """Compact JSON of the label set, sorted by label name; empty values are dropped.

    Prometheus treats a label with an empty value as absent, so it does too.
    """
    items = sorted((k, v) for k, v in labels.items() if v != "")
    return orjson.dumps(dict(items)).decode()


def series_id(labels: Mapping[str, str]) -> int:
    """Stable unsigned 64-bit id of a label set."""
    digest = hashlib.blake2b(canonical_labels(labels).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def series_ids(label_sets: Iterable[Mapping[str, str]]) -> np.ndarray:
    """:func:`series_id` for many label sets, as a uint64 array."""
    return np.fromiter((series_id(ls) for ls in label_sets), dtype=np.uint64)


def parse_labels_json(text: str) -> dict[str, str]:
    """Inverse of :func:`canonical_labels`."""
    return dict(orjson.loads(text))


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_series(labels: Mapping[str, str]) -> str:
    """Prometheus' text form: ``name{a="b", c="d"}`` (labels sorted, values escaped)."""
    name = labels.get("__name__", "")
    rest = ", ".join(
        f'{k}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()) if k != "__name__"
    )
    if not rest:
        return name or "{}"
    return f"{name}{{{rest}}}"


def labels_frame(label_sets: Iterable[Mapping[str, str]]) -> pl.DataFrame:
    """``series_id, metric, labels`` rows for label sets (one Python call per series)."""
    sets = list(label_sets)
    return pl.DataFrame(
        {
            "series_id": [series_id(ls) for ls in sets],
            "metric": [ls.get("__name__", "") for ls in sets],
            "labels": [canonical_labels(ls) for ls in sets],
        },
        schema=SERIES_SCHEMA,
    )
