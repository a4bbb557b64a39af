"""Read once, evaluate many: the samples every selector of a set of expressions needs, in one read.

A rule replay evaluates a dozen expressions over one range. Against the store each
selector would be its own scan of the samples table, and on a large store the scan,
not the rows it returns, is what a selective read costs (a 100 M-sample store: about
0.2 s a scan). :class:`PrefetchedSource` reads the union of the selectors' series once
(``select_many``) and answers the evaluator's ``select`` calls from memory. A call it
cannot answer (a selector it was not given, a window it did not read, an ``@``
modifier) goes to the base source, so results never depend on it.

Example
-------
>>> from vfanalytics.promql.source import FrameSource
>>> src = FrameSource.from_series({'up{job="a"}': ([0, 60_000], [1.0, 0.0]), "x": ([0], [5.0])})
>>> pre = PrefetchedSource.for_expressions(src, ["up == 0", "rate(x[5m])"], 0, 60_000)
>>> pre.prefetched_series
2
>>> pre.select([("__name__", "=", "up")], 0, 60_000)[1]["value"].to_list()
[1.0, 0.0]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import promql_parser as pp

from vfanalytics.promql.engine import Evaluator, _ms, parse, shared_metric_names
from vfanalytics.promql.source import SAMPLE_SCHEMA, Matcher, Source
from vfanalytics.promql.vector_selectors import _MAX_SLICED_RUNS

__all__ = ["PrefetchedSource", "selector_reads"]

#: above this many series a replay reads rule by rule (holding them all would cost too much memory)
MAX_PREFETCH_SERIES = 20_000


def selector_reads(expr: str | Any, lookback_ms: int) -> list[tuple[tuple[Matcher, ...], int, int]]:
    """The reads evaluating ``expr`` at a time ``t`` makes: ``(matchers, back_ms, ahead_ms)``,
    each covering ``[t - back_ms, t + ahead_ms]``, keyed as the evaluator asks.

    Selectors under an ``@`` modifier read a fixed time, not one relative to ``t``: left out.
    """
    node = parse(expr) if isinstance(expr, str) else expr
    shared = shared_metric_names(node)
    out: list[tuple[tuple[Matcher, ...], int, int]] = []

    def key(vs: Any) -> tuple[Matcher, ...]:
        ms = Evaluator.matchers(vs)
        # the evaluator reads a metric several selectors use once, by name only
        return tuple(ms[:1]) if vs.name in shared and len(ms) > 1 else tuple(ms)

    def visit(n: Any, back: int, ahead: int) -> None:
        if isinstance(n, pp.VectorSelector):
            if n.at is None:
                off = _ms(n.offset)
                out.append((key(n), back + off + lookback_ms, ahead - off))
        elif isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            if vs.at is None:
                off = _ms(vs.offset)
                out.append((key(vs), back + off + _ms(n.range), ahead - off))
        elif isinstance(n, pp.SubqueryExpr):
            if n.at is None:
                off = _ms(n.offset)
                # the inner steps fall in (t - off - range, t - off]; one step of slack for the grid
                step = _ms(n.step) if n.step is not None and _ms(n.step) > 0 else 60_000
                visit(n.expr, back + off + _ms(n.range) + step, ahead - off)
        elif isinstance(n, pp.ParenExpr | pp.UnaryExpr):
            visit(n.expr, back, ahead)
        elif isinstance(n, pp.Call):
            for a in n.args:
                visit(a, back, ahead)
        elif isinstance(n, pp.AggregateExpr):
            visit(n.expr, back, ahead)
            if n.param is not None:
                visit(n.param, back, ahead)
        elif isinstance(n, pp.BinaryExpr):
            visit(n.lhs, back, ahead)
            visit(n.rhs, back, ahead)

    visit(node, 0, 0)
    return out


class PrefetchedSource:
    """A source that holds, from one read of ``base``, the samples of given selectors over one window.

    Parameters
    ----------
    base:
        The source to read from, and to pass every other call to. It needs ``select_many``
        (:class:`vfanalytics.store.Store`, :class:`~vfanalytics.promql.source.FrameSource`);
        without it nothing is held.
    matcher_sets:
        The selectors to hold, keyed exactly as the evaluator asks for them.
    start, end:
        The window held (inclusive, ms); calls for a window outside it go to ``base``.
    max_series:
        Hold nothing when the selectors match more series than this (memory).
    """

    def __init__(
        self, base: Source, matcher_sets: Sequence[Sequence[Matcher]], start: int, end: int, *,
        max_series: int = MAX_PREFETCH_SERIES,
    ) -> None:
        self.base = base
        # rules evaluated side by side read through one source; a store's connection takes one query at a time
        self._lock = threading.Lock()
        self.start = int(start)
        self.end = int(end)
        keys = list(dict.fromkeys(tuple(tuple(m) for m in ms) for ms in matcher_sets))
        many = getattr(base, "select_many", None)
        series_list: list[pl.DataFrame] = []
        samples = pl.DataFrame(schema=SAMPLE_SCHEMA)
        if many is None:
            keys = []  # no way to read them at once: every call goes to the base
        elif keys:
            series_list, samples = many(keys, self.start, self.end, max_series=max_series)
            if samples.is_empty() and pl.concat([s["series_id"] for s in series_list]).n_unique() > max_series:
                keys, series_list = [], []  # too many to hold: every call goes to the base
        self._series = dict(zip(keys, series_list, strict=True))
        self._sid = samples["series_id"].to_numpy().astype(np.uint64, copy=False)
        self._ts = samples["ts"].to_numpy().astype(np.int64, copy=False)
        self._val = samples["value"].to_numpy().astype(np.float64, copy=False)
        # the rows come in runs of one series in time order (a write's rows are grouped by series);
        # a step back in time starts a new run, so every run can be cut by binary search
        self._starts = np.flatnonzero(np.r_[True, (self._sid[1:] != self._sid[:-1]) | (self._ts[1:] < self._ts[:-1])]) \
            if len(self._sid) else np.zeros(0, dtype=np.int64)
        self._ends = np.r_[self._starts[1:], len(self._sid)].astype(np.int64)
        self._run_ids = self._sid[self._starts]

    @classmethod
    def for_expressions(
        cls, base: Source, exprs: Sequence[str], start: int, end: int, *, lookback_ms: int = 300_000
    ) -> PrefetchedSource:
        """Hold what evaluating ``exprs`` at times in ``[start, end]`` reads."""
        reads = [r for e in exprs for r in selector_reads(e, lookback_ms)]
        if not reads:
            return cls(base, [], start, end)
        back = max(r[1] for r in reads)
        ahead = max(0, max(r[2] for r in reads))
        return cls(base, [r[0] for r in reads], start - back, end + ahead)

    @property
    def prefetched_series(self) -> int:
        """How many distinct series are held."""
        return len(np.unique(self._run_ids))

    def select(
        self, matchers: Sequence[Matcher], start: int | None = None, end: int | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The :class:`~vfanalytics.promql.source.Source` call: from memory when held, else from ``base``."""
        series = self._series.get(tuple(tuple(m) for m in matchers))
        if series is None or start is None or end is None or start < self.start or end > self.end:
            with self._lock:
                return self.base.select(matchers, start, end)
        ids = series["series_id"].to_numpy().astype(np.uint64, copy=False)
        picked = np.flatnonzero(np.isin(self._run_ids, ids))
        if len(picked) <= _MAX_SLICED_RUNS:
            # each run is in time order: cut it to the window, copy only what is asked for
            cuts = []
            for a, b in zip(self._starts[picked].tolist(), self._ends[picked].tolist(), strict=True):
                run_ts = self._ts[a:b]
                lo = a if run_ts[0] >= start else a + int(np.searchsorted(run_ts, start, side="left"))
                hi = b if run_ts[-1] <= end else a + int(np.searchsorted(run_ts, end, side="right"))
                if hi > lo:
                    cuts.append((lo, hi))
            sid, ts, val = (np.concatenate([arr[a:b] for a, b in cuts]) if cuts else arr[:0]
                            for arr in (self._sid, self._ts, self._val))
        else:
            # many tiny runs: one mask beats a Python loop over them
            rows = np.isin(self._sid, ids) & (self._ts >= start) & (self._ts <= end)
            sid, ts, val = self._sid[rows], self._ts[rows], self._val[rows]
        return series, pl.DataFrame({"series_id": sid, "ts": ts, "value": val}, schema=SAMPLE_SCHEMA)
