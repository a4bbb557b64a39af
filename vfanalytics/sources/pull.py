"""Pull from a source into the store: incremental, chunk by chunk, each chunk atomic.

A pull is identified by ``(source URL, kind, query, step)``. The ``pulls`` table
records which closed intervals of it are stored; a new pull asks only for the
parts not yet covered, and each finished chunk is written together with its
``pulls`` row in one transaction. So a pull that is killed (even with SIGKILL)
and run again ends with exactly what an uninterrupted pull stores, and a re-run
over a range already pulled sends no request.

Kinds and what their intervals mean:

``series``       raw samples of a selector; ``[lo, hi]`` in ms (step 0)
``query_range``  evaluation times ``lo, lo+step, ..., hi`` of an expression; the grid
                 is aligned to multiples of ``step`` so that pulls over different ranges
                 share points
``loki``         log lines with ``lo*1e6 <= ts_ns < (hi+1)*1e6`` (ms-aligned windows)
``loki_metric``  a LogQL metric query, like ``query_range``

Range-query results are stored like a recording rule: under ``--as NAME`` as
series named ``NAME``, otherwise with their own labels plus ``__query__`` (the
expression), so that they never mix with the raw series of the same name.

Example
-------
>>> merge_intervals([(0, 10), (11, 20), (40, 50)], gap=1)
[(0, 20), (40, 50)]
>>> uncovered(0, 100, [(0, 20), (40, 50)], gap=1)
[(21, 39), (51, 100)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import polars as pl

from vfanalytics.exceptions import UsageError
from vfanalytics.series import labels_frame
from vfanalytics.sources.prometheus import Chunk, PrometheusSource
from vfanalytics.store import Store

if TYPE_CHECKING:  # for the annotation only: Prometheus pulls never load the Loki module
    from vfanalytics.sources.loki import LokiSource

__all__ = [
    "PullReport",
    "pull_series",
    "pull_query_range",
    "pull_loki",
    "merge_intervals",
    "uncovered",
    "relabel_results",
]

Progress = Callable[[float], None]


@dataclass
class PullReport:
    """What a pull did: windows asked for, chunks committed, rows written, requests sent."""

    kind: str
    query: str
    source: str
    windows: list[tuple[int, int]] = field(default_factory=list)
    chunks: int = 0
    series: int = 0
    rows: int = 0
    requests: int = 0

    @property
    def up_to_date(self) -> bool:
        """True when everything asked for was already stored."""
        return not self.windows


def merge_intervals(intervals: Iterable[tuple[int, int]], *, gap: int) -> list[tuple[int, int]]:
    """Merge closed intervals that overlap or are ``gap`` apart (adjacent grid points)."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def uncovered(start: int, end: int, covered: Iterable[tuple[int, int]], *, gap: int) -> list[tuple[int, int]]:
    """Closed sub-intervals of ``[start, end]`` (on a grid of ``gap``) not in ``covered``."""
    out = []
    cur = start
    for s, e in merge_intervals(covered, gap=gap):
        if e < cur:
            continue
        if s > end:
            break
        if s > cur:
            out.append((cur, min(s - gap, end)))
        cur = max(cur, e + gap)
        if cur > end:
            break
    if cur <= end:
        out.append((cur, end))
    return out


