"""OpenMetrics text: write the store's samples, read them back.

The writer produces a file that ``promtool tsdb create-blocks-from openmetrics``
accepts: one ``# TYPE name unknown`` family per metric name, each series' samples
contiguous and in time order, timestamps in seconds with millisecond precision,
values in Go's spelling (``NaN``, ``+Inf``, ``-Inf``) with shortest round-trip
digits, and ``# EOF`` at the end. Staleness markers cannot be written in
OpenMetrics and are left out (a real Prometheus writes them itself).

The reader accepts OpenMetrics and the Prometheus text format (samples must carry
timestamps), and parses line columns with Polars; only distinct label sets are
parsed in Python.

Example
-------
>>> import polars as pl, tempfile, os
>>> from vfanalytics.series import series_id
>>> labels = {"__name__": "up", "job": 'a"b'}
>>> series = pl.DataFrame({"series_id": [series_id(labels)], "metric": ["up"],
...     "labels": ['{"__name__":"up","job":"a\\\\"b"}']}, schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8})
>>> samples = pl.DataFrame({"series_id": [series_id(labels)] * 2, "ts": [1000, 16000], "value": [1.0, float("inf")]},
...     schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64})
>>> path = os.path.join(tempfile.mkdtemp(), "m.om")
>>> write_openmetrics(series, samples, path)
2
>>> print(open(path).read())
# TYPE up unknown
up{job="a\\"b"} 1 1.000
up{job="a\\"b"} +Inf 16.000
# EOF
<BLANKLINE>
>>> s2, x2 = read_openmetrics(path)
>>> x2["value"].to_list() == [1.0, float("inf")]
True
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from vfanalytics.exceptions import OpenMetricsError
from vfanalytics.series import SERIES_SCHEMA, canonical_labels, is_stale, series_id

__all__ = ["write_openmetrics", "read_openmetrics", "format_values"]

_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE_RE = re.compile(r"\\(.)")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series_text(labels_json: str) -> str:
    labels = orjson.loads(labels_json)
    name = labels.pop("__name__", "")
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def format_values(values: pl.Series) -> pl.Series:
    """Float64 -> shortest round-trip text in Go's spelling (``NaN``, ``+Inf``, ``-Inf``)."""
    text = values.cast(pl.Utf8)
    return (
        pl.DataFrame({"v": values, "t": text})
        .select(
            pl.when(pl.col("v").is_nan())
            .then(pl.lit("NaN"))
            .when(pl.col("v") == float("inf"))
            .then(pl.lit("+Inf"))
            .when(pl.col("v") == float("-inf"))
            .then(pl.lit("-Inf"))
            .otherwise(pl.col("t").str.replace(r"\.0$", ""))
        )
        .to_series()
    )


