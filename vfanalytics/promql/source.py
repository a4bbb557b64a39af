"""Where the evaluator reads samples from: the store, in-memory frames, an OpenMetrics file.

Every source answers one call, ``select(matchers, start_ms, end_ms)``, with a
``(series_df, samples_df)`` pair: ``series_df`` has ``series_id`` (u64),
``metric`` and ``labels`` (canonical JSON including ``__name__``);
``samples_df`` is the long ``series_id, ts, value`` frame with both time bounds
inclusive. :class:`vfanalytics.store.Store` already satisfies the protocol.

Label matchers are ``(name, op, value)`` tuples with ``op`` one of ``=``,
``!=``, ``=~``, ``!~``; regexes are fully anchored, as in Prometheus.

Example
-------
>>> import polars as pl
>>> src = FrameSource.from_series({'up{job="api"}': ([0, 15_000], [1.0, 0.0])})
>>> series, samples = src.select([("__name__", "=", "up")], 0, 60_000)
>>> series["labels"].to_list(), samples["value"].to_list()
(['{"__name__":"up","job":"api"}'], [1.0, 0.0])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from vfanalytics.exceptions import QueryError, UsageError
from vfanalytics.series import SAMPLE_SCHEMA, SERIES_SCHEMA, canonical_labels, parse_labels_json, series_id

__all__ = [
    "Matcher",
    "Source",
    "FrameSource",
    "OpenMetricsSource",
    "compile_regex",
    "label_matches",
    "SERIES_SCHEMA",
    "SAMPLE_SCHEMA",
]

Matcher = tuple[str, str, str]



@runtime_checkable
class Source(Protocol):
    """Anything that returns series and samples for label matchers over an inclusive time range."""

    def select(
        self, matchers: Sequence[Matcher], start: int | None = None, end: int | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]: ...


_FLAG_GROUP = re.compile(r"\(\?([imsU-]+)\)")


def _scope_inline_flags(pattern: str) -> str:
    """Rewrite RE2's mid-pattern flag groups ``(?i)`` into Python's scoped ``(?i:...)``.

    In RE2 a flag group applies until the end of the enclosing group (across
    ``|`` alternatives); Python only accepts global flags at the very start.
    """
    out: list[str] = []
    scopes: list[list[str]] = [[]]  # flag groups opened at each nesting depth
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            if pattern[i + 1 : i + 2] == "]":
                out.append("]")
                i += 1
            i += 1
            continue
        m = _FLAG_GROUP.match(pattern, i)
        if m:
            flags = m.group(1).replace("U", "")
            if flags and flags != "-":
                out.append(f"(?{flags}:")
                scopes[-1].append(flags)
            i = m.end()
            continue
        if ch == "(":
            scopes.append([])
        elif ch == ")" and len(scopes) > 1:
            out.append(")" * len(scopes.pop()))
        elif ch == "|" and scopes[-1]:
            # close the scoped groups before the alternative and reopen them after it
            out.append(")" * len(scopes[-1]) + "|" + "".join(f"(?{f}:" for f in scopes[-1]))
            i += 1
            continue
        out.append(ch)
        i += 1
    out.append(")" * len(scopes[0]))
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Prometheus (RE2) regex, fully anchored; invalid ones raise :class:`QueryError`."""
    try:
        # (?s) matches Go's `.` on \n; RE2's mid-pattern (?i) becomes a scoped group
        return re.compile(f"(?s:{_scope_inline_flags(pattern)})")
    except re.error as exc:
        raise QueryError(f"invalid regular expression {pattern!r}: {exc}") from None


def label_matches(op: str, value: str, actual: str) -> bool:
    """Whether one label value satisfies one matcher (absent labels are ``""``)."""
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    if op == "=~":
        return compile_regex(value).fullmatch(actual) is not None
    if op == "!~":
        return compile_regex(value).fullmatch(actual) is None
    raise UsageError(f"unknown label matcher operator {op!r}")


