"""Aggregation operators: ``sum``, ``avg``, ``min``, ``max``, ``count``, ``group``,
``stddev``, ``stdvar``, ``quantile``, ``topk``, ``bottomk``, ``count_values``,
with ``by`` / ``without``.

Series are sorted by group once; each operator is then one ``reduceat`` over
the ``(N, S)`` arrays (all steps at once). ``quantile``, ``topk`` and
``bottomk`` sort each group's ``(n, S)`` block along the series axis.

Example
-------
>>> import numpy as np
>>> v = Vector([{"__name__": "x", "a": "1"}, {"__name__": "x", "a": "2"}],
...            np.array([[1.0], [3.0]]), np.ones((2, 1), bool))
>>> aggregate("sum", v, by=[], without=False).values.tolist()
[[4.0]]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vfanalytics.exceptions import QueryError
from vfanalytics.promql.kahan import incremental_mean, kahan_mean, kahan_sum, plain_sum, welford_variance
from vfanalytics.promql.range_functions import quantile_sorted, sort_nan_first
from vfanalytics.promql.values import Vector, label_key

__all__ = ["AGGREGATIONS", "aggregate", "format_go_float"]

AGGREGATIONS = (
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "quantile",
    "topk",
    "bottomk",
    "count_values",
)


def format_go_float(f: float) -> str:
    """Go's ``strconv.FormatFloat(f, 'f', -1, 64)`` (the form Prometheus prints values in)."""
    if np.isnan(f):
        return "NaN"
    if np.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return np.format_float_positional(f, trim="-", unique=True)


def _group_labels(ls: dict[str, str], names: list[str], without: bool) -> dict[str, str]:
    if without:
        drop = set(names) | {"__name__"}
        return {k: v for k, v in ls.items() if k not in drop}
    return {k: ls[k] for k in names if ls.get(k, "") != ""}


def _groups(v: Vector, names: list[str], without: bool) -> tuple[np.ndarray, list[dict[str, str]]]:
    index: dict[str, int] = {}
    labels: list[dict[str, str]] = []
    gidx = np.empty(v.n_series, dtype=np.int64)
    for i, ls in enumerate(v.labels):
        g = _group_labels(ls, names, without)
        key = label_key(g)
        if key not in index:
            index[key] = len(labels)
            labels.append(g)
        gidx[i] = index[key]
    return gidx, labels


