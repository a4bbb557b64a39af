"""Vector and range selectors: read samples from a source, pick them per step.

Samples of all selected series are held in long arrays sorted by (series, ts);
a combined key ``series * span + ts`` turns every per-step lookup for every
series into one :func:`numpy.searchsorted` call, never a Python loop per step.

Window semantics follow the Prometheus version:

* 3.x — lookback ``(t - 5m, t]`` and range windows ``(t - range, t]`` (left-open);
* 2.x — both closed on the left, ``[t - 5m, t]`` and ``[t - range, t]``.

A staleness marker as the latest sample ends the series (an instant selector
returns nothing for it); range windows drop staleness markers.

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql.source import FrameSource
>>> src = FrameSource.from_series({"up": ([0, 60_000], [1.0, 0.0])})
>>> raw = load_series(src, [("__name__", "=", "up")], 0, 120_000)
>>> vec = instant_vector(raw, np.array([30_000, 90_000, 400_000]), lookback_ms=300_000, closed_left=False)
>>> vec.values.tolist(), vec.present.tolist()
([[1.0, 0.0, 0.0]], [[True, True, False]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from vfanalytics.promql.source import Matcher, Source
from vfanalytics.promql.values import Matrix, Vector
from vfanalytics.series import is_stale, parse_labels_json

__all__ = ["RawSeries", "load_series", "instant_vector", "range_matrix"]


@dataclass
class RawSeries:
    """The samples of the selected series, sorted by (series index, ts)."""

    labels: list[dict[str, str]]
    sid: np.ndarray
    ts: np.ndarray
    val: np.ndarray


def load_series(source: Source, matchers: Sequence[Matcher], start: int, end: int) -> RawSeries:
    """Series matching ``matchers`` and their samples in ``[start, end]`` (inclusive)."""
    series_df, samples_df = _select(source, matchers, start, end)
    if series_df.height == 0:
        z = np.zeros(0, dtype=np.int64)
        return RawSeries([], z, z, np.zeros(0))
    series_df = series_df.unique("series_id", maintain_order=True)
    labels = [parse_labels_json(s) for s in series_df["labels"].to_list()]
    # Prometheus' storage returns series sorted by label set; topk/bottomk ties depend on it
    by_labels = sorted(range(len(labels)), key=lambda i: sorted(labels[i].items()))
    labels = [labels[i] for i in by_labels]
    ids = series_df["series_id"].to_numpy().astype(np.uint64)[by_labels]
    s_ids = samples_df["series_id"].to_numpy()
    ts = samples_df["ts"].to_numpy()
    val = samples_df["value"].to_numpy()
    sid, ts, val = _to_series_order(ids, s_ids, ts, val)
    if len(ts) > 1:
        # one sample per timestamp and series: keep the last one written, as the TSDB does
        dup = (sid[1:] == sid[:-1]) & (ts[1:] == ts[:-1])
        if dup.any():
            keep = np.concatenate([~dup, [True]])
            sid, ts, val = sid[keep], ts[keep], val[keep]
    return RawSeries(labels, sid, ts, val)


def _select(source: Source, matchers: Sequence[Matcher], start: int, end: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``source.select``: samples may come in any block order; :func:`_to_series_order` orders them."""
    return source.select(list(matchers), start, end)