def write_openmetrics(
    series: pl.DataFrame,
    samples: pl.DataFrame | Iterable[pl.DataFrame],
    path: str | os.PathLike[str],
) -> int:
    """Write series and samples as OpenMetrics text; returns the number of samples written.

    ``samples`` may be one frame or an iterable of frames (e.g. one per metric, so a
    large store is written without holding every line in memory); a metric's samples
    must then all be in one frame, because OpenMetrics wants each family contiguous.
    """
    text_of = {
        sid: _series_text(lab) for sid, lab in zip(series["series_id"].to_list(), series["labels"].to_list(), strict=True)
    }
    metric_of = dict(zip(series["series_id"].to_list(), series["metric"].to_list(), strict=True))
    frames = [samples] if isinstance(samples, pl.DataFrame) else samples
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for frame in frames:
            if frame.is_empty():
                continue
            stale = is_stale(frame["value"].to_numpy())
            frame = frame.filter(pl.Series(~stale)).with_columns(
                pl.col("series_id").replace_strict(metric_of, return_dtype=pl.Utf8).alias("_metric")
            )
            for (metric,), part in sorted(frame.group_by("_metric"), key=lambda kv: str(kv[0][0])):
                part = part.sort("series_id", "ts")
                ts = part["ts"]
                lines = pl.DataFrame(
                    {
                        "s": part["series_id"].replace_strict(text_of, return_dtype=pl.Utf8),
                        "v": format_values(part["value"]),
                        "t": (ts // 1000).cast(pl.Utf8) + "." + (ts % 1000).cast(pl.Utf8).str.zfill(3),
                    }
                ).select(pl.concat_str(["s", "v", "t"], separator=" ").alias("line"))
                out.write(f"# TYPE {metric} unknown\n")
                out.write("\n".join(lines["line"].to_list()))
                out.write("\n")
                written += part.height
        out.write("# EOF\n")
    return written


def _parse_labels(text: str, path: str, line: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    body = text.strip()
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        if not m:
            raise OpenMetricsError(f"malformed label set {{{text}}}", path, line)
        labels[m.group(1)] = _UNESCAPE_RE.sub(lambda x: "\n" if x.group(1) == "n" else x.group(1), m.group(2))
        pos = m.end()
    return labels


def read_openmetrics(path: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse an OpenMetrics / Prometheus text file into ``(series, samples)`` frames.

    Raises
    ------
    OpenMetricsError
        On a malformed line, naming the file and line number.
    """
    p = str(path)
    try:
        raw = Path(p).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OpenMetricsError(f"cannot read: {exc}", p) from None
    lines = pl.DataFrame({"line": raw.split("\n")}).with_row_index("lineno", offset=1)
    body = lines.filter((pl.col("line").str.strip_chars() != "") & ~pl.col("line").str.starts_with("#"))
    parts = body.with_columns(
        pl.col("line")
        .str.extract_groups(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(\S+))?(?:\s+#.*)?\s*$")
        .alias("g")
    ).unnest("g")
    parts = parts.rename({"1": "name", "2": "labels", "3": "value", "4": "ts"})
    bad = parts.filter(pl.col("name").is_null())
    if not bad.is_empty():
        row = bad.row(0, named=True)
        raise OpenMetricsError(f"not a sample line: {row['line'][:80]!r}", p, int(row["lineno"]))
    missing_ts = parts.filter(pl.col("ts").is_null())
    if not missing_ts.is_empty():
        raise OpenMetricsError("sample without a timestamp", p, int(missing_ts["lineno"][0]))
    value_text = pl.col("value").str.to_lowercase().str.replace(r"^\+", "")
    ts_float = pl.col("ts").cast(pl.Float64, strict=False)
    parts = parts.with_columns(
        value_text.cast(pl.Float64, strict=False).alias("v"),
        (ts_float * 1000).round(0).cast(pl.Int64, strict=False).alias("t"),
        pl.concat_str([pl.col("name"), pl.col("labels").fill_null("")]).alias("key"),
    )
    bad_num = parts.filter(pl.col("v").is_null() | pl.col("t").is_null())
    if not bad_num.is_empty():
        row = bad_num.row(0, named=True)
        raise OpenMetricsError(f"bad value or timestamp in {row['line'][:80]!r}", p, int(row["lineno"]))
    keys = parts.group_by("key", maintain_order=True).agg(
        pl.col("name").first(), pl.col("labels").first(), pl.col("lineno").first()
    )
    ids: list[int] = []
    canon: list[str] = []
    metrics: list[str] = []
    for name, lab, lineno in zip(keys["name"].to_list(), keys["labels"].to_list(), keys["lineno"].to_list(), strict=True):
        labels = _parse_labels(lab[1:-1], p, int(lineno)) if lab else {}
        labels["__name__"] = name
        ids.append(series_id(labels))
        canon.append(canonical_labels(labels))
        metrics.append(name)
    id_of = dict(zip(keys["key"].to_list(), ids, strict=True))
    series = pl.DataFrame(
        {"series_id": np.array(ids, dtype=np.uint64), "metric": metrics, "labels": canon},
        schema=SERIES_SCHEMA,
    ).unique("series_id", maintain_order=True)
    samples = (
        parts.select(
            pl.col("key").replace_strict(id_of, return_dtype=pl.UInt64).alias("series_id"),
            pl.col("t").alias("ts"),
            pl.col("v").alias("value"),
        )
        .unique(["series_id", "ts"], keep="last", maintain_order=True)
        .sort("series_id", "ts")
    )
    return series, samples
