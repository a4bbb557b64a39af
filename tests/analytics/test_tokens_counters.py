"""Token analyses and exact counter increases: hand-made frames with known answers, then the small demo."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vfanalytics.analytics import counters, tokens
from vfanalytics.promql import FrameSource
from vfanalytics.series import STALE_NAN
from vfanalytics.store import Store

DAY = 86_400_000
NOV_2 = 1_793_577_600_000  # 2026-11-02T00:00:00Z


def _samples(sid: int, ts: list[int], values: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"series_id": [sid] * len(ts), "ts": ts, "value": values},
                        schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64})


def test_step_increases_resets_and_staleness_end_a_counter() -> None:
    # 5 (born) +2, reset to 2 (+2), +2, stale, a new life from 3 (+3), +1
    s = _samples(1, [0, 60, 120, 180, 240, 300, 360], [5.0, 7.0, 2.0, 4.0, STALE_NAN, 3.0, 4.0])
    inc = counters.step_increases(s, start_ms=0)
    assert inc["increase"].to_list() == [5.0, 2.0, 2.0, 2.0, 3.0, 1.0]
    # the same counter continuing (no staleness) past a higher value would not count the 3 in full
    s2 = _samples(1, [0, 60, 120], [5.0, 7.0, 9.0])
    assert counters.step_increases(s2, start_ms=0)["increase"].sum() == 9.0
    assert counters.step_increases(s2, start_ms=0, born_inside=False)["increase"].sum() == 4.0


def test_a_sample_before_start_is_only_a_baseline() -> None:
    s = _samples(1, [-60_000, 0, 60_000], [100.0, 104.0, 110.0])
    inc = counters.step_increases(s, start_ms=0)
    assert inc["ts"].to_list() == [0, 60_000]
    assert inc["increase"].to_list() == [4.0, 6.0]


def test_counter_increases_group_by_labels_and_time_bucket() -> None:
    t = np.arange(0, 4) * 60_000
    src = FrameSource.from_series({
        'c_total{user="a"}': (t, np.array([1.0, 2.0, 3.0, 1.0])),   # born 1, +1, +1, reset +1 = 4
        'c_total{user="b"}': (t, np.array([10.0, 10.0, 12.0, 15.0])),  # born 10, +0, +2, +3 = 15
    })
    out = counters.counter_increases(src, "c_total", 0, 180_000, ["user"])
    assert dict(zip(out["user"], out["increase"], strict=True)) == {"a": 4.0, "b": 15.0}
    by_2m = counters.counter_increases(src, "c_total", 0, 180_000, ["user"], every_ms=120_000)
    a = by_2m.filter(pl.col("user") == "a")
    assert a["bucket_ms"].to_list() == [0, 120_000] and a["increase"].to_list() == [2.0, 2.0]


def _usage(rows: list[tuple[int, str, str, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"ts_ms": r[0], "user_id": r[1], "project_id": r[2], "operation": r[3], "user_tier": r[4], "tokens": r[5],
          "success": r[5] > 0} for r in rows], schema=tokens.USAGE_SCHEMA)


def test_totals_cost_and_concentration_known_answers() -> None:
    users = [f"u{i:03d}" for i in range(100)]
    # u000 uses 1000 tokens, u001..u009 100 each, the other 90 users 10 each: 1000 + 900 + 900 = 2800
    amounts = [1000] + [100] * 9 + [10] * 90
    usage = _usage([(i, u, "p", "chat" if i % 2 else "debugging", "free" if i < 50 else "premium", a)
                    for i, (u, a) in enumerate(zip(users, amounts, strict=True))])
    conc = tokens.concentration(usage)
    assert conc["top_1pct_count"] == 1 and conc["top_1pct_share"] == pytest.approx(1000 / 2800)
    assert conc["top_10pct_count"] == 10 and conc["top_10pct_share"] == pytest.approx(1900 / 2800)
    assert 0 < conc["gini"] < 1
    by_op = tokens.totals(usage, "operation", {"*": 1e6, "debugging": 2e6})  # 1 / 2 USD per token
    cost = dict(zip(by_op["operation"], by_op["cost_usd"], strict=True))
    chat_tokens = sum(a for i, a in enumerate(amounts) if i % 2)
    assert cost["chat"] == pytest.approx(chat_tokens * 1.0)
    assert cost["debugging"] == pytest.approx((2800 - chat_tokens) * 2.0)
    assert by_op["share"].sum() == pytest.approx(1.0)
    top = tokens.top_consumers(usage, 3)
    assert top["user_id"].to_list()[0] == "u000" and top["cumulative_share"][-1] == pytest.approx(1200 / 2800)


def test_daily_usage_forecast_and_anomalies() -> None:
    # 20 days of 1000 tokens a day plus 100 per day of trend, from Nov 2; day 10 spikes to 50 000
    rows = []
    for d in range(20):
        amount = 50_000 if d == 10 else 1000 + 100 * d
        rows.append((NOV_2 + d * DAY + 3_600_000, "u", "p", "chat", "free", amount))
    usage = _usage(rows)
    daily = tokens.daily_usage(usage, start_ms=NOV_2, end_ms=NOV_2 + 20 * DAY)
    assert daily.height == 20 and daily["coverage"].min() == 1.0
    an = tokens.anomalous_days(daily)
    assert an.filter(pl.col("anomalous"))["day_ms"].to_list() == [NOV_2 + 10 * DAY]
    # forecast without the spike: the trend continues to Nov 30 (last observed day Nov 21, 9 days left)
    clean = daily.filter(pl.col("day_ms") != NOV_2 + 10 * DAY)
    fc = tokens.month_end_forecast(clean)
    assert fc["month"] == "2026-11" and fc["days_remaining"] == 9
    expected_future = sum(1000 + 100 * d for d in range(20, 29))
    assert fc["forecast"] == pytest.approx(fc["month_to_date"] + expected_future, rel=0.01)
    assert fc["low"] <= fc["forecast"] <= fc["high"]


def test_partial_days_are_not_fitted() -> None:
    usage = _usage([(NOV_2 + 12 * 3_600_000, "u", "p", "chat", "free", 10)])
    daily = tokens.daily_usage(usage, start_ms=NOV_2 + 12 * 3_600_000, end_ms=NOV_2 + DAY)
    assert daily["coverage"].to_list() == [0.5]
    with pytest.raises(ValueError):
        tokens.month_end_forecast(daily)


def test_small_demo_reconciles_metrics_with_logs(small_demo_store) -> None:
    with Store(small_demo_store, read_only=True) as st:
        info = st.info()
        start, end = NOV_2, NOV_2 + 2 * DAY
        usage = tokens.load_usage(st, start, end)
        rec = tokens.reconcile(st, usage, start, end)
        assert usage.height == info["logs"] - st.sql(
            "SELECT count(*) AS n FROM logs WHERE action_type IS DISTINCT FROM 'claude_interaction'")["n"][0]
        assert rec.height > 50
        assert rec["matches"].all(), rec.filter(~pl.col("matches"))
        assert rec["metric_tokens"].sum() == pytest.approx(float(usage["tokens"].sum()))
        # PromQL's extrapolated increase() cannot see born counters' first values: it is not exact
        hourly = tokens.hourly_tokens_promql(st, start + 3_600_000, end, step="1h")
        assert hourly.height > 24 and hourly["value"].sum() != pytest.approx(float(usage["tokens"].sum()), rel=1e-6)
        conc = tokens.concentration(usage)
        assert 0 < conc["top_1pct_share"] <= conc["top_10pct_share"] <= 1
        by_tier = tokens.totals(usage, "user_tier")
        assert set(by_tier["user_tier"]) <= {"free", "premium", "enterprise"}


def test_store_fast_path_equals_the_generic_select(small_demo_store) -> None:
    # on a Store, flat stretches are dropped inside DuckDB; the increases must not change
    with Store(small_demo_store, read_only=True) as st:
        metric = "vaporform_user_session_duration_seconds_bucket"
        series, samples = st.select([("__name__", "=", metric)], 0, 2**62)
        fast = counters.counter_increases(st, metric, NOV_2 + DAY // 2, NOV_2 + 2 * DAY, ["user_tier", "le"])
    generic = counters.counter_increases(FrameSource(series, samples), metric, NOV_2 + DAY // 2, NOV_2 + 2 * DAY,
                                         ["user_tier", "le"])
    assert fast.height == generic.height > 10
    assert fast.equals(generic)
