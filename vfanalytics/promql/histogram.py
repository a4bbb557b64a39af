"""``histogram_quantile`` over classic (``le``-labelled) buckets.

A port of Prometheus' ``BucketQuantile`` (``promql/quantile.go``): buckets are
sorted by upper bound, buckets with equal bounds coalesced, counts forced
monotonic (3.x also snaps differences within 1e-12 relative, 2.x does not),
then the quantile is interpolated linearly inside its bucket. Every step of a
group is computed at once; the only Python loop is over the (few) buckets.

Example
-------
>>> import numpy as np
>>> ub = np.array([0.1, 1.0, np.inf])
>>> counts = np.array([[10.0], [90.0], [100.0]])
>>> bucket_quantile(np.array([0.5]), ub, counts, np.ones((3, 1), bool)).round(4).tolist()
[0.55]
"""

from __future__ import annotations

import numpy as np

from vfanalytics.promql.values import Vector, label_key

__all__ = ["bucket_quantile", "histogram_quantile", "almost_equal"]

_MIN_NORMAL = np.float64(2.2250738585072014e-308)
_SMALL_DELTA = 1e-12


def almost_equal(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """Prometheus' ``util/almost.Equal``, element-wise."""
    with np.errstate(all="ignore"):
        both_nan = np.isnan(a) & np.isnan(b)
        abs_sum = np.abs(a) + np.abs(b)
        diff = np.abs(a - b)
        tiny = (a == 0) | (b == 0) | (abs_sum < _MIN_NORMAL)
        rel = diff / np.minimum(abs_sum, np.finfo(np.float64).max)
        return both_nan | (a == b) | np.where(tiny, diff < eps * _MIN_NORMAL, rel < eps)


def bucket_quantile(
    q: np.ndarray, upper: np.ndarray, counts: np.ndarray, present: np.ndarray, *, version: int = 3
) -> np.ndarray:
    """The q-quantile per step of one group of buckets.

    Parameters
    ----------
    q:
        Quantile per step, ``(S,)``.
    upper:
        Upper bounds ``(B,)``, one per bucket series.
    counts, present:
        Cumulative counts and presence, ``(B, S)``.
    """
    order = np.argsort(upper, kind="stable")
    upper, counts, present = upper[order], counts[order], present[order]
    # coalesce buckets with the same bound (e.g. le="1" and le="1.0")
    uniq, start = np.unique(upper, return_index=True)
    if len(uniq) < len(upper):
        counts = np.add.reduceat(np.where(present, counts, 0.0), start, axis=0)
        present = np.logical_or.reduceat(present, start, axis=0)
        upper = uniq
    n_b, n_s = counts.shape
    # move the buckets present at each step to the front, keeping their order
    pos = np.argsort(~present, axis=0, kind="stable")
    c = np.take_along_axis(np.where(present, counts, np.nan), pos, axis=0)
    ub = upper[pos]
    nb = present.sum(axis=0)
    cols = np.arange(n_s)
    last = np.maximum(nb - 1, 0)
    has_inf = (nb > 0) & np.isinf(ub[last, cols]) & (ub[last, cols] > 0)
    # force monotonic counts, bucket by bucket (all steps at once)
    if n_b:
        prev = c[0].copy()
        for i in range(1, n_b):
            live = i < nb
            curr = c[i]
            if version >= 3:
                same = curr == prev
                small = ~same & almost_equal(prev, curr, _SMALL_DELTA)
                lower = ~same & ~small & (curr < prev)
                fix = live & (small | lower)
                c[i] = np.where(fix, prev, curr)
                prev = np.where(live & ~same & ~small & ~lower, curr, prev)
            else:
                lower = curr < prev
                c[i] = np.where(live & lower, prev, curr)
                prev = np.where(live & ~lower, curr, prev)
    obs = c[last, cols]
    with np.errstate(all="ignore"):
        rank = q * obs
        # first bucket among the first nb-1 whose count reaches the rank
        idx = np.arange(n_b)[:, None]
        reach = (c >= rank[None, :]) & (idx < (nb - 1)[None, :])
        b = np.where(reach.any(axis=0), np.argmax(reach, axis=0), nb - 1)
        b_prev = np.maximum(b - 1, 0)
        end = ub[np.clip(b, 0, max(n_b - 1, 0)), cols]
        start = np.where(b > 0, ub[b_prev, cols], 0.0)
        count = c[np.clip(b, 0, max(n_b - 1, 0)), cols]
        prev_count = np.where(b > 0, c[b_prev, cols], 0.0)
        res = start + (end - start) * ((rank - prev_count) / (count - prev_count))
        res = np.where(b == nb - 1, ub[np.maximum(nb - 2, 0), cols], res)
        res = np.where((b == 0) & (ub[0, cols] <= 0), ub[0, cols], res)
        res = np.where((nb < 2) | (obs == 0) | ~has_inf, np.nan, res)
        res = np.where(q < 0, -np.inf, res)
        res = np.where(q > 1, np.inf, res)
        res = np.where(np.isnan(q), np.nan, res)
    return res


def _parse_le(text: str) -> float | None:
    t = text.strip()
    low = t.lower()
    try:
        if low in ("+inf", "inf", "+infinity", "infinity"):
            return float("inf")
        if low in ("-inf", "-infinity"):
            return float("-inf")
        return float(t)
    except ValueError:
        return None


def histogram_quantile(q: np.ndarray, v: Vector, *, version: int = 3) -> Vector:
    """``histogram_quantile(q, v)`` for classic buckets; output labels lose ``le`` (and the name)."""
    groups: dict[str, tuple[dict[str, str], list[int], list[float]]] = {}
    for i, ls in enumerate(v.labels):
        le = _parse_le(ls.get("le", "")) if "le" in ls else None
        if le is None:
            continue
        g = {k: val for k, val in ls.items() if k != "le"}
        key = label_key(g)
        if key not in groups:
            groups[key] = (g, [], [])
        groups[key][1].append(i)
        groups[key][2].append(le)
    labels = []
    values = []
    present = []
    for g, rows, les in groups.values():
        pres = v.present[rows]
        res = bucket_quantile(q, np.asarray(les), v.values[rows], pres, version=version)
        labels.append(g)
        values.append(res)
        present.append(pres.any(axis=0))
    if not labels:
        return Vector.empty(v.n_steps)
    p = np.array(present, dtype=bool)
    return Vector(labels, np.where(p, np.array(values), 0.0), p, np.ones(len(labels), dtype=bool)).compact()
