"""Functions over range vectors: ``rate``, ``increase``, ``*_over_time`` and friends.

Each function sees, for every series and step, the samples ``lo <= i < hi``
of its window (:meth:`Matrix.windows`). Functions that need only the window's
ends (``rate``, ``delta``, ``irate``, ``changes``, ``count_over_time``, ...) are
computed in O(1) per window from prefix sums; the others (``quantile``,
``stddev``, ``deriv``, ...) gather the windows into padded 2-D blocks, in
chunks that keep memory bounded.

Semantics follow Prometheus' ``promql/functions.go``: ``extrapolatedRate``
(3.x order of the zero-point and threshold checks; 2.x order for
``prometheus_version=2``), ``linearRegression``, ``quantile`` with NaN sorted
first.

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql.values import Matrix
>>> m = Matrix([{"__name__": "c"}], np.zeros(5, np.int64), np.arange(5) * 15_000, np.arange(5) * 15.0,
...            np.array([60_000]), 60_000, False)
>>> out = apply_range_function("rate", m, version=3)
>>> round(float(out.values[0, 0]), 6)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from vfanalytics.promql.kahan import kahan_mean, kahan_sum, welford_variance
from vfanalytics.promql.values import Matrix, Vector

__all__ = ["RANGE_FUNCTIONS", "apply_range_function", "quantile_sorted", "sort_nan_first"]

_CHUNK_ELEMS = 4_000_000
#: cells (series x steps) per batch of series
_BATCH_CELLS = 200_000

#: range-vector functions and whether they keep ``__name__``
RANGE_FUNCTIONS: dict[str, bool] = {
    "rate": False,
    "increase": False,
    "delta": False,
    "irate": False,
    "idelta": False,
    "deriv": False,
    "predict_linear": False,
    "changes": False,
    "resets": False,
    "avg_over_time": False,
    "min_over_time": False,
    "max_over_time": False,
    "sum_over_time": False,
    "count_over_time": False,
    "last_over_time": True,
    "first_over_time": True,
    "present_over_time": False,
    "stddev_over_time": False,
    "stdvar_over_time": False,
    "quantile_over_time": False,
    "mad_over_time": False,
}


def _prefix(x: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum: ``out[i] = x[:i].sum()``."""
    out = np.zeros(len(x) + 1, dtype=np.float64 if x.dtype.kind == "f" else np.int64)
    np.cumsum(x, out=out[1:])
    return out