def aggregate(
    op: str,
    v: Vector,
    *,
    by: list[str],
    without: bool,
    param: np.ndarray | str | None = None,
    version: int = 3,
) -> Vector:
    """Apply an aggregation operator.

    Parameters
    ----------
    op:
        One of :data:`AGGREGATIONS`.
    v:
        The input vector.
    by:
        The ``by`` labels, or the ``without`` labels when ``without`` is true.
    param:
        ``quantile``/``topk``/``bottomk``: the parameter per step; ``count_values``: the label name.
    version:
        Prometheus major version to follow: ``topk``/``bottomk`` tie-breaking, and
        compensated (3.x) or plain (2.x) ``sum``/``avg`` arithmetic.
    """
    s = v.n_steps
    if op in ("topk", "bottomk") and isinstance(param, np.ndarray) and np.isnan(param).any():
        raise QueryError("Parameter value is NaN")
    if v.n_series == 0:
        return Vector.empty(s)
    if op in ("topk", "bottomk"):
        assert isinstance(param, np.ndarray)
        return _topk(v, by, without, param, top=op == "topk", version=version)
    if op == "count_values":
        assert isinstance(param, str)
        return _count_values(v, by, without, param)
    gidx, glabels = _groups(v, by, without)
    order = np.argsort(gidx, kind="stable")
    sg = gidx[order]
    starts = np.flatnonzero(np.concatenate([[True], sg[1:] != sg[:-1]]))
    vals = v.values[order]
    pres = v.present[order]
    count = np.add.reduceat(pres.astype(np.int64), starts, axis=0)
    ok = count > 0
    with np.errstate(all="ignore"):
        if op in ("sum", "avg", "stddev", "stdvar"):
            sizes = np.diff(np.concatenate([starts, [len(sg)]]))

            def stream() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
                for k in range(int(sizes.max())):
                    sel = np.flatnonzero(sizes > k)
                    rows = starts[sel] + k
                    yield sel, vals[rows], pres[rows]

            shape = (len(starts), s)
            if op == "sum":
                res, _ = (kahan_sum if version >= 3 else plain_sum)(stream(), shape)
            elif op == "avg":
                res, _ = (kahan_mean if version >= 3 else incremental_mean)(stream(), shape)
            else:
                var, _ = welford_variance(stream(), shape, kahan=False)
                res = np.sqrt(var) if op == "stddev" else var
        elif op in ("min", "max"):
            filled = np.where(pres, vals, np.nan)
            res = (np.fmax if op == "max" else np.fmin).reduceat(filled, starts, axis=0)
        elif op == "count":
            res = count.astype(np.float64)
        elif op == "group":
            res = np.ones(count.shape)
        elif op == "quantile":
            assert isinstance(param, np.ndarray)
            bounds = list(starts) + [len(sg)]
            res = np.empty(count.shape)
            for g in range(len(starts)):
                block = vals[bounds[g] : bounds[g + 1]].T
                valid = pres[bounds[g] : bounds[g + 1]].T
                srt = sort_nan_first(np.where(valid, block, np.nan), valid)
                res[g] = quantile_sorted(param, srt, valid.sum(axis=1))
        else:
            raise QueryError(f"unknown aggregation {op}")
    labels = [glabels[sg[st]] for st in starts]
    # delayed name removal: a group whose members drop the name drops it too
    drop = np.logical_or.reduceat(v.drop_name[order], starts)
    return Vector(labels, np.where(ok, res, 0.0), ok, drop)


