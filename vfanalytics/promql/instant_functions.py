"""Functions over instant vectors and scalars: math, clamping, dates, labels, sorting.

Each function maps a :class:`Vector` (all steps at once) to a :class:`Vector`;
the element-wise ones are a single NumPy expression over the ``(N, S)`` value
array. Semantics follow Prometheus' ``promql/functions.go`` (``round`` rounds
half up, ``sgn(NaN)`` is NaN, dates use UTC, ``label_replace`` uses Go's
``$1``/``${name}`` expansion with fully anchored regexes).

Example
-------
>>> import numpy as np
>>> v = Vector([{"__name__": "x"}], np.array([[-1.5, 2.5]]), np.ones((1, 2), bool))
>>> apply_math("round", v, ()).values.tolist()
[[-1.0, 3.0]]
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from vfanalytics.exceptions import QueryError
from vfanalytics.promql.source import compile_regex
from vfanalytics.promql.values import Vector, merge_duplicates

__all__ = [
    "MATH_FUNCTIONS",
    "DATE_FUNCTIONS",
    "apply_math",
    "apply_date",
    "label_replace",
    "label_join",
    "sort_vector",
    "is_valid_label_name",
]


def _sgn(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, -1.0, np.where(x > 0, 1.0, x))


MATH_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sgn": _sgn,
    "acos": np.arccos,
    "acosh": np.arccosh,
    "asin": np.arcsin,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "sin": np.sin,
    "sinh": np.sinh,
    "tan": np.tan,
    "tanh": np.tanh,
    "deg": lambda x: x * (180.0 / np.pi),
    "rad": lambda x: x * (np.pi / 180.0),
}


def _with_values(v: Vector, values: np.ndarray, *, drop_name: bool = True) -> Vector:
    drop = np.ones(v.n_series, dtype=bool) if drop_name else v.drop_name.copy()
    return Vector(list(v.labels), np.where(v.present, values, 0.0), v.present.copy(), drop | v.drop_name)


def apply_math(name: str, v: Vector, params: tuple[np.ndarray, ...]) -> Vector:
    """Element-wise math: :data:`MATH_FUNCTIONS`, ``round``, ``clamp``, ``clamp_min``, ``clamp_max``.

    ``params`` are the scalar arguments per step (shape ``(S,)``).
    """
    x = v.values
    with np.errstate(all="ignore"):
        if name in MATH_FUNCTIONS:
            return _with_values(v, MATH_FUNCTIONS[name](x))
        if name == "round":
            to_nearest = params[0][None, :] if params else 1.0
            inv = 1.0 / to_nearest
            return _with_values(v, np.floor(x * inv + 0.5) / inv)
        if name == "clamp_min":
            return _with_values(v, _go_max(params[0][None, :], x))
        if name == "clamp_max":
            return _with_values(v, _go_min(params[0][None, :], x))
        if name == "clamp":
            lo, hi = params[0][None, :], params[1][None, :]
            out = _with_values(v, _go_max(lo, _go_min(hi, x)))
            # max < min gives an empty result at that step
            out.present &= ~(hi < lo)
            return out
    raise KeyError(name)


def _go_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)


def _go_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(a, b)


DATE_FUNCTIONS = (
    "minute",
    "hour",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "days_in_month",
    "month",
    "year",
)


def date_part(name: str, seconds: np.ndarray) -> np.ndarray:
    """A calendar field (UTC) of Unix times in seconds, as Go's ``time.Unix(int64(f), 0).UTC()``."""
    nan = ~np.isfinite(seconds)
    secs = np.where(nan, 0, np.trunc(np.where(nan, 0, seconds))).astype(np.int64)
    dt = secs.astype("datetime64[s]")
    days = np.floor_divide(secs, 86400)
    if name == "minute":
        out = np.mod(np.floor_divide(secs, 60), 60)
    elif name == "hour":
        out = np.mod(np.floor_divide(secs, 3600), 24)
    elif name == "day_of_week":
        out = np.mod(days + 4, 7)
    else:
        month_start = dt.astype("datetime64[M]")
        if name == "month":
            out = month_start.astype(np.int64) % 12 + 1
        elif name == "year":
            out = dt.astype("datetime64[Y]").astype(np.int64) + 1970
        elif name == "day_of_month":
            out = (dt.astype("datetime64[D]") - month_start.astype("datetime64[D]")).astype(np.int64) + 1
        elif name == "day_of_year":
            year_start = dt.astype("datetime64[Y]").astype("datetime64[D]")
            out = (dt.astype("datetime64[D]") - year_start).astype(np.int64) + 1
        elif name == "days_in_month":
            nxt = (month_start + 1).astype("datetime64[D]")
            out = (nxt - month_start.astype("datetime64[D]")).astype(np.int64)
        else:
            raise KeyError(name)
    return np.where(nan, np.nan, out.astype(np.float64))


def apply_date(name: str, v: Vector) -> Vector:
    """A date function over a vector of Unix times in seconds."""
    return _with_values(v, date_part(name, v.values))


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def is_valid_label_name(name: str) -> bool:
    """Prometheus 3 accepts any non-empty UTF-8 label name."""
    return bool(name) and "\x00" not in name


_EXPAND_RE = re.compile(r"\$(\$|\{([^}]*)\}|([a-zA-Z0-9_]+))")


def _go_expand(template: str, m: re.Match[str]) -> str:
    """Go's ``regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""

    def sub(x: re.Match[str]) -> str:
        if x.group(1) == "$":
            return "$"
        name = x.group(2) if x.group(2) is not None else x.group(3)
        if name is None or name == "":
            return ""
        if name.isdigit():
            i = int(name)
            if i <= (m.re.groups or 0):
                return m.group(i) or ""
            return ""
        try:
            return m.group(name) or ""
        except (IndexError, error_type):
            return ""

    error_type = re.error
    return _EXPAND_RE.sub(sub, template)


def _with_label(v: Vector, dst: str, values: list[str | None]) -> Vector:
    """``v`` with label ``dst`` set per series (an empty value removes it; ``None`` keeps the series as is)."""
    labels = []
    for ls, value in zip(v.labels, values, strict=True):
        if value is None:
            labels.append(ls)
            continue
        new = dict(ls)
        if value:
            new[dst] = value
        else:
            new.pop(dst, None)
        labels.append(new)
    drop = v.drop_name.copy()
    if dst == "__name__":
        drop[:] = False
    return merge_duplicates(Vector(labels, v.values.copy(), v.present.copy(), drop))


def label_replace(v: Vector, dst: str, replacement: str, src: str, regex: str) -> Vector:
    """``label_replace(v, dst, replacement, src, regex)``."""
    pattern = compile_regex(regex)
    if not is_valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_replace(): {dst}")
    matches = (pattern.fullmatch(ls.get(src, "")) for ls in v.labels)
    return _with_label(v, dst, [None if m is None else _go_expand(replacement, m) for m in matches])


def label_join(v: Vector, dst: str, sep: str, srcs: list[str]) -> Vector:
    """``label_join(v, dst, separator, src...)``."""
    if not is_valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_join(): {dst}")
    return _with_label(v, dst, [sep.join(ls.get(s, "") for s in srcs) for ls in v.labels])


def sort_vector(v: Vector, *, descending: bool) -> Vector:
    """Order series by their value at the (single) step; NaN last, as Prometheus 3 does."""
    if v.n_steps != 1 or v.n_series < 2:
        return v
    vals = v.values[:, 0]
    nan = np.isnan(vals)
    key = np.where(nan, 0.0, -vals if descending else vals)
    order = np.lexsort((key, nan))
    return v.take(order)