def sort_nan_first(vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Sort each row ascending with NaN first (Go's ``vectorByValueHeap``) and invalid cells last."""
    cls = np.where(valid, np.where(np.isnan(vals), 0, 1), 2)
    key = np.where(valid & ~np.isnan(vals), vals, 0.0)
    o1 = np.argsort(key, axis=-1, kind="stable")
    o2 = np.argsort(np.take_along_axis(cls, o1, axis=-1), axis=-1, kind="stable")
    order = np.take_along_axis(o1, o2, axis=-1)
    return np.take_along_axis(vals, order, axis=-1)


def quantile_sorted(q: np.ndarray | float, srt: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Prometheus' ``quantile`` on rows sorted by :func:`sort_nan_first`, ``count`` valid cells each."""
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), count.shape)
    n = count.astype(np.float64)
    rank = q * (n - 1)
    lower = np.maximum(0, np.floor(np.nan_to_num(rank)))
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    li = np.clip(lower, 0, max(srt.shape[-1] - 1, 0)).astype(np.int64)
    ui = np.clip(upper, 0, max(srt.shape[-1] - 1, 0)).astype(np.int64)
    lv = np.take_along_axis(srt, li[..., None], axis=-1)[..., 0] if srt.shape[-1] else np.full(count.shape, np.nan)
    uv = np.take_along_axis(srt, ui[..., None], axis=-1)[..., 0] if srt.shape[-1] else np.full(count.shape, np.nan)
    with np.errstate(invalid="ignore"):
        out = lv * (1 - weight) + uv * weight
    out = np.where(q < 0, -np.inf, out)
    out = np.where(q > 1, np.inf, out)
    return np.where((count == 0) | np.isnan(q), np.nan, out)


def _extrapolated(
    m: Matrix, lo: np.ndarray, hi: np.ndarray, *, is_counter: bool, is_rate: bool, version: int
) -> tuple[np.ndarray, np.ndarray]:
    val, ts = m.val, m.ts
    count = hi - lo
    valid = count >= 2
    last_i = np.maximum(hi - 1, 0)
    first_i = np.minimum(lo, max(len(val) - 1, 0))
    if len(val) == 0:
        return np.zeros(lo.shape), np.zeros(lo.shape, dtype=bool)
    first_v, last_v = val[first_i], val[last_i]
    first_t, last_t = ts[first_i], ts[last_i]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = last_v - first_v
        if is_counter:
            # add the value lost at each reset one by one, in order, as Prometheus does: a
            # difference of prefix sums would differ from it in the last bits
            positions, _ = m.prefix("resets", _reset_prefix)
            if len(positions):
                lost = val[positions - 1]
                first_reset = np.searchsorted(positions, np.minimum(lo + 1, hi))
                n_resets = np.searchsorted(positions, hi) - first_reset
                for k in range(int(n_resets.max())):
                    has = n_resets > k
                    result = np.where(has, result + lost[np.minimum(first_reset + k, len(lost) - 1)], result)
        range_end = m.end[None, :] - 0  # window right edge is already t - offset
        range_start = range_end - m.range_ms
        dur_start = (first_t - range_start) / 1000.0
        dur_end = (range_end - last_t) / 1000.0
        sampled = (last_t - first_t) / 1000.0
        avg = sampled / np.maximum(count - 1, 1)
        threshold = avg * 1.1
        zero_ok = is_counter & (result > 0) & (first_v >= 0)
        dur_zero = sampled * (first_v / np.where(result == 0, 1, result))
        if version >= 3:
            dur_start = np.where(dur_start >= threshold, avg / 2, dur_start)
            dur_start = np.where(zero_ok & (dur_zero < dur_start), dur_zero, dur_start)
            dur_end = np.where(dur_end >= threshold, avg / 2, dur_end)
            interval = sampled + dur_start + dur_end
        else:
            dur_start = np.where(zero_ok & (dur_zero < dur_start), dur_zero, dur_start)
            interval = sampled
            interval = interval + np.where(dur_start < threshold, dur_start, avg / 2)
            interval = interval + np.where(dur_end < threshold, dur_end, avg / 2)
        factor = interval / sampled
        if is_rate:
            factor = factor / (m.range_ms / 1000.0)
        out = result * factor
    return out, valid


def _reset_prefix(m: Matrix) -> tuple[np.ndarray, np.ndarray]:
    """Where counters reset and the running total of what was lost there, kept sparse.

    A reset at sample ``i`` (``val[i] < val[i-1]`` in one series) adds
    ``val[i-1]``; the sum over samples ``a <= i < b`` is
    ``cumulative[searchsorted(positions, b)] - cumulative[searchsorted(positions, a)]``.
    """
    val = m.val
    if len(val) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(1)
    hit = np.flatnonzero((val[1:] < val[:-1]) & (m.sid[1:] == m.sid[:-1]))
    return hit + 1, np.concatenate([[0.0], np.cumsum(val[hit])])


def _instant_delta(m: Matrix, lo: np.ndarray, hi: np.ndarray, *, is_rate: bool) -> tuple[np.ndarray, np.ndarray]:
    val, ts = m.val, m.ts
    if len(val) == 0:
        return np.zeros(lo.shape), np.zeros(lo.shape, dtype=bool)
    last_i = np.maximum(hi - 1, 0)
    prev_i = np.maximum(hi - 2, 0)
    lv, pv = val[last_i], val[prev_i]
    dt = ts[last_i] - ts[prev_i]
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.where(is_rate & (lv < pv), lv, lv - pv) if is_rate else lv - pv
        if is_rate:
            res = res / (dt / 1000.0)
    return res, ((hi - lo) >= 2) & (dt != 0)


def _pair_count(
    m: Matrix, lo: np.ndarray, hi: np.ndarray, name: str, pred: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    def make(mat: Matrix) -> np.ndarray:
        hit = np.zeros(len(mat.val), dtype=np.int64)
        if len(mat.val) > 1:
            same = mat.sid[1:] == mat.sid[:-1]
            hit[1:] = (same & pred(mat.val[1:], mat.val[:-1])).astype(np.int64)
        return _prefix(hit)

    pre = m.prefix(name, make)
    return (pre[hi] - pre[np.minimum(lo + 1, hi)]).astype(np.float64)


def _gathered(
    m: Matrix,
    lo: np.ndarray,
    hi: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    min_count: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn(vals, ts, valid, count, end)`` to padded blocks of windows (row per window)."""
    shape = lo.shape
    lo_f, hi_f = lo.ravel(), hi.ravel()
    count = hi_f - lo_f
    ends = np.broadcast_to(m.end[None, :], shape).ravel()
    out = np.full(len(lo_f), np.nan)
    ok = count >= min_count
    cells = np.flatnonzero(ok)
    if len(cells):
        width = int(count[cells].max())
        chunk = max(1, _CHUNK_ELEMS // max(width, 1))
        ar = np.arange(width)
        for a in range(0, len(cells), chunk):
            c = cells[a : a + chunk]
            idx = lo_f[c][:, None] + ar[None, :]
            valid = ar[None, :] < count[c][:, None]
            idx = np.where(valid, idx, 0)
            vals = np.where(valid, m.val[idx], np.nan)
            tss = np.where(valid, m.ts[idx], 0)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                out[c] = fn(vals, tss, valid, count[c], ends[c])
    return out.reshape(shape), ok.reshape(shape)


def _linreg(vals: np.ndarray, tss: np.ndarray, valid: np.ndarray, count: np.ndarray, intercept_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = count.astype(np.float64)
    x = np.where(valid, (tss - intercept_t[:, None]) / 1e3, 0.0)
    y = np.where(valid, vals, 0.0)
    sum_x = x.sum(axis=1)
    sum_y = y.sum(axis=1)
    sum_xy = (x * y).sum(axis=1)
    sum_x2 = (x * x).sum(axis=1)
    cov = sum_xy - sum_x * sum_y / n
    var = sum_x2 - sum_x * sum_x / n
    slope = cov / var
    intercept = sum_y / n - slope * sum_x / n
    first = vals[:, 0]
    const = np.all(~valid | (vals == first[:, None]), axis=1)
    slope = np.where(const, np.where(np.isinf(first), np.nan, 0.0), slope)
    intercept = np.where(const, np.where(np.isinf(first), np.nan, first), intercept)
    return slope, intercept


def _columns(vals: np.ndarray, valid: np.ndarray, count: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The window blocks as a :mod:`~vfanalytics.promql.kahan` stream, one column at a time."""
    for w in range(vals.shape[1]):
        sel = np.flatnonzero(count > w)
        yield sel, vals[sel, w : w + 1], valid[sel, w : w + 1]


def _min_max(vals: np.ndarray, valid: np.ndarray, is_max: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        filled = np.where(valid, vals, np.nan)
        red = np.fmax.reduce(filled, axis=1) if is_max else np.fmin.reduce(filled, axis=1)
    return red


def apply_range_function(
    name: str, m: Matrix, *, version: int = 3, params: tuple[np.ndarray, ...] = ()
) -> Vector:
    """Evaluate a range-vector function; ``params`` are scalar arguments per step.

    ``quantile_over_time(q, m)`` takes ``params=(q,)``; ``predict_linear(m, t)``
    takes ``params=(t,)``.
    """
    n, n_steps = m.n_series, len(m.end)
    values = np.zeros((n, n_steps))
    present = np.zeros((n, n_steps), dtype=bool)
    # series in batches: bounded memory, and arrays small enough to be reused by the allocator
    batch = max(1, _BATCH_CELLS // max(n_steps, 1))
    for first in range(0, n, batch):
        last = min(n, first + batch)
        res, ok = _range_function_rows(name, m, first, last, version, params)
        values[first:last] = np.where(ok, res, 0.0)
        present[first:last] = ok
    keep_name = RANGE_FUNCTIONS[name]
    drop = m.drop_name.copy() if keep_name else np.ones(n, dtype=bool)
    return Vector(list(m.labels), values, present, drop | m.drop_name).compact()


def _range_function_rows(
    name: str, m: Matrix, first: int, last: int, version: int, params: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = m.windows(first, last)
    count = hi - lo
    val = m.val
    if name in ("rate", "increase", "delta"):
        res, ok = _extrapolated(
            m, lo, hi, is_counter=name != "delta", is_rate=name == "rate", version=version
        )
    elif name in ("irate", "idelta"):
        res, ok = _instant_delta(m, lo, hi, is_rate=name == "irate")
    elif name == "changes":
        res = _pair_count(m, lo, hi, name, lambda cur, prev: ~((cur == prev) | (np.isnan(cur) & np.isnan(prev))))
        ok = count >= 1
    elif name == "resets":
        res = _pair_count(m, lo, hi, name, lambda cur, prev: cur < prev)
        ok = count >= 1
    elif name == "count_over_time":
        res, ok = count.astype(np.float64), count >= 1
    elif name == "present_over_time":
        res, ok = np.ones(lo.shape), count >= 1
    elif name in ("sum_over_time", "avg_over_time"):
        reducer = kahan_sum if name == "sum_over_time" else kahan_mean
        res, ok = _gathered(m, lo, hi, lambda v, t, vd, c, e: reducer(_columns(v, vd, c), (len(c), 1))[0][:, 0])
    elif name == "last_over_time":
        res = val[np.maximum(hi - 1, 0)] if len(val) else np.zeros(lo.shape)
        ok = count >= 1
    elif name == "first_over_time":
        res = val[np.minimum(lo, max(len(val) - 1, 0))] if len(val) else np.zeros(lo.shape)
        ok = count >= 1
    elif name in ("min_over_time", "max_over_time"):
        res, ok = _gathered(m, lo, hi, lambda v, t, vd, c, e: _min_max(v, vd, name == "max_over_time"))
    elif name in ("stddev_over_time", "stdvar_over_time"):
        res, ok = _gathered(
            m, lo, hi, lambda v, t, vd, c, e: welford_variance(_columns(v, vd, c), (len(c), 1), kahan=True)[0][:, 0]
        )
        if name == "stddev_over_time":
            res = np.sqrt(res)
    elif name == "quantile_over_time":
        q_all = np.broadcast_to(params[0][None, :], lo.shape).ravel()
        qs = {"i": 0}

        def qfn(v: np.ndarray, t: np.ndarray, vd: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
            srt = sort_nan_first(v, vd)
            out = quantile_sorted(q_cells[qs["i"] : qs["i"] + len(c)], srt, c)
            qs["i"] += len(c)
            return out

        q_cells = q_all[(count >= 1).ravel()]
        res, ok = _gathered(m, lo, hi, qfn)
    elif name == "mad_over_time":

        def mad(v: np.ndarray, t: np.ndarray, vd: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
            med = quantile_sorted(0.5, sort_nan_first(v, vd), c)
            dev = np.abs(v - med[:, None])
            out = quantile_sorted(0.5, sort_nan_first(dev, vd), c)
            # a NaN sample makes the result NaN
            return np.where((np.isnan(v) & vd).any(axis=1), np.nan, out)

        res, ok = _gathered(m, lo, hi, mad)
    elif name == "deriv":
        res, ok = _gathered(m, lo, hi, lambda v, t, vd, c, e: _linreg(v, t, vd, c, t[:, 0])[0], min_count=2)
    elif name == "predict_linear":
        dur_all = np.broadcast_to(params[0][None, :], lo.shape).ravel()
        cells = (count >= 2).ravel()
        dur_cells = dur_all[cells]
        eval_ts = m.eval_ts if m.eval_ts is not None else m.end + m.offset_ms
        ev_cells = np.broadcast_to(eval_ts[None, :], lo.shape).ravel()[cells]
        pos = {"i": 0}

        def pl(v: np.ndarray, t: np.ndarray, vd: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
            slope, icpt = _linreg(v, t, vd, c, ev_cells[pos['i'] : pos['i'] + len(c)])
            d = dur_cells[pos["i"] : pos["i"] + len(c)]
            pos["i"] += len(c)
            return icpt + slope * d

        res, ok = _gathered(m, lo, hi, pl, min_count=2)
    else:  # pragma: no cover - the engine checks names first
        raise KeyError(name)
    return np.asarray(res, dtype=np.float64).reshape(lo.shape), np.asarray(ok, dtype=bool).reshape(lo.shape)