def _heap_select(vals: np.ndarray, pres: np.ndarray, k: np.ndarray, *, top: bool, version: int = 3) -> np.ndarray:
    """Which rows Prometheus' k-heap keeps at each step (its tie-breaking included).

    A replay of ``container/heap`` as ``aggregationK`` drives it: the first k
    samples (in input order) are pushed; a later one that beats the root
    replaces it (3.x: overwrite the root and fix the heap; 2.x: pop the root,
    then push). The loop runs over the group's rows and the heap's levels;
    every step is handled at once.
    """
    n, s = vals.shape
    cap = int(min(max(int(k.max()), 0), n))
    selected = np.zeros((n, s), dtype=bool)
    if cap == 0:
        return selected
    if (k >= n).all():
        return pres.copy()
    cols = np.arange(s)
    hv = np.full((cap, s), np.nan)
    hi = np.zeros((cap, s), dtype=np.int64)
    size = np.zeros(s, dtype=np.int64)

    def less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.isnan(a) | ((a < b) if top else (a > b))

    def swap(i: np.ndarray, j: np.ndarray, m: np.ndarray) -> None:
        c = cols[m]
        ii, jj = i[m], j[m]
        hv[ii, c], hv[jj, c] = hv[jj, c], hv[ii, c].copy()
        hi[ii, c], hi[jj, c] = hi[jj, c], hi[ii, c].copy()

    def up(j: np.ndarray, active: np.ndarray) -> None:
        active = active.copy()
        while active.any():
            parent = np.maximum((j - 1) // 2, 0)
            active &= (j > 0) & less(hv[j, cols], hv[parent, cols])
            swap(parent, j, active)
            j = np.where(active, parent, j)

    def down(bound: np.ndarray, active: np.ndarray) -> None:
        i = np.zeros(s, dtype=np.int64)
        active = active.copy()
        while active.any():
            j1 = 2 * i + 1
            active &= j1 < bound
            j2 = j1 + 1
            j1c, j2c = np.minimum(j1, cap - 1), np.minimum(j2, cap - 1)
            use2 = active & (j2 < bound) & less(hv[j2c, cols], hv[j1c, cols])
            j = np.where(use2, j2c, j1c)
            active &= less(hv[j, cols], hv[i, cols])
            swap(i, j, active)
            i = np.where(active, j, i)

    def put(slot: np.ndarray, m: np.ndarray, x: np.ndarray, r: int) -> None:
        hv[slot[m], cols[m]] = x[m]
        hi[slot[m], cols[m]] = r

    for r in range(n):
        x, p = vals[r], pres[r]
        push = p & (size < k) & (size < cap)
        if push.any():
            j = np.where(push, size, 0)
            put(j, push, x, r)
            up(j, push)
            size += push
        with np.errstate(invalid="ignore"):
            root = hv[0]
            better = (root < x) if top else (root > x)
        if version >= 3:
            better |= np.isnan(root) & ~np.isnan(x)
        else:
            better |= np.isnan(root)
        repl = p & ~push & (size >= np.minimum(k, cap)) & (k > 0) & better
        if not repl.any():
            continue
        zero = np.zeros(s, dtype=np.int64)
        if version >= 3 or cap == 1:
            put(zero, repl, x, r)
            down(size, repl)
        else:
            last = size - 1
            swap(zero, last, repl)
            down(last, repl)
            put(last, repl, x, r)
            up(last, repl)
    for slot in range(cap):
        live = slot < size
        selected[hi[slot, live], cols[live]] = True
    return selected & pres


def _topk(v: Vector, by: list[str], without: bool, k: np.ndarray, *, top: bool, version: int) -> Vector:
    kk = np.where(k >= 9.2e18, 2**62, np.trunc(np.clip(k, -(2**62), 2**62))).astype(np.int64)
    gidx, _ = _groups(v, by, without)
    selected = np.zeros(v.present.shape, dtype=bool)
    for g in np.unique(gidx):
        rows = np.flatnonzero(gidx == g)
        selected[rows] = _heap_select(v.values[rows], v.present[rows], kk, top=top, version=version)
    out = Vector(list(v.labels), v.values.copy(), selected, v.drop_name.copy()).compact()
    if out.n_steps == 1 and out.n_series > 1:
        # instant results come out group by group, best first
        kept = np.flatnonzero(selected.any(axis=1))
        vals = v.values[kept, 0]
        nan = np.isnan(vals)
        key = np.where(nan, 0.0, -vals if top else vals)
        out = out.take(np.lexsort((key, nan, gidx[kept])))
    return out


def _count_values(v: Vector, by: list[str], without: bool, label: str) -> Vector:
    if not label or "\x00" in label:
        raise QueryError(f"invalid label name {label!r}")
    gidx, glabels = _groups(v, by, without)
    rows, cols = np.nonzero(v.present)
    if len(rows) == 0:
        return Vector.empty(v.n_steps)
    vals = v.values[rows, cols]
    uniq, inv = np.unique(vals, return_inverse=True)
    strs = np.array([format_go_float(float(x)) for x in uniq], dtype=object)
    # different floats can print alike (-0 and 0): merge by printed form
    names, name_idx = np.unique(strs.astype(str), return_inverse=True)
    vi = name_idx[inv]
    n_names = len(names)
    key = gidx[rows] * n_names + vi
    counts = np.zeros((int(key.max()) + 1, v.n_steps))
    np.add.at(counts, (key, cols), 1.0)
    out_rows = np.flatnonzero(counts.any(axis=1))
    labels = []
    for kidx in out_rows:
        g, n = divmod(int(kidx), n_names)
        ls = dict(glabels[g])
        ls[label] = str(names[n])
        labels.append(ls)
    c = counts[out_rows]
    gdrop = np.zeros(len(glabels), dtype=bool)
    np.logical_or.at(gdrop, gidx, v.drop_name)
    return Vector(labels, c, c > 0, gdrop[out_rows // n_names])
