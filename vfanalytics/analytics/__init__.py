"""Analyses behind the report notebooks: Claude tokens, session durations, build times.

Modules
-------
:mod:`~vfanalytics.analytics.counters`
    Exact, reset-aware counter increases from stored samples (staleness ends a counter).
:mod:`~vfanalytics.analytics.tokens`
    Totals and cost by user / project / operation / tier, concentration, daily trend
    with a month-end forecast, anomalous days, metrics-vs-logs reconciliation.
:mod:`~vfanalytics.analytics.sessions`
    Quantiles from histogram buckets with Prometheus' interpolation and the bucket
    bounds as uncertainty, by tier and over time, share over ``containerTimeout``.
:mod:`~vfanalytics.analytics.builds`
    p50/p95 by tech stack and complexity over time, change-point regressions, the
    slowest combinations.

Every function takes plain Polars frames or a store-like object (``sql()`` for logs,
``select()`` for samples), and times as int64 ms.

Example
-------
>>> from vfanalytics.analytics import sessions
>>> import numpy as np
>>> sessions.histogram_quantile(0.9, np.array([1.0, np.inf]), np.array([10.0, 10.0]))["value"]
0.9
"""

from __future__ import annotations

from vfanalytics.analytics import builds, counters, sessions, tokens

__all__ = ["builds", "counters", "sessions", "tokens"]
