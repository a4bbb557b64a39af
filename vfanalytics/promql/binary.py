"""Binary operators: arithmetic, comparisons (with and without ``bool``),
``and``/``or``/``unless``, vector matching with ``on``/``ignoring`` and
``group_left``/``group_right``, scalar–vector and scalar–scalar operations.

Vector matching pairs each series of the "many" side with the series of the
"one" side that share its matching signature, then evaluates every pair over
all steps at once. The errors Prometheus raises per step (duplicate series on
the "one" side, one-to-one matches that are really many-to-one) are raised
when the duplicates overlap in time.

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql.values import Scalar
>>> v = Vector([{"__name__": "x", "a": "1"}], np.array([[1.0, 5.0]]), np.ones((1, 2), bool))
>>> out = binary_op(">", v, Scalar(np.array([2.0, 2.0])), return_bool=False)
>>> out.present.tolist(), out.labels
([[False, True]], [{'__name__': 'x', 'a': '1'}])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vfanalytics.exceptions import QueryError
from vfanalytics.promql.values import Scalar, Vector, label_key, merge_duplicates

__all__ = ["Matching", "binary_op", "ARITHMETIC", "COMPARISON", "SET_OPS", "elem_op"]

ARITHMETIC = ("+", "-", "*", "/", "%", "^", "atan2")
COMPARISON = ("==", "!=", ">", "<", ">=", "<=")
SET_OPS = ("and", "or", "unless")


@dataclass
class Matching:
    """Vector matching options of one binary expression."""

    card: str = "one-to-one"  # one-to-one | many-to-one | one-to-many | many-to-many
    on: bool = False
    labels: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)


def elem_op(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The float result of ``a op b`` (comparisons give booleans)."""
    return np.asarray(_elem_op(op, a, b))


def _elem_op(op: str, a: np.ndarray, b: np.ndarray) -> Any:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.true_divide(a, b)
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return np.power(a, b)
        if op == "atan2":
            return np.arctan2(a, b)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == ">":
            return a > b
        if op == "<":
            return a < b
        if op == ">=":
            return a >= b
        if op == "<=":
            return a <= b
    raise QueryError(f"operator {op!r} not allowed here")


def binary_op(
    op: str,
    lhs: Vector | Scalar,
    rhs: Vector | Scalar,
    *,
    return_bool: bool = False,
    matching: Matching | None = None,
    version: int = 3,
) -> Vector | Scalar:
    """Evaluate ``lhs op rhs`` over all steps.

    ``version=2`` keeps ``__name__`` on ``atan2`` results, as Prometheus 2.x did.
    """
    matching = matching or Matching()
    keep_name = op == "atan2" and version < 3
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        res = elem_op(op, lhs.values, rhs.values)
        return Scalar(res.astype(np.float64))
    if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.values, swap=False, return_bool=return_bool, keep_name=keep_name)
    if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
        return _vector_scalar(op, rhs, lhs.values, swap=True, return_bool=return_bool, keep_name=keep_name)
    assert isinstance(lhs, Vector) and isinstance(rhs, Vector)
    if op in SET_OPS:
        return _set_op(op, lhs, rhs, matching)
    return _vector_vector(op, lhs, rhs, matching, return_bool, keep_name)


def _vector_scalar(op: str, v: Vector, s: np.ndarray, *, swap: bool, return_bool: bool, keep_name: bool) -> Vector:
    a, b = (s[None, :], v.values) if swap else (v.values, s[None, :])
    res = elem_op(op, a, b)
    present = v.present.copy()
    drop = v.drop_name.copy()
    if op in COMPARISON:
        if return_bool:
            values = res.astype(np.float64)
            drop[:] = True
        else:
            values = v.values.copy()
            present &= res
    else:
        values = res
        drop[:] = not keep_name
    return Vector(list(v.labels), np.where(present, values, 0.0), present, drop).compact()


def _signature(ls: dict[str, str], matching: Matching) -> str:
    if matching.on:
        return label_key({k: ls.get(k, "") for k in matching.labels})
    skip = set(matching.labels) | {"__name__"}
    return label_key({k: v for k, v in ls.items() if k not in skip})


def _sig_groups(v: Vector, matching: Matching) -> tuple[list[str], dict[str, list[int]]]:
    sigs = [_signature(ls, matching) for ls in v.labels]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sigs):
        groups.setdefault(s, []).append(i)
    return sigs, groups


def _any_present(v: Vector, rows: list[int]) -> np.ndarray:
    return np.asarray(v.present[rows].any(axis=0))


