"""Exposure and capacity backtests of a feature-flag rollout, replayed over the store's history.

For each candidate rollout percentage the platform's own evaluator
(:mod:`vfanalytics.rollout`) decides, from each logged event's own context (``userId``,
``userSegment``, ``environment``), whether the event's user would have seen the flag:

* **exposure**: users, sessions, Claude requests, tokens and token cost that the flag
  would have reached, per segment and environment and in total. Exposed sets are nested
  (``bucket < p``), so every figure is non-decreasing in ``p``: this is checked.
* **capacity**: the historical Claude request timeline restricted to exposed users,
  counted per minute and compared with ``claude.rateLimitPerMinute`` (100 in the seed's
  ``ConfigurationManager`` defaults) and request sizes with ``maxTokensPerRequest``
  (4000); the largest percentage whose share of over-limit minutes stays within a
  tolerance is the *largest safe percentage*.

Example
-------
>>> from vfanalytics.store import Store
>>> from vfanalytics.logs import parse_log_lines
>>> from vfanalytics.rollout import load_flags
>>> line = ('{"actionType":"claude_interaction","userId":"user-%05d","tokens":100,"success":true,'
...         '"userSegment":"free","environment":"production"}')
>>> with Store(":memory:") as st:
...     _ = st.insert_logs(parse_log_lines([i * 10**9 for i in range(50)], ['{"service":"backend"}'] * 50,
...                                        [line % i for i in range(50)]))
...     act = load_activity(st)
>>> flag = load_flags()["enable_claude_integration"]
>>> exp = exposure_backtest(act, flag, [0, 50, 100])
>>> exp.filter(pl.col("segment") == "*")["requests"].to_list()
[0, 29, 50]
>>> cap = capacity_backtest(act, flag, [0, 50, 100], rate_limit_per_minute=10)
>>> cap["peak_requests_per_minute"].to_list(), largest_safe_percentage(cap, tolerance=0.0)
([0, 29, 50], 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from vfanalytics.exceptions import UsageError
from vfanalytics.rollout import FeatureFlag, bucket, evaluate
from vfanalytics.series import is_stale
from vfanalytics.store import Store

__all__ = [
    "Activity",
    "load_activity",
    "exposure_backtest",
    "capacity_backtest",
    "largest_safe_percentage",
    "store_user_ids",
    "DEFAULT_RATE_LIMIT_PER_MINUTE",
    "DEFAULT_MAX_TOKENS_PER_REQUEST",
    "DEFAULT_USD_PER_MILLION_TOKENS",
]

#: ``claude.rateLimitPerMinute`` default of the seed's ConfigurationManager (``CLAUDE_RATE_LIMIT``)
DEFAULT_RATE_LIMIT_PER_MINUTE = 100
#: ``claude.maxTokensPerRequest`` default of the seed's ConfigurationManager (``CLAUDE_MAX_TOKENS``)
DEFAULT_MAX_TOKENS_PER_REQUEST = 4000
#: assumed price (USD per million tokens); the logs do not split input and output tokens, so
#: this is a single blended figure, overridable everywhere
DEFAULT_USD_PER_MILLION_TOKENS = 15.0

_TOKENS_METRIC = "vaporform_claude_tokens_used_total"
_CTX = ("user_id", "segment", "environment")


@dataclass(frozen=True)
class Activity:
    """The history a rollout backtest replays (Polars frames; times in ms).

    Attributes
    ----------
    requests:
        One row per Claude interaction: ``ts, user_id, segment, environment, tier,
        tokens, success, operation``.
    sessions:
        One row per session: ``ts, user_id, segment, environment, tier, session_id,
        duration_s, exposures`` (``exposures`` = the logged ``flagExposures`` JSON or null).
    users:
        One row per distinct context ``user_id, segment, environment, tier`` (ids seen only
        in metric ``user_id`` labels get null segment / tier and ``default_environment``),
        with ``tokens_metric``: the increase of ``vaporform_claude_tokens_used_total``.
    """

    requests: pl.DataFrame
    sessions: pl.DataFrame
    users: pl.DataFrame


def _json_field(path: str, alias: str) -> pl.Expr:
    return pl.col("extra").str.json_path_match(path).alias(alias)


def load_activity(
    store: Store,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    default_environment: str = "production",
) -> Activity:
    """Read requests, sessions and user contexts from a :class:`~vfanalytics.store.Store`.

    Parameters
    ----------
    store:
        An open store.
    start_ms, end_ms:
        Optional window ``[start, end)``.
    default_environment:
        Environment assumed for users known only from metric labels.
    """
    start_ns = None if start_ms is None else int(start_ms) * 1_000_000
    end_ns = None if end_ms is None else int(end_ms) * 1_000_000
    logs = store.logs(
        start_ns, end_ns,
        where="user_id IS NOT NULL AND (action_type = 'claude_interaction' OR action IN ('session_start', 'session_end'))",
    )
    base: list[pl.Expr] = [
        (pl.col("ts_ns") // 1_000_000).alias("ts"),
        pl.col("user_id"),
        pl.col("user_segment").alias("segment"),
        pl.col("environment"),
        pl.col("user_tier").alias("tier"),
    ]
    requests = logs.filter(pl.col("action_type") == "claude_interaction").select(
        *base, pl.col("tokens").fill_null(0), "success", "operation"
    )
    starts = logs.filter(pl.col("action") == "session_start").select(
        *base, _json_field("$.sessionId", "session_id"), _json_field("$.flagExposures", "exposures")
    )
    ends = logs.filter(pl.col("action") == "session_end").select(
        _json_field("$.sessionId", "session_id"),
        pl.col("extra").str.json_path_match("$.sessionDuration").cast(pl.Float64, strict=False).alias("duration_s"),
    )
    sessions = starts.join(ends.unique("session_id", keep="last"), on="session_id", how="left")
    ctx = pl.concat([requests.select(*_CTX, "tier", "ts"), sessions.select(*_CTX, "tier", "ts")])
    users = ctx.sort("ts").group_by(_CTX).agg(pl.col("tier").last()).sort(_CTX, nulls_last=True)
    metric = _metric_tokens(store, start_ms, end_ms)
    if not metric.is_empty():
        known = users.select("user_id").unique()
        extra = metric.join(known, on="user_id", how="anti").select(
            "user_id",
            pl.lit(None, pl.Utf8).alias("segment"),
            pl.lit(default_environment).alias("environment"),
            pl.lit(None, pl.Utf8).alias("tier"),
        )
        users = pl.concat([users, extra])
        # a user's metric tokens go to its most used context
        primary = requests.group_by(_CTX).len().sort("len", descending=True).unique("user_id", keep="first")
        primary = pl.concat([primary.select(_CTX), extra.select(_CTX)]).unique("user_id", keep="first")
        users = users.join(primary.join(metric, on="user_id"), on=_CTX, how="left", nulls_equal=True)
    else:
        users = users.with_columns(pl.lit(None, pl.Float64).alias("tokens_metric"))
    users = users.with_columns(pl.col("tokens_metric").fill_null(0.0))
    return Activity(requests=requests, sessions=sessions, users=users)


def _metric_tokens(store: Store, start_ms: int | None, end_ms: int | None) -> pl.DataFrame:
    """Per ``user_id``: increase of the token counter (resets and staleness markers handled)."""
    series, samples = store.select([("__name__", "=", _TOKENS_METRIC)], start_ms, end_ms)
    if series.is_empty() or samples.is_empty():
        return pl.DataFrame(schema={"user_id": pl.Utf8, "tokens_metric": pl.Float64})
    ids = series.select(
        "series_id", pl.col("labels").str.json_path_match("$.user_id").alias("user_id")
    ).filter(pl.col("user_id").is_not_null())
    samples = samples.sort("series_id", "ts")
    stale = pl.Series("stale", is_stale(samples["value"].to_numpy()))
    # a staleness marker ends a process's series: what follows is a new counter from zero
    live = (
        samples.with_columns(stale)
        .with_columns(pl.col("stale").cast(pl.Int32).cum_sum().over("series_id").alias("segment"))
        .filter(~pl.col("stale") & pl.col("value").is_not_nan())
    )
    window_start = live["ts"].min()
    inc = (
        live.with_columns(pl.col("value").diff().over("series_id", "segment").alias("d"))
        # a drop is a counter reset: the new value is all increase since the reset; a series
        # born inside the window (or after a staleness marker) started from 0
        .with_columns(
            pl.when(pl.col("d") < 0).then(pl.col("value"))
            .when(pl.col("d").is_null() & ((pl.col("ts") > window_start) | (pl.col("segment") > 0)))
            .then(pl.col("value"))
            .otherwise(pl.col("d")).fill_null(0.0).alias("d")
        )
        .group_by("series_id")
        .agg(pl.col("d").sum())
    )
    return inc.join(ids, on="series_id").group_by("user_id").agg(pl.col("d").sum().alias("tokens_metric"))


def _flag_for_backtest(flag: FeatureFlag, as_configured: bool) -> FeatureFlag:
    # Raising a rollout means switching the flag on: a disabled flag would expose nobody at any p.
    if as_configured or flag.enabled:
        return flag
    return FeatureFlag(flag.key, flag.name, flag.description, True, flag.rollout_percentage,
                       flag.user_segments, flag.environments, flag.created_at, flag.updated_at, flag.origin)


def _check_percentages(percentages: Sequence[float]) -> list[float]:
    if not percentages:
        raise UsageError("no rollout percentages given")
    out = sorted({float(p) for p in percentages})
    for p in out:
        if not (math.isfinite(p) and 0 <= p <= 100):
            raise UsageError(f"rollout percentage must be from 0 to 100, got {p!r}")
    return out


def _exposure_inputs(users: pl.DataFrame, flag: FeatureFlag) -> tuple[np.ndarray, np.ndarray]:
    """Per context row: eligible (every rule but the percentage) and bucket."""
    full = flag.with_percentage(100)
    eligible = evaluate(full, users["user_id"], users["segment"], users["environment"])
    return eligible, bucket(users["user_id"])


def exposure_backtest(
    activity: Activity,
    flag: FeatureFlag,
    percentages: Sequence[float],
    *,
    usd_per_million_tokens: float = DEFAULT_USD_PER_MILLION_TOKENS,
    as_configured: bool = False,
) -> pl.DataFrame:
    """What each rollout percentage would have reached, per segment × environment and in total.

    Parameters
    ----------
    activity:
        From :func:`load_activity`.
    flag:
        The flag; a disabled flag is treated as switched on unless ``as_configured``.
    percentages:
        Rollout percentages to replay (0–100).
    usd_per_million_tokens:
        Token price for the ``cost_usd`` column.

    Returns
    -------
    polars.DataFrame
        ``percentage, segment, environment, users, sessions, requests, tokens,
        tokens_metric, cost_usd`` with ``segment = environment = "*"`` on total rows.

    Raises
    ------
    UsageError
        A percentage outside 0–100.
    """
    pcts = _check_percentages(percentages)
    f = _flag_for_backtest(flag, as_configured)
    req = activity.requests.group_by(_CTX).agg(pl.len().alias("requests"), pl.col("tokens").sum())
    ses = activity.sessions.group_by(_CTX).agg(pl.len().alias("sessions"))
    units = (
        activity.users.join(req, on=_CTX, how="left", nulls_equal=True)
        .join(ses, on=_CTX, how="left", nulls_equal=True)
        .with_columns(pl.col("requests", "tokens", "sessions").fill_null(0))
    )
    eligible, buckets = _exposure_inputs(units, f)
    units = units.with_columns(
        pl.col("segment").fill_null("(none)"), pl.col("environment").fill_null("(none)"),
        pl.Series("eligible", eligible), pl.Series("bucket", buckets),
    )
    parts = []
    for p in pcts:
        exposed = units.filter(pl.col("eligible") & ((pl.col("bucket") < p) | pl.lit(p >= 100)))
        aggs = [
            pl.col("user_id").n_unique().alias("users"),
            pl.col("sessions").sum(), pl.col("requests").sum(), pl.col("tokens").sum(),
            pl.col("tokens_metric").sum(),
        ]
        by = units.select("segment", "environment").unique().join(
            exposed.group_by("segment", "environment").agg(aggs), on=["segment", "environment"], how="left"
        )
        total = exposed.select(pl.lit("*").alias("segment"), pl.lit("*").alias("environment"), *aggs)
        parts.append(pl.concat([total, by], how="vertical_relaxed").with_columns(pl.lit(p).alias("percentage")))
    cols = ["users", "sessions", "requests", "tokens", "tokens_metric"]
    out = (
        pl.concat(parts, how="vertical_relaxed")
        .with_columns([pl.col(c).fill_null(0) for c in cols])
        .with_columns(
            pl.col("users", "sessions", "requests", "tokens").cast(pl.Int64),
            (pl.col("tokens") * usd_per_million_tokens / 1e6).alias("cost_usd"),
        )
        .select("percentage", "segment", "environment", *cols, "cost_usd")
        .sort("percentage", pl.col("segment") != "*", "segment", "environment")
    )
    _assert_monotonic(out, cols)
    return out


def _assert_monotonic(frame: pl.DataFrame, cols: Sequence[str]) -> None:
    """Exposed sets are nested in the percentage; a decrease would be an evaluator bug."""
    bad = frame.sort("percentage").group_by("segment", "environment").agg(
        [(pl.col(c).diff().fill_null(0) < 0).any().alias(c) for c in cols]
    )
    broken = bad.filter(pl.any_horizontal(list(cols)))
    if not broken.is_empty():
        raise AssertionError(f"exposure is not monotonic in the percentage: {broken.to_dicts()[:3]}")


def capacity_backtest(
    activity: Activity,
    flag: FeatureFlag,
    percentages: Sequence[float],
    *,
    rate_limit_per_minute: float = DEFAULT_RATE_LIMIT_PER_MINUTE,
    max_tokens_per_request: float = DEFAULT_MAX_TOKENS_PER_REQUEST,
    as_configured: bool = False,
) -> pl.DataFrame:
    """Replay the Claude request timeline of exposed users minute by minute against the rate limit.

    Minutes are counted over the whole history span (quiet minutes count as 0), so
    ``share_minutes_over_limit`` is a share of wall-clock time.

    Returns
    -------
    polars.DataFrame
        Per percentage: ``requests, minutes, minutes_over_limit, share_minutes_over_limit,
        peak_requests_per_minute, p99_requests_per_minute, mean_requests_per_minute,
        requests_over_max_tokens, share_requests_over_max_tokens, max_tokens_per_request``.
    """
    pcts = _check_percentages(percentages)
    if rate_limit_per_minute <= 0 or max_tokens_per_request <= 0:
        raise UsageError("rate limit and max tokens per request must be positive")
    f = _flag_for_backtest(flag, as_configured)
    req = activity.requests
    if req.is_empty():
        zero = {c: [0] * len(pcts) for c in ("requests", "minutes", "minutes_over_limit", "peak_requests_per_minute",
                                             "requests_over_max_tokens", "max_tokens_per_request")}
        return pl.DataFrame({"percentage": pcts, **zero}).with_columns(
            pl.lit(0.0).alias("share_minutes_over_limit"), pl.lit(0.0).alias("p99_requests_per_minute"),
            pl.lit(0.0).alias("mean_requests_per_minute"), pl.lit(0.0).alias("share_requests_over_max_tokens"))
    # evaluate once per distinct context, then broadcast to requests
    ctx = req.select(_CTX).unique()
    eligible, buckets = _exposure_inputs(ctx, f)
    ctx = ctx.with_columns(pl.Series("eligible", eligible), pl.Series("bucket", buckets))
    req = req.join(ctx, on=_CTX, how="left", nulls_equal=True).filter(pl.col("eligible"))
    ts = activity.requests["ts"].to_numpy()
    first_minute = int(ts.min()) // 60_000
    n_minutes = int(ts.max()) // 60_000 - first_minute + 1
    minute = req["ts"].to_numpy() // 60_000 - first_minute
    b = req["bucket"].to_numpy()
    big = req["tokens"].to_numpy() > max_tokens_per_request
    tokens = req["tokens"].to_numpy()
    # per (minute, bucket) counts, cumulated over buckets: column k = requests of buckets < k
    grid = np.zeros((n_minutes, 101), dtype=np.int64)
    np.add.at(grid, (minute, b + 1), 1)
    cum = np.cumsum(grid, axis=1)
    rows = []
    for p in pcts:
        k = 100 if p >= 100 else int(math.ceil(p))  # bucket < p  <=>  bucket < ceil(p)
        per_min = cum[:, k]
        inside = b < k
        over = int((per_min > rate_limit_per_minute).sum())
        n_req = int(per_min.sum())
        n_big = int(big[inside].sum())
        rows.append({
            "percentage": p, "requests": n_req, "minutes": n_minutes, "minutes_over_limit": over,
            "share_minutes_over_limit": over / n_minutes,
            "peak_requests_per_minute": int(per_min.max()),
            "p99_requests_per_minute": float(np.quantile(per_min, 0.99)),
            "mean_requests_per_minute": float(per_min.mean()),
            "requests_over_max_tokens": n_big,
            "share_requests_over_max_tokens": n_big / n_req if n_req else 0.0,
            "max_tokens_per_request": int(tokens[inside].max()) if inside.any() else 0,
        })
    out = pl.DataFrame(rows)
    if (out["peak_requests_per_minute"].diff().drop_nulls() < 0).any():
        raise AssertionError("capacity is not monotonic in the percentage")
    return out


def largest_safe_percentage(
    capacity: pl.DataFrame, tolerance: float = 0.0, *, include_token_limit: bool = False
) -> float | None:
    """Largest percentage whose share of over-limit minutes is within ``tolerance`` (0–1).

    With ``include_token_limit`` the share of requests over ``maxTokensPerRequest`` must
    stay within the tolerance too. ``None`` when even the smallest percentage fails.
    """
    if not 0 <= tolerance <= 1:
        raise UsageError(f"tolerance must be a share from 0 to 1, got {tolerance!r}")
    ok = pl.col("share_minutes_over_limit") <= tolerance
    if include_token_limit:
        ok = ok & (pl.col("share_requests_over_max_tokens") <= tolerance)
    # exposure is nested, so failures are too: the safe percentages are a prefix
    flags = capacity.sort("percentage").select(ok.alias("ok"), "percentage")
    safe = None
    for row in flags.iter_rows(named=True):
        if not row["ok"]:
            break
        safe = float(row["percentage"])
    return safe


def store_user_ids(store: Store) -> list[str]:
    """Every distinct user id the store knows: log ``userId`` and metric ``user_id`` labels."""
    logs = store.sql("SELECT DISTINCT user_id FROM logs WHERE user_id IS NOT NULL")
    labels = store.sql(
        "SELECT DISTINCT json_extract_string(labels, '$.user_id') AS user_id FROM series "
        "WHERE json_extract_string(labels, '$.user_id') IS NOT NULL"
    )
    return sorted(set(logs["user_id"].to_list()) | set(labels["user_id"].to_list()))
