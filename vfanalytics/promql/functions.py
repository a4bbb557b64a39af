"""The function table: which PromQL functions the evaluator supports and how each is called.

Range-vector functions live in :mod:`~vfanalytics.promql.range_functions`,
element-wise and label functions in :mod:`~vfanalytics.promql.instant_functions`,
``histogram_quantile`` in :mod:`~vfanalytics.promql.histogram`. Any other
function (native-histogram functions, ``info``, experimental ones such as
``limitk`` or ``sort_by_label``) raises :class:`UnsupportedQuery` naming it.

Example
-------
>>> sorted(SUPPORTED_FUNCTIONS)[:4]
['abs', 'absent', 'absent_over_time', 'acos']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vfanalytics.exceptions import QueryError, UnsupportedQuery
from vfanalytics.promql import instant_functions as inf
from vfanalytics.promql.histogram import histogram_quantile
from vfanalytics.promql.range_functions import RANGE_FUNCTIONS, apply_range_function
from vfanalytics.promql.values import Scalar, Value, Vector

if TYPE_CHECKING:
    from vfanalytics.promql.engine import Evaluator

__all__ = ["SUPPORTED_FUNCTIONS", "call_function"]

_OTHER = {
    "absent",
    "absent_over_time",
    "time",
    "pi",
    "vector",
    "scalar",
    "timestamp",
    "label_replace",
    "label_join",
    "sort",
    "sort_desc",
    "histogram_quantile",
    "round",
    "clamp",
    "clamp_min",
    "clamp_max",
}

SUPPORTED_FUNCTIONS: frozenset[str] = frozenset(
    set(RANGE_FUNCTIONS) | set(inf.MATH_FUNCTIONS) | set(inf.DATE_FUNCTIONS) | _OTHER
)


def _single(labels: dict[str, str], values: np.ndarray, present: np.ndarray) -> Vector:
    return Vector([labels], np.where(present, values, 0.0)[None, :], present[None, :].copy())


def call_function(ev: Evaluator, name: str, args: list[Any], times: np.ndarray) -> Value:
    """Evaluate ``name(args...)`` at ``times``."""
    if name not in SUPPORTED_FUNCTIONS:
        raise UnsupportedQuery(f"function {name}()")
    n = len(times)
    version = ev.opts.prometheus_version
    if name in RANGE_FUNCTIONS:
        params: tuple[np.ndarray, ...] = ()
        if name == "quantile_over_time":
            params = (ev._scalar_arg(args[0], times),)
            m = ev.matrix(args[1], times)
        elif name == "predict_linear":
            m = ev.matrix(args[0], times)
            params = (ev._scalar_arg(args[1], times),)
        else:
            m = ev.matrix(args[0], times)
        return apply_range_function(name, m, version=version, params=params)
    if name in inf.MATH_FUNCTIONS:
        return inf.apply_math(name, ev._vector_arg(args[0], times), ())
    if name in ("round", "clamp_min", "clamp_max", "clamp"):
        v = ev._vector_arg(args[0], times)
        ps = tuple(ev._scalar_arg(a, times) for a in args[1:])
        return inf.apply_math(name, v, ps).compact()
    if name in inf.DATE_FUNCTIONS:
        if not args:
            return inf.apply_date(name, _single({}, times / 1000.0, np.ones(n, dtype=bool)))
        return inf.apply_date(name, ev._vector_arg(args[0], times))
    if name == "time":
        return Scalar(times / 1000.0)
    if name == "pi":
        return Scalar(np.full(n, np.pi))
    if name == "vector":
        return _single({}, ev._scalar_arg(args[0], times), np.ones(n, dtype=bool))
    if name == "scalar":
        v = ev._vector_arg(args[0], times)
        cnt = v.present.sum(axis=0)
        val = np.where(v.present, v.values, 0.0).sum(axis=0) if v.n_series else np.zeros(n)
        return Scalar(np.where(cnt == 1, val, np.nan))
    if name == "timestamp":
        v = ev._vector_arg(args[0], times)
        ts = v.sample_ts if v.sample_ts is not None else np.broadcast_to(times[None, :], v.values.shape)
        return Vector(list(v.labels), np.where(v.present, ts / 1000.0, 0.0), v.present.copy(),
                      np.ones(v.n_series, dtype=bool))
    if name == "absent":
        v = ev._vector_arg(args[0], times)
        missing = np.asarray(~v.present.any(axis=0)) if v.n_series else np.ones(n, dtype=bool)
        return _single(ev.names_for_absent(args[0]), np.ones(n), missing).compact()
    if name == "absent_over_time":
        m = ev.matrix(args[0], times)
        lo, hi = m.windows()
        missing = np.asarray(~((hi - lo) > 0).any(axis=0)) if m.n_series else np.ones(n, dtype=bool)
        return _single(ev.names_for_absent(args[0]), np.ones(n), missing).compact()
    if name == "label_replace":
        v = ev._vector_arg(args[0], times)
        dst, repl, src, regex = (ev._string_arg(a, times) for a in args[1:5])
        ev.check_label_name(dst, "destination label name")
        return inf.label_replace(v, dst, repl, src, regex)
    if name == "label_join":
        v = ev._vector_arg(args[0], times)
        dst, sep = ev._string_arg(args[1], times), ev._string_arg(args[2], times)
        ev.check_label_name(dst, "destination label name")
        srcs = [ev._string_arg(a, times) for a in args[3:]]
        return inf.label_join(v, dst, sep, srcs)
    if name in ("sort", "sort_desc"):
        return inf.sort_vector(ev._vector_arg(args[0], times), descending=name == "sort_desc")
    if name == "histogram_quantile":
        q = ev._scalar_arg(args[0], times)
        v = ev._vector_arg(args[1], times)
        return histogram_quantile(q, v, version=version)
    raise QueryError(f"function {name}() is not implemented")  # pragma: no cover
