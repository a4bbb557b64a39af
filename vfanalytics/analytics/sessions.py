"""Session durations from the histogram buckets, with Prometheus' interpolation and its uncertainty.

``vaporform_user_session_duration_seconds_bucket{user_tier, le}`` (buckets 60, 300,
900, 1800, 3600, 7200, 14400 s) is the metric's view; ``session_end`` log lines carry
the exact ``sessionDuration`` (seconds) of each session.

* :func:`bucket_counts` turns the bucket counters into the exact number of sessions
  per bucket over a window (reset-aware, :mod:`vfanalytics.analytics.counters`).
* :func:`histogram_quantile` is Prometheus' ``histogram_quantile`` over those
  counts (promql/quantile.go ``BucketQuantile``: linear interpolation inside the
  bucket holding the rank, the lowest bucket starting at 0, the ``+Inf`` bucket
  answering with the highest finite bound, non-monotonic counts forced monotonic),
  plus the bucket's bounds: the true quantile lies somewhere between them, which is
  the uncertainty a histogram cannot remove.
* :func:`quantiles_over_time` asks the PromQL engine (:mod:`vfanalytics.promql`) for
  ``histogram_quantile(q, sum by (le, ...) (increase(...[window])))``: what a
  Grafana panel on Prometheus would show.
* :func:`share_over_timeout`: sessions that outlast ``containerTimeout`` (30 min in
  the seed's ConfigurationManager, 1 800 000 ms): exact from the logs; from the
  histogram an interval, a point when the timeout is a bucket bound.

Example
-------
>>> import numpy as np
>>> q = histogram_quantile(0.5, np.array([60, 300, 900, np.inf]), np.array([0.0, 10.0, 30.0, 40.0]))
>>> q["value"], q["lower"], q["upper"]
(600.0, 300.0, 900.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from vfanalytics.analytics.counters import counter_increases

__all__ = [
    "SESSION_METRIC",
    "CONTAINER_TIMEOUT_S",
    "bucket_counts",
    "histogram_quantile",
    "quantile_table",
    "quantiles_over_time",
    "load_sessions",
    "share_over_timeout",
]

SESSION_METRIC = "vaporform_user_session_duration_seconds_bucket"
#: ``containerTimeout`` of the seed's ConfigurationManager defaults (1 800 000 ms), in seconds
CONTAINER_TIMEOUT_S = 1800.0
#: promql/quantile.go ``smallDeltaTolerance``
_SMALL_DELTA_TOLERANCE = 1e-12


def bucket_counts(source: Any, start_ms: int, end_ms: int, by: Sequence[str] = (), *,
                  metric: str = SESSION_METRIC, born_inside: bool = True) -> pl.DataFrame:
    """Exact observations per cumulative bucket over the window: ``by..., le (f64), count``."""
    inc = counter_increases(source, metric, start_ms, end_ms, [*by, "le"], born_inside=born_inside)
    if inc.height == 0:
        return pl.DataFrame(schema={**{b: pl.Utf8 for b in by}, "le": pl.Float64, "count": pl.Float64})
    return (
        inc.with_columns(le=pl.col("le").str.replace("Inf", "inf").cast(pl.Float64))
        .group_by([*by, "le"])
        .agg(count=pl.col("increase").sum())
        .sort([*by, "le"])
    )


def histogram_quantile(q: float, upper_bounds: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """Prometheus' ``histogram_quantile`` of one classic histogram, with the holding bucket's bounds.

    Parameters
    ----------
    q:
        The quantile (0–1).
    upper_bounds, counts:
        Bucket upper bounds (``le``, one of them ``+Inf``) and cumulative counts.

    Returns
    -------
    dict
        ``value`` (NaN when undefined, as Prometheus answers), ``lower`` and ``upper``
        (bounds of the bucket the rank falls in: the quantile's uncertainty).
    """
    nan = float("nan")
    if np.isnan(q):
        return {"value": nan, "lower": nan, "upper": nan}
    if q < 0:
        return {"value": -np.inf, "lower": -np.inf, "upper": -np.inf}
    if q > 1:
        return {"value": np.inf, "lower": np.inf, "upper": np.inf}
    order = np.argsort(upper_bounds, kind="stable")
    ub = np.asarray(upper_bounds, dtype=float)[order]
    cnt = np.asarray(counts, dtype=float)[order]
    if ub.size == 0 or not np.isposinf(ub[-1]):
        return {"value": nan, "lower": nan, "upper": nan}
    # coalesce equal bounds (quantile.go coalesceBuckets)
    ub, idx = np.unique(ub, return_index=True)
    cnt = np.add.reduceat(cnt, idx) if cnt.size else cnt
    # force monotonic, ignoring tiny relative deltas (ensureMonotonicAndIgnoreSmallDeltas)
    cnt = cnt.copy()
    for i in range(1, cnt.size):  # at most a dozen buckets: not a hot loop
        prev = cnt[i - 1]
        if prev != 0 and abs(cnt[i] - prev) / prev < _SMALL_DELTA_TOLERANCE:
            cnt[i] = prev
        elif cnt[i] < prev:
            cnt[i] = prev
    if ub.size < 2:
        return {"value": nan, "lower": nan, "upper": nan}
    observations = cnt[-1]
    if observations == 0 or np.isnan(observations):
        return {"value": nan, "lower": nan, "upper": nan}
    rank = q * observations
    b = int(np.searchsorted(cnt[:-1], rank, side="left"))
    if b == ub.size - 1:
        return {"value": float(ub[-2]), "lower": float(ub[-2]), "upper": float("inf")}
    if b == 0 and ub[0] <= 0:
        return {"value": float(ub[0]), "lower": float(ub[0]), "upper": float(ub[0])}
    start, end, count = 0.0, float(ub[b]), float(cnt[b])
    if b > 0:
        start = float(ub[b - 1])
        count -= cnt[b - 1]
        rank -= cnt[b - 1]
    return {"value": float(start + (end - start) * (rank / count)), "lower": start, "upper": end}


def quantile_table(counts: pl.DataFrame, quantiles: Sequence[float] = (0.5, 0.9, 0.99),
                   by: Sequence[str] = ()) -> pl.DataFrame:
    """:func:`histogram_quantile` per group of a :func:`bucket_counts` frame.

    Columns: ``by..., quantile, value, lower, upper, sessions``.
    """
    rows: list[dict[str, Any]] = []
    groups = counts.partition_by(list(by), as_dict=True, maintain_order=True) if by else {(): counts}
    for key, part in groups.items():  # one row per group and quantile: a handful
        ub, cnt = part["le"].to_numpy(), part["count"].to_numpy()
        total = float(cnt[np.isposinf(ub)].sum()) if np.isposinf(ub).any() else float("nan")
        for q in quantiles:
            res = histogram_quantile(q, ub, cnt)
            rows.append({**dict(zip(by, key, strict=True)), "quantile": float(q), **res, "sessions": total})
    schema = {**{b: pl.Utf8 for b in by}, "quantile": pl.Float64, "value": pl.Float64, "lower": pl.Float64,
              "upper": pl.Float64, "sessions": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def quantiles_over_time(source: Any, start_ms: int, end_ms: int, *, window: str = "6h", step: str | None = None,
                        quantiles: Sequence[float] = (0.5, 0.9), by: Sequence[str] = ("user_tier",),
                        metric: str = SESSION_METRIC) -> pl.DataFrame:
    """``histogram_quantile(q, sum by (le, by...) (increase(metric[window])))`` through the PromQL engine.

    Returns ``by..., quantile, ts, value`` (NaN where a window holds no session).
    """
    from vfanalytics.promql import query_range

    grouping = ", ".join(["le", *by])
    frames = []
    for q in quantiles:
        expr = f"histogram_quantile({q}, sum by ({grouping}) (increase({metric}[{window}])))"
        res = query_range(expr, start_ms, end_ms, step or window, source=source)
        decoded = res.with_columns(pl.col("labels").str.json_decode(pl.Struct({b: pl.Utf8 for b in by}))
                                   if by else pl.lit(None).alias("_none"))
        cols = [pl.col("labels").struct.field(b).alias(b) for b in by]
        frames.append(decoded.select(*cols, pl.lit(float(q)).alias("quantile"), "ts", "value"))
    return pl.concat(frames).sort([*by, "quantile", "ts"]) if frames else pl.DataFrame()


def load_sessions(store: Any, start_ms: int, end_ms: int) -> pl.DataFrame:
    """Ended sessions in the window from the logs: ``ts_ms, user_id, user_tier, session_id, duration_s``."""
    frame = store.sql(
        "SELECT ts_ns // 1000000 AS ts_ms, user_id, user_tier, "
        "json_extract_string(extra, '$.sessionId') AS session_id, "
        "CAST(json_extract(extra, '$.sessionDuration') AS DOUBLE) AS duration_s "
        "FROM logs WHERE action = 'session_end' AND ts_ns BETWEEN ? AND ? ORDER BY ts_ns",
        [start_ms * 1_000_000, end_ms * 1_000_000],
    )
    schema = {"ts_ms": pl.Int64, "user_id": pl.Utf8, "user_tier": pl.Utf8, "session_id": pl.Utf8,
              "duration_s": pl.Float64}
    return frame.cast(schema) if frame.height else pl.DataFrame(schema=schema)


def share_over_timeout(counts: pl.DataFrame, sessions: pl.DataFrame | None = None, *,
                       timeout_s: float = CONTAINER_TIMEOUT_S, by: Sequence[str] = ()) -> pl.DataFrame:
    """Share of sessions longer than ``timeout_s``, per group.

    From the histogram: ``1 - F(timeout)`` bounded by the buckets around the timeout
    (``hist_low``..``hist_high``; equal when the timeout is a bucket bound). From the
    logs (when ``sessions`` is given): the exact share ``logged``.
    """
    rows = []
    groups = counts.partition_by(list(by), as_dict=True, maintain_order=True) if by else {(): counts}
    for key, part in groups.items():
        ub, cnt = part["le"].to_numpy(), part["count"].to_numpy()
        total = float(cnt[np.isposinf(ub)].sum())
        below = cnt[ub <= timeout_s]
        above = cnt[ub >= timeout_s]
        at_most_low = float(below.max()) if below.size else 0.0   # sessions surely <= timeout
        at_most_high = float(above.min()) if above.size else total  # sessions perhaps <= timeout
        rows.append({**dict(zip(by, key, strict=True)), "sessions": total,
                     "hist_low": 1 - at_most_high / total if total else float("nan"),
                     "hist_high": 1 - at_most_low / total if total else float("nan")})
    out = pl.DataFrame(rows, schema={**{b: pl.Utf8 for b in by}, "sessions": pl.Float64,
                                     "hist_low": pl.Float64, "hist_high": pl.Float64})
    if sessions is not None:
        logged = (sessions.group_by(list(by)) if by else sessions.group_by(pl.lit(1).alias("_all"))).agg(
            logged_sessions=pl.len(), logged=(pl.col("duration_s") > timeout_s).mean())
        out = out.join(logged, on=list(by), how="left") if by else out.with_columns(
            logged_sessions=pl.lit(logged["logged_sessions"][0] if logged.height else 0),
            logged=pl.lit(logged["logged"][0] if logged.height else None, dtype=pl.Float64))
    return out
