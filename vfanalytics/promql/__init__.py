"""The offline PromQL evaluator, held to Prometheus' own semantics.

Public API
----------
``query_range(expr, start, end, step, source=..., prometheus_version=3, lookback=None)``
    Range query; returns a Polars frame ``series_id (u64), labels (canonical
    JSON str), ts (i64 ms), value (f64)``, one row per series and step with a
    sample. Ints are milliseconds; strings go through
    :func:`vfanalytics.timeutil.parse_time` / ``parse_duration``.
``query(expr, time, source=..., ...)``
    Instant query; the same frame shape (a scalar result is one row with labels ``{}``).
``evaluate_range`` / ``evaluate_instant``
    The same, returning a :class:`QueryResult` that keeps the result type;
    :func:`to_prometheus_json` renders it as Prometheus' HTTP API answer.
``OfflineEvaluator(source, prometheus_version=3)``
    The design's Evaluator protocol: ``.query_range(expr, start, end, step)``
    and ``.query(expr, time)`` returning the frames above.
``Source``
    Protocol: ``select(matchers, start_ms, end_ms) -> (series_df, samples_df)``
    with matchers ``(name, op, value)``; :class:`vfanalytics.store.Store`
    satisfies it. :class:`FrameSource` holds in-memory frames,
    :class:`OpenMetricsSource` reads an OpenMetrics file.
``expand_values`` / ``parse_series_line`` / ``series_samples``
    The promqltest / promtool series-value notation (``1+2x3 _ stale``).
``run_file``
    The promqltest conformance runner.

Semantics: ``prometheus_version=3`` (default) uses left-open range and lookback
windows; ``2`` closes them on the left as Prometheus 2.x does. Unsupported
constructs raise :class:`~vfanalytics.exceptions.UnsupportedQuery` naming the
construct; syntax errors raise :class:`~vfanalytics.exceptions.PromQLSyntaxError`
with the position.

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql import FrameSource, query
>>> src = FrameSource.from_series({'http_requests_total{job="api"}': (np.arange(0, 300_001, 15_000), np.arange(21) * 15.0)})
>>> query("rate(http_requests_total[5m])", 300_000, source=src)["value"].round(6).to_list()
[1.0]
"""

from __future__ import annotations

from vfanalytics.promql.api import (
    OfflineEvaluator,
    QueryResult,
    evaluate_instant,
    evaluate_range,
    query,
    query_range,
    to_prometheus_json,
)
from vfanalytics.promql.conformance import run_file, run_files
from vfanalytics.promql.engine import EvalOptions, Evaluator
from vfanalytics.promql.notation import expand_values, parse_series_line, series_samples
from vfanalytics.promql.source import FrameSource, OpenMetricsSource, Source

__all__ = [
    "query_range",
    "query",
    "evaluate_range",
    "evaluate_instant",
    "QueryResult",
    "OfflineEvaluator",
    "to_prometheus_json",
    "Source",
    "FrameSource",
    "OpenMetricsSource",
    "EvalOptions",
    "Evaluator",
    "expand_values",
    "parse_series_line",
    "series_samples",
    "run_file",
    "run_files",
]