def relabel_results(
    chunk: Chunk, *, query: str, name: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give range-query result series their stored identity (``__query__`` or ``--as`` name)."""
    old_ids = chunk.series["series_id"].to_list()
    new_labels = []
    for text in chunk.series["labels"].to_list():
        labels = dict(orjson.loads(text))
        if name is not None:
            labels["__name__"] = name
        else:
            labels["__query__"] = query
        new_labels.append(labels)
    series = labels_frame(new_labels)
    new_ids = series["series_id"].to_list()
    mapping = pl.DataFrame({"series_id": old_ids, "new_id": new_ids}, schema={"series_id": pl.UInt64, "new_id": pl.UInt64})
    samples = chunk.samples.join(mapping, on="series_id", how="inner").select(
        pl.col("new_id").alias("series_id"), "ts", "value"
    )
    if name is not None and series["series_id"].n_unique() < series.height:
        raise UsageError(f"--as {name}: the query returns series that differ only in __name__; keep their names")
    return series, samples


def _commit(
    store: Store, report: PullReport, chunk_series: pl.DataFrame, samples: pl.DataFrame, lo: int, hi: int, step: int
) -> None:
    with store.transaction():
        store.insert_series(chunk_series)
        rows = store.insert_samples(samples, dedupe=True)
        store.record_pull(
            source=report.source, kind=report.kind, query=report.query, step_ms=step, start_ms=lo, end_ms=hi, rows=rows
        )
    report.chunks += 1
    report.rows += rows
    report.series += chunk_series.height


def _todo(store: Store, report: PullReport, start: int, end: int, step: int, gap: int) -> list[tuple[int, int]]:
    covered = store.covered(source=report.source, kind=report.kind, query=report.query, step_ms=step)
    return uncovered(start, end, covered, gap=gap)


def pull_series(
    store: Store,
    source: PrometheusSource,
    match: str,
    start: int,
    end: int,
    *,
    progress: Progress | None = None,
) -> PullReport:
    """Pull the raw samples of the series matching ``match`` with ``start <= ts <= end`` (ms)."""
    if end < start:
        raise UsageError("--end is before --start")
    report = PullReport("series", match, source.url)
    sent = source.http.requests_sent
    report.windows = _todo(store, report, start, end, 0, 1)
    for chunk in source.iter_raw_samples(match, start, end, windows=report.windows):
        _commit(store, report, chunk.series, chunk.samples, chunk.lo + 1, chunk.hi, 0)
        if progress is not None:
            progress(chunk.hi - chunk.lo)
    report.requests = source.http.requests_sent - sent
    return report


def aligned_range(start: int, end: int, step: int) -> tuple[int, int]:
    """``[start, end]`` shrunk to the multiples of ``step`` inside it."""
    if step <= 0:
        raise UsageError("--step must be positive")
    first = -(-start // step) * step
    last = (end // step) * step
    if last < first:
        raise UsageError("the range holds no multiple of --step; widen it or use a smaller step")
    return first, last


def pull_query_range(
    store: Store,
    source: PrometheusSource,
    expr: str,
    start: int,
    end: int,
    step: int,
    *,
    name: str | None = None,
    progress: Progress | None = None,
) -> PullReport:
    """Pull ``expr`` evaluated every ``step`` (on multiples of ``step``) within ``[start, end]``."""
    first, last = aligned_range(start, end, step)
    report = PullReport("query_range", expr if name is None else f"{expr} as {name}", source.url)
    sent = source.http.requests_sent
    report.windows = _todo(store, report, first, last, step, step)
    for chunk in source.iter_query_range(expr, first, last, step, windows=report.windows):
        series, samples = relabel_results(chunk, query=expr, name=name)
        _commit(store, report, series, samples, chunk.lo, chunk.hi, step)
        if progress is not None:
            progress(chunk.hi - chunk.lo + step)
    report.requests = source.http.requests_sent - sent
    return report


def pull_loki(
    store: Store,
    source: LokiSource,
    logql: str,
    start: int,
    end: int,
    *,
    step: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> PullReport:
    """Pull a LogQL query over ``[start, end]`` (ms).

    A log query stores lines in ``logs`` (windows of whole milliseconds, each
    ``[lo, hi]`` meaning ``lo*1e6 <= ts_ns <= hi*1e6 + 999999``); a metric query
    (``step`` given) stores series and samples like :func:`pull_query_range`.
    """
    from vfanalytics.logs import parse_log_lines

    sent = source.http.requests_sent
    if step is not None:
        first, last = aligned_range(start, end, step)
        report = PullReport("loki_metric", logql if name is None else f"{logql} as {name}", source.url)
        report.windows = _todo(store, report, first, last, step, step)
        for chunk in source.iter_metric_range(logql, first, last, step, windows=report.windows):
            series, samples = relabel_results(chunk, query=logql, name=name)
            _commit(store, report, series, samples, chunk.lo, chunk.hi, step)
            if progress is not None:
                progress(chunk.hi - chunk.lo + step)
        report.requests = source.http.requests_sent - sent
        return report
    if end < start:
        raise UsageError("--end is before --start")
    report = PullReport("loki", logql, source.url)
    report.windows = _todo(store, report, start, end, 0, 1)
    for window in source.iter_windows(logql, report.windows):
        frame = parse_log_lines(window.ts_ns, window.streams, window.lines)
        with store.transaction():
            rows = store.insert_logs(frame, dedupe=True)
            store.record_pull(
                source=report.source, kind="loki", query=logql, step_ms=0, start_ms=window.lo_ms, end_ms=window.hi_ms,
                rows=rows,
            )
        report.chunks += 1
        report.rows += rows
        if progress is not None:
            progress(window.hi_ms - window.lo_ms + 1)
    report.requests = source.http.requests_sent - sent
    return report