def _set_op(op: str, lhs: Vector, rhs: Vector, matching: Matching) -> Vector:
    s = lhs.n_steps
    if op == "or":
        if lhs.n_series == 0:
            return rhs
        l_sigs, l_groups = _sig_groups(lhs, matching)
        r_sigs, _ = _sig_groups(rhs, matching)
        l_has = {g: _any_present(lhs, rows) for g, rows in l_groups.items()}
        r_pres = rhs.present.copy()
        for i, sig in enumerate(r_sigs):
            if sig in l_has:
                r_pres[i] &= ~l_has[sig]
        # Prometheus evaluates per step: an lhs series only blocks rhs where lhs has a sample
        any_l = lhs.present.any(axis=0)
        del any_l
        right = Vector(list(rhs.labels), np.where(r_pres, rhs.values, 0.0), r_pres, rhs.drop_name.copy())
        return Vector(
            list(lhs.labels) + right.labels,
            np.concatenate([lhs.values, right.values]),
            np.concatenate([lhs.present, right.present]),
            np.concatenate([lhs.drop_name, right.drop_name]),
        ).compact()
    if lhs.n_series == 0:
        return Vector.empty(s)
    r_sigs, r_groups = _sig_groups(rhs, matching)
    r_has = {g: _any_present(rhs, rows) for g, rows in r_groups.items()}
    l_sigs, _ = _sig_groups(lhs, matching)
    none = np.zeros(s, dtype=bool)
    present = lhs.present.copy()
    for i, sig in enumerate(l_sigs):
        hit = r_has.get(sig, none)
        present[i] &= hit if op == "and" else ~hit
    return Vector(list(lhs.labels), np.where(present, lhs.values, 0.0), present, lhs.drop_name.copy()).compact()


def _result_labels(
    many: dict[str, str], one: dict[str, str], op: str, matching: Matching, return_bool: bool
) -> dict[str, str]:
    out = dict(many)
    if matching.card == "one-to-one":
        if matching.on:
            keep = set(matching.labels)
            out = {k: v for k, v in out.items() if k in keep}
        else:
            for k in matching.labels:
                out.pop(k, None)
    for ln in matching.include:
        out.pop(ln, None)
        if one.get(ln, ""):
            out[ln] = one[ln]
    return out


def _vector_vector(op: str, lhs: Vector, rhs: Vector, matching: Matching, return_bool: bool, keep_name: bool) -> Vector:
    s = lhs.n_steps
    swap = matching.card == "one-to-many"
    many, one = (rhs, lhs) if swap else (lhs, rhs)
    if many.n_series == 0 or one.n_series == 0:
        return Vector.empty(s)
    m_sigs, _ = _sig_groups(many, matching)
    _, o_groups = _sig_groups(one, matching)
    any_many = many.present.any(axis=0)
    for rows in o_groups.values():
        if len(rows) > 1 and ((one.present[rows].sum(axis=0) > 1) & any_many).any():
            side = "left" if swap else "right"
            raise QueryError(
                f"found duplicate series for the match group on the {side} hand-side of the operation; "
                "many-to-many matching not allowed: matching labels must be unique on one side"
            )
    pairs_m: list[int] = []
    pairs_o: list[int] = []
    for i, sig in enumerate(m_sigs):
        for j in o_groups.get(sig, ()):
            pairs_m.append(i)
            pairs_o.append(j)
    if not pairs_m:
        return Vector.empty(s)
    pm = np.asarray(pairs_m)
    po = np.asarray(pairs_o)
    mv, ov = many.values[pm], one.values[po]
    present = many.present[pm] & one.present[po]
    fl, fr = (ov, mv) if swap else (mv, ov)
    res = elem_op(op, fl, fr)
    matched = present.copy()
    drop = np.zeros(len(pm), dtype=bool)
    if op in COMPARISON:
        if return_bool:
            values = res.astype(np.float64)
            drop[:] = True
        else:
            values = fl
            present &= res
    else:
        values = res
        drop[:] = not keep_name
    drop |= many.drop_name[pm]
    labels = [_result_labels(many.labels[i], one.labels[j], op, matching, return_bool) for i, j in zip(pm, po, strict=True)]
    if matching.card == "one-to-one":
        # two "many" series matching one series at the same step: needs group_left/right
        counts: dict[str, np.ndarray] = {}
        for k, i in enumerate(pm):
            sig = m_sigs[i]
            # counted before comparison filtering, as Prometheus does
            counts[sig] = counts.get(sig, np.zeros(s, dtype=np.int64)) + matched[k]
        if any((c > 1).any() for c in counts.values()):
            raise QueryError("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
    out = Vector(labels, np.where(present, values, 0.0), present, drop).compact()
    try:
        return merge_duplicates(out)
    except QueryError:
        raise QueryError("multiple matches for labels: grouping labels must ensure unique matches") from None