class FrameSource:
    """In-memory series and samples (Polars frames), the source for tests and notebooks.

    Parameters
    ----------
    series:
        ``series_id, metric, labels`` (canonical JSON); ``metric`` may be omitted.
    samples:
        ``series_id, ts, value``.
    """

    def __init__(self, series: pl.DataFrame, samples: pl.DataFrame) -> None:
        if "metric" not in series.columns:
            series = series.with_columns(
                pl.col("labels").map_elements(lambda s: parse_labels_json(s).get("__name__", ""), return_dtype=pl.Utf8).alias("metric")
            )
        self.series = series.select(
            pl.col("series_id").cast(pl.UInt64), pl.col("metric").cast(pl.Utf8), pl.col("labels").cast(pl.Utf8)
        )
        self.samples = samples.select(
            pl.col("series_id").cast(pl.UInt64), pl.col("ts").cast(pl.Int64), pl.col("value").cast(pl.Float64)
        ).sort(["series_id", "ts"], maintain_order=True)
        self._labels = [parse_labels_json(s) for s in self.series["labels"].to_list()]
        self._ids = self.series["series_id"].to_numpy()
        sid = self.samples["series_id"].to_numpy()
        order_ids = np.sort(self._ids)
        self._sample_sid = sid
        self._sample_ts = self.samples["ts"].to_numpy()
        self._sorted_ids = order_ids

    @classmethod
    def from_series(cls, data: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> FrameSource:
        """Build from ``{'metric{a="b"}': (timestamps_ms, values)}`` (series in PromQL text form)."""
        from vfanalytics.promql.notation import parse_series_line

        label_sets = []
        sids = []
        ts_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        id_parts: list[np.ndarray] = []
        for text, (ts, vals) in data.items():
            labels, _ = parse_series_line(text)
            sid = series_id(labels)
            label_sets.append(labels)
            sids.append(sid)
            ts_parts.append(np.asarray(ts, dtype=np.int64))
            val_parts.append(np.asarray(vals, dtype=np.float64))
            id_parts.append(np.full(len(ts), sid, dtype=np.uint64))
        return cls.from_arrays(label_sets, sids, id_parts, ts_parts, val_parts)

    @classmethod
    def from_arrays(
        cls,
        label_sets: Sequence[Mapping[str, str]],
        sids: Sequence[int],
        id_parts: Sequence[np.ndarray],
        ts_parts: Sequence[np.ndarray],
        val_parts: Sequence[np.ndarray],
    ) -> FrameSource:
        """Build from label sets and per-series id/timestamp/value arrays."""
        series = pl.DataFrame(
            {
                "series_id": list(sids),
                "metric": [ls.get("__name__", "") for ls in label_sets],
                "labels": [canonical_labels(ls) for ls in label_sets],
            },
            schema=SERIES_SCHEMA,
        ).unique("series_id", keep="last", maintain_order=True)
        empty_i = np.zeros(0, dtype=np.int64)
        samples = pl.DataFrame(
            {
                "series_id": np.concatenate(list(id_parts)) if id_parts else np.zeros(0, np.uint64),
                "ts": np.concatenate(list(ts_parts)) if ts_parts else empty_i,
                "value": np.concatenate(list(val_parts)) if val_parts else np.zeros(0),
            },
            schema=SAMPLE_SCHEMA,
        )
        return cls(series, samples)

    def select(
        self, matchers: Sequence[Matcher], start: int | None = None, end: int | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Series matching every matcher and their samples in ``[start, end]``."""
        keep = self._matching(matchers)
        return self.series[keep], self._samples_of(self._ids[keep], start, end)

    def select_many(
        self, matcher_sets: Sequence[Sequence[Matcher]], start: int | None = None, end: int | None = None,
        *, max_series: int | None = None,
    ) -> tuple[list[pl.DataFrame], pl.DataFrame]:
        """:meth:`select` for several matcher sets: each one's series, and the samples of all of
        them (none with more than ``max_series`` series in all), as ``Store.select_many``."""
        keeps = [self._matching(m) for m in matcher_sets]
        ids = np.unique(np.concatenate([self._ids[k] for k in keeps])) if keeps else self._ids[:0]
        if max_series is not None and len(ids) > max_series:
            ids = ids[:0]
        return [self.series[k] for k in keeps], self._samples_of(ids, start, end)

    def _matching(self, matchers: Sequence[Matcher]) -> list[int]:
        return [
            i
            for i, labels in enumerate(self._labels)
            if all(label_matches(op, value, labels.get(name, "")) for name, op, value in matchers)
        ]

    def _samples_of(self, ids: np.ndarray, start: int | None, end: int | None) -> pl.DataFrame:
        if not len(ids):
            return pl.DataFrame(schema=SAMPLE_SCHEMA)
        wanted = np.isin(self._sample_sid, ids)
        if start is not None:
            wanted &= self._sample_ts >= start
        if end is not None:
            wanted &= self._sample_ts <= end
        return self.samples.filter(pl.Series(wanted))


class OpenMetricsSource(FrameSource):
    """The samples of an OpenMetrics / Prometheus text file, read into memory."""

    def __init__(self, path: str | Path) -> None:
        from vfanalytics.openmetrics import read_openmetrics

        series, samples = read_openmetrics(path)
        super().__init__(series, samples)
