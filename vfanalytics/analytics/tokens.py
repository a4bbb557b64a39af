"""Claude token usage: totals and cost, concentration, daily trend and forecast, anomalies, reconciliation.

The per-request truth is the ``claude_interaction`` log line (``userId``,
``projectId``, ``operation``, ``tokens``, ``userTier``); the metric
``vaporform_claude_tokens_used_total{user_id, project_id, operation_type}`` counts the
same tokens, so :func:`reconcile` checks one against the other.

Cost uses a *price table*: USD per million tokens by operation, with ``"*"`` the
price of any operation not listed (the logs do not split input and output tokens,
so a price is a blended figure).

Example
-------
>>> import polars as pl
>>> usage = pl.DataFrame({"ts_ms": [0, 1, 2], "user_id": ["a", "a", "b"], "project_id": ["p", "p", "q"],
...                       "operation": ["chat", "chat", "debugging"], "user_tier": ["free", "free", "premium"],
...                       "tokens": [1_000_000, 1_000_000, 2_000_000], "success": [True, True, True]})
>>> totals(usage, "user_id", {"*": 10.0, "debugging": 20.0})["cost_usd"].to_list()
[20.0, 40.0]
>>> concentration(usage)["top_1pct_share"]
0.5
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from vfanalytics.analytics.counters import counter_increases

__all__ = [
    "DEFAULT_PRICES",
    "TOKEN_METRIC",
    "load_usage",
    "price_expr",
    "totals",
    "top_consumers",
    "concentration",
    "daily_usage",
    "month_end_forecast",
    "anomalous_days",
    "reconcile",
    "hourly_tokens_promql",
]

#: USD per million tokens by operation; ``"*"`` prices every other operation
DEFAULT_PRICES: dict[str, float] = {"*": 15.0}
TOKEN_METRIC = "vaporform_claude_tokens_used_total"
DAY_MS = 86_400_000

USAGE_SCHEMA = {
    "ts_ms": pl.Int64,
    "user_id": pl.Utf8,
    "project_id": pl.Utf8,
    "operation": pl.Utf8,
    "user_tier": pl.Utf8,
    "tokens": pl.Int64,
    "success": pl.Boolean,
}


def load_usage(store: Any, start_ms: int, end_ms: int) -> pl.DataFrame:
    """One row per logged Claude request in ``[start_ms, end_ms]`` (columns of ``USAGE_SCHEMA``)."""
    frame = store.sql(
        "SELECT ts_ns // 1000000 AS ts_ms, user_id, project_id, operation, user_tier, "
        "coalesce(tokens, 0) AS tokens, success FROM logs "
        "WHERE action_type = 'claude_interaction' AND ts_ns BETWEEN ? AND ? ORDER BY ts_ns",
        [start_ms * 1_000_000, end_ms * 1_000_000],
    )
    return frame.cast(USAGE_SCHEMA).select(list(USAGE_SCHEMA)) if frame.height else pl.DataFrame(schema=USAGE_SCHEMA)


def price_expr(prices: Mapping[str, float] | float | None) -> pl.Expr:
    """USD per token of each row (an expression over ``operation``)."""
    if prices is None:
        prices = DEFAULT_PRICES
    if isinstance(prices, int | float):
        prices = {"*": float(prices)}
    fallback = float(prices.get("*", DEFAULT_PRICES["*"]))
    table = {k: float(v) for k, v in prices.items() if k != "*"}
    per_million = pl.col("operation").replace_strict(table, default=fallback, return_dtype=pl.Float64)
    return per_million / 1e6


def totals(
    usage: pl.DataFrame, by: str | Sequence[str], prices: Mapping[str, float] | float | None = None
) -> pl.DataFrame:
    """Tokens, requests, failed requests, cost and share of all tokens per group, largest first."""
    keys = [by] if isinstance(by, str) else list(by)
    grand = max(int(usage["tokens"].sum()), 1) if usage.height else 1
    out = (
        usage.with_columns(cost_usd=pl.col("tokens") * price_expr(prices))
        .group_by(keys)
        .agg(
            tokens=pl.col("tokens").sum(),
            requests=pl.len(),
            failed=(~pl.col("success").fill_null(True)).sum(),
            cost_usd=pl.col("cost_usd").sum(),
        )
        .with_columns(share=pl.col("tokens") / grand)
        .sort(["tokens", *keys], descending=[True, *[False] * len(keys)])
    )
    return out


def top_consumers(usage: pl.DataFrame, n: int = 10, by: str = "user_id",
                  prices: Mapping[str, float] | float | None = None) -> pl.DataFrame:
    """The ``n`` largest consumers with their cumulative share of all tokens."""
    return totals(usage, by, prices).head(n).with_columns(cumulative_share=pl.col("share").cum_sum())


def concentration(usage: pl.DataFrame, by: str = "user_id", fractions: Sequence[float] = (0.01, 0.10)) -> dict[str, Any]:
    """Share of all tokens used by the top 1 % / 10 % of consumers (at least one), and the Gini index.

    The top ``f`` of ``n`` consumers is ``ceil(f * n)`` of them, so with 30 users the
    top 1 % is the single largest one.
    """
    per = np.sort(usage.group_by(by).agg(pl.col("tokens").sum())["tokens"].to_numpy().astype(float))[::-1]
    n, total = per.size, float(per.sum())
    out: dict[str, Any] = {"consumers": int(n), "tokens": total}
    for f in fractions:
        k = max(1, math.ceil(f * n)) if n else 0
        out[f"top_{round(f * 100):d}pct_count"] = k
        out[f"top_{round(f * 100):d}pct_share"] = float(per[:k].sum() / total) if total > 0 else float("nan")
    asc = per[::-1]
    # Gini from the Lorenz curve of the ascending totals
    out["gini"] = (
        float((2 * np.arange(1, n + 1) - n - 1) @ asc / (n * total)) if n and total > 0 else float("nan")
    )
    return out


def daily_usage(usage: pl.DataFrame, prices: Mapping[str, float] | float | None = None, *,
                start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
    """Tokens, requests and cost per UTC day of ``[start_ms, end_ms)``, with ``coverage`` (share of the day inside).

    Days without any request inside the window appear with zeros.
    """
    ts = usage["ts_ms"].to_numpy()
    lo = start_ms if start_ms is not None else (int(ts.min()) if ts.size else 0)
    hi = end_ms if end_ms is not None else (int(ts.max()) + 1 if ts.size else 1)
    hi = max(hi, lo + 1)  # the window is [lo, hi): a day starting at ``hi`` is outside it
    days = np.arange(lo - lo % DAY_MS, hi, DAY_MS, dtype=np.int64)
    coverage = (np.minimum(days + DAY_MS, hi) - np.maximum(days, lo)) / DAY_MS
    grid = pl.DataFrame({"day_ms": days, "coverage": np.clip(coverage, 0.0, 1.0)})
    per_day = (
        usage.with_columns(day_ms=pl.col("ts_ms") - pl.col("ts_ms") % DAY_MS, cost=pl.col("tokens") * price_expr(prices))
        .group_by("day_ms")
        .agg(tokens=pl.col("tokens").sum(), requests=pl.len(), cost_usd=pl.col("cost").sum())
    )
    return (
        grid.join(per_day, on="day_ms", how="left")
        .with_columns(pl.col("tokens", "requests").fill_null(0).cast(pl.Int64), pl.col("cost_usd").fill_null(0.0),
                      day=pl.from_epoch(pl.col("day_ms"), time_unit="ms").dt.date())
        .select("day", "day_ms", "coverage", "tokens", "requests", "cost_usd")
        .sort("day_ms")
    )


def month_end_forecast(daily: pl.DataFrame, column: str = "tokens", *, min_coverage: float = 0.99,
                       fit_days: int = 28) -> dict[str, Any]:
    """Forecast the month total of ``column`` for the month of the last day in ``daily``.

    Complete days (``coverage >= min_coverage``) of the last ``fit_days`` fit a linear
    trend (the mean when fewer than 7 days); the month's remaining days (those after
    the last complete day) are projected from it and added to the month-to-date
    actual. ``low``/``high`` are an approximate 95 % interval from the residual spread.
    """
    full = daily.filter(pl.col("coverage") >= min_coverage).tail(fit_days)
    if full.height == 0:
        raise ValueError("no complete day to fit a forecast on")
    last_day_ms = int(full["day_ms"][-1])
    last = datetime.fromtimestamp(last_day_ms / 1000, tz=UTC)
    month_start = datetime(last.year, last.month, 1, tzinfo=UTC)
    days_in_month = calendar.monthrange(last.year, last.month)[1]
    month_start_ms = int(month_start.timestamp() * 1000)
    to_date = float(daily.filter((pl.col("day_ms") >= month_start_ms) & (pl.col("day_ms") <= last_day_ms))[column].sum())
    remaining = days_in_month - last.day
    y = full[column].to_numpy().astype(float)
    x = (full["day_ms"].to_numpy() - last_day_ms) / DAY_MS
    if y.size >= 7:
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (slope * x + intercept)
        dof = max(y.size - 2, 1)
    else:
        slope, intercept = 0.0, float(y.mean())
        resid = y - intercept
        dof = max(y.size - 1, 1)
    future = np.arange(1, remaining + 1, dtype=float)
    projected = np.clip(slope * future + intercept, 0.0, None)
    sigma = float(np.sqrt((resid**2).sum() / dof)) if y.size > 1 else float(abs(intercept))
    spread = 1.96 * sigma * math.sqrt(max(remaining, 0))
    forecast = to_date + float(projected.sum())
    return {
        "month": f"{last.year:04d}-{last.month:02d}",
        "month_to_date": to_date,
        "days_observed": int(full.height),
        "days_remaining": int(remaining),
        "daily_rate": float(intercept),
        "daily_slope": float(slope),
        "forecast": forecast,
        "low": max(to_date, forecast - spread),
        "high": forecast + spread,
        "projection": pl.DataFrame({
            "day_ms": last_day_ms + (future * DAY_MS).astype(np.int64),
            column: projected,
        }),
    }


def anomalous_days(daily: pl.DataFrame, column: str = "tokens", *, threshold: float = 3.5,
                   min_coverage: float = 0.99) -> pl.DataFrame:
    """Complete days whose robust z-score (median / MAD) of ``column`` exceeds ``threshold``.

    Returns every complete day with ``robust_z`` and ``anomalous``; fewer than 3
    complete days give no anomalies (nothing to compare with).
    """
    full = daily.filter(pl.col("coverage") >= min_coverage)
    y = full[column].to_numpy().astype(float)
    if y.size < 3:
        z = np.zeros(y.size)
    else:
        med = float(np.median(y))
        mad = float(np.median(np.abs(y - med)))
        scale = mad / 0.6745 if mad > 0 else (float(np.std(y)) or 1.0)
        z = (y - med) / scale
    return full.with_columns(robust_z=pl.Series(z), anomalous=pl.Series(np.abs(z) > threshold))


def reconcile(store: Any, usage: pl.DataFrame, start_ms: int, end_ms: int, *, born_inside: bool = True,
              tolerance: float = 0.0) -> pl.DataFrame:
    """Logged tokens against the metric's exact increase per (user_id, project_id, operation).

    The metric side comes from :func:`vfanalytics.analytics.counters.counter_increases`
    (reset-aware; a staleness marker ends a counter). Columns: ``user_id, project_id,
    operation, log_tokens, metric_tokens, difference (metric - log), matches``
    (``|difference| <= tolerance * max(log_tokens, 1)``). Keys seen on one side only
    appear with 0 on the other.
    """
    metric = counter_increases(
        store, TOKEN_METRIC, start_ms, end_ms, ["user_id", "project_id", "operation_type"], born_inside=born_inside
    ).rename({"operation_type": "operation", "increase": "metric_tokens"})
    logged = usage.group_by("user_id", "project_id", "operation").agg(log_tokens=pl.col("tokens").sum())
    keys = ["user_id", "project_id", "operation"]
    joined = logged.join(metric, on=keys, how="full", coalesce=True)
    return (
        joined.with_columns(pl.col("log_tokens").fill_null(0).cast(pl.Float64), pl.col("metric_tokens").fill_null(0.0))
        .with_columns(difference=pl.col("metric_tokens") - pl.col("log_tokens"))
        .with_columns(matches=pl.col("difference").abs() <= tolerance * pl.max_horizontal(pl.col("log_tokens"), 1.0))
        .select(*keys, "log_tokens", "metric_tokens", "difference", "matches")
        .sort(keys)
    )


def hourly_tokens_promql(source: Any, start_ms: int, end_ms: int, *, step: str = "1h",
                         by: Sequence[str] = ()) -> pl.DataFrame:
    """``sum by (by...) (increase(vaporform_claude_tokens_used_total[step]))`` via the PromQL engine.

    What a Prometheus dashboard shows (extrapolated ``increase``, blind to a counter's
    first sample): compare it with the exact figures of :func:`daily_usage` /
    :func:`reconcile`. Returns ``by..., ts, value``.
    """
    from vfanalytics.promql import query_range

    grouping = f" by ({', '.join(by)})" if by else ""
    res = query_range(f"sum{grouping} (increase({TOKEN_METRIC}[{step}]))", start_ms, end_ms, step, source=source)
    if by:
        res = res.with_columns(pl.col("labels").str.json_decode(pl.Struct({b: pl.Utf8 for b in by})))
        return res.select(*[pl.col("labels").struct.field(b).alias(b) for b in by], "ts", "value")
    return res.select("ts", "value")