def _to_series_order(
    ids: np.ndarray, s_ids: np.ndarray, ts: np.ndarray, val: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map sample series ids to series indexes and sort by (index, ts).

    Sources return samples in runs: each write's rows grouped by series, in time order.
    The runs are put in (series, first ts) order and copied slice by slice (no index
    arrays as long as the data); only series whose runs overlap in time (staleness
    markers or late samples written apart, a timestamp written twice) are then sorted,
    each on its own and from its runs in storage order, so that of two samples at one
    timestamp the one written last comes last.
    """
    ids = ids.astype(np.uint64)
    s_ids = s_ids.astype(np.uint64, copy=False)
    ts = ts.astype(np.int64, copy=False)
    val = val.astype(np.float64, copy=False)
    if len(s_ids) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.concatenate([[0], np.flatnonzero(s_ids[1:] != s_ids[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [len(s_ids)]]))
    block_ids = s_ids[starts]
    pos = np.clip(np.searchsorted(sorted_ids, block_ids), 0, len(sorted_ids) - 1)
    known = sorted_ids[pos] == block_ids
    block_idx = np.where(known, order[pos], -1)
    runs = np.flatnonzero(known)
    run_order = runs[np.lexsort((ts[starts[runs]], block_idx[runs]))]
    lens = lengths[run_order]
    sid = np.repeat(block_idx[run_order], lens).astype(np.int64, copy=False)
    if len(run_order) == len(starts) and np.array_equal(run_order, np.arange(len(starts))):
        ts2, val2 = ts, val
    elif len(run_order) <= _MAX_SLICED_RUNS:
        cuts = [(int(a), int(a + n)) for a, n in zip(starts[run_order], lens, strict=True)]
        ts2 = np.concatenate([ts[a:b] for a, b in cuts])
        val2 = np.concatenate([val[a:b] for a, b in cuts])
    else:  # many tiny runs: one gather beats a Python loop over them
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
        gather = np.repeat(starts[run_order] - offs, lens) + np.arange(int(lens.sum()))
        ts2, val2 = ts[gather], val[gather]
    # a series whose runs overlap or touch (a timestamp written twice) is re-sorted from its runs in
    # storage order, so that a stable sort leaves the last write last
    back = np.flatnonzero(ts2[1:] <= ts2[:-1]) + 1
    overlapping = np.unique(sid[back[sid[back] == sid[back - 1]]])
    if len(overlapping):
        if ts2 is ts:
            ts2, val2 = ts.copy(), val.copy()
        bounds = np.searchsorted(sid, np.stack([overlapping, overlapping + 1]))
        stored = runs[np.argsort(block_idx[runs], kind="stable")]  # by series, storage order within
        run_bounds = np.searchsorted(block_idx[stored], np.stack([overlapping, overlapping + 1]))
        for (a, b), (ra, rb) in zip(bounds.T.tolist(), run_bounds.T.tolist(), strict=True):
            mine = stored[ra:rb]
            seg_ts = np.concatenate([ts[i : i + n] for i, n in zip(starts[mine], lengths[mine], strict=True)])
            seg_val = np.concatenate([val[i : i + n] for i, n in zip(starts[mine], lengths[mine], strict=True)])
            o = np.argsort(seg_ts, kind="stable")
            ts2[a:b] = seg_ts[o]
            val2[a:b] = seg_val[o]
    return sid, ts2, val2


#: above this many runs, rows are copied through one index array or mask instead of slice by slice
#: (here and in :mod:`vfanalytics.promql.prefetch`)
_MAX_SLICED_RUNS = 20_000


def _series_starts(sid: np.ndarray, n: int) -> np.ndarray:
    """Index of each series' first sample in the (series, ts)-sorted arrays."""
    return np.searchsorted(sid, np.arange(n), side="left")


def series_searchsorted(
    sid: np.ndarray,
    ts: np.ndarray,
    n: int,
    queries: np.ndarray,
    side: str,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """``searchsorted`` of per-step times within each series' samples: ``(n, S)`` global indexes.

    ``queries`` is ``(1, S)`` (the same times for every series) or ``(n, S)``;
    ``rows`` limits the answer to series ``first..last-1``.
    One ``searchsorted`` per series keeps the work cache-friendly; with many
    series and few steps a single combined-key search is cheaper.
    """
    first, last = rows if rows is not None else (0, n)
    bounds = np.searchsorted(sid, np.arange(n + 1), side="left")
    s = queries.shape[1]
    out = np.empty((last - first, s), dtype=np.int64)
    if rows is None and n > 256 and s < 16:
        lo_t = min(int(queries.min()), int(ts.min()) if len(ts) else 0) - 1
        hi_t = max(int(queries.max()), int(ts.max()) if len(ts) else 0) + 1
        span = hi_t - lo_t + 1
        keys = sid * span + (ts - lo_t)
        q = np.arange(n, dtype=np.int64)[:, None] * span + (queries - lo_t)
        return np.searchsorted(keys, q, side=side)  # type: ignore[call-overload]
    shared = queries.shape[0] == 1
    for r in range(first, last):
        a, b = bounds[r], bounds[r + 1]
        qr = queries[0] if shared else queries[r]
        out[r - first] = np.searchsorted(ts[a:b], qr, side=side) + a  # type: ignore[call-overload]
    return out


def instant_vector(
    raw: RawSeries, times: np.ndarray, *, lookback_ms: int, closed_left: bool
) -> Vector:
    """The latest sample of each series within the lookback window before each time.

    Parameters
    ----------
    raw:
        Loaded samples.
    times:
        Effective evaluation times (after ``@`` and ``offset``), shape ``(S,)``.
    lookback_ms:
        The lookback delta.
    closed_left:
        2.x semantics (a sample exactly ``lookback`` old still counts).
    """
    n, s = len(raw.labels), len(times)
    if n == 0:
        return Vector.empty(s)
    idx = series_searchsorted(raw.sid, raw.ts, n, times[None, :].repeat(1, axis=0), side="right") - 1
    valid_idx = idx >= _series_starts(raw.sid, n)[:, None]
    if len(raw.ts) == 0:
        present = np.zeros((n, s), dtype=bool)
        return Vector(list(raw.labels), np.zeros((n, s)), present, sample_ts=np.zeros((n, s), dtype=np.int64))
    safe = np.clip(idx, 0, len(raw.ts) - 1)
    ts = raw.ts[safe]
    vals = raw.val[safe]
    age_ok = ts >= times[None, :] - lookback_ms if closed_left else ts > times[None, :] - lookback_ms
    present = valid_idx & age_ok & ~is_stale(vals.ravel()).reshape(vals.shape)
    return Vector(list(raw.labels), np.where(present, vals, 0.0), present, sample_ts=ts)


def range_matrix(
    raw: RawSeries, end: np.ndarray, *, range_ms: int, closed_left: bool, offset_ms: int = 0
) -> Matrix:
    """A range vector over the loaded samples, staleness markers removed."""
    stale = is_stale(raw.val)
    if stale.any():
        keep = ~stale
        sid, ts, val = raw.sid[keep], raw.ts[keep], raw.val[keep]
    else:
        sid, ts, val = raw.sid, raw.ts, raw.val
    return Matrix(
        list(raw.labels),
        sid,
        ts,
        val,
        np.asarray(end, dtype=np.int64),
        int(range_ms),
        closed_left,
        offset_ms=offset_ms,
    )
