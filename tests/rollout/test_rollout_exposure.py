"""Exposure and capacity backtests over a small hand-built store, checked against brute force."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vfanalytics.exceptions import UsageError
from vfanalytics.exposure import (
    Activity,
    capacity_backtest,
    exposure_backtest,
    largest_safe_percentage,
    load_activity,
    store_user_ids,
)
from vfanalytics.rollout import FeatureFlag, is_enabled, load_flags
from vfanalytics.store import Store

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z


@pytest.fixture(scope="module")
def store(synthetic_store_path: Path) -> Iterator[Store]:
    st = Store(synthetic_store_path, read_only=True)
    yield st
    st.close()


@pytest.fixture(scope="module")
def activity(store: Store) -> Activity:
    return load_activity(store)


def _flag(pct: float = 100, **kw: object) -> FeatureFlag:
    base = dict(key="exp", name="E", description="", enabled=True, rollout_percentage=pct,
                user_segments=("all",), environments=("production", "staging"))
    base.update(kw)
    return FeatureFlag(**base)  # type: ignore[arg-type]


def test_load_activity_reads_requests_sessions_users(store: Store, activity: Activity, events: list) -> None:
    n_req = sum(1 for _, f in events if f.get("actionType") == "claude_interaction" and f.get("userId"))
    assert activity.requests.height == n_req
    assert activity.sessions.height == sum(1 for _, f in events if f.get("action") == "session_start")
    assert activity.sessions["duration_s"].to_list() == [600.0] * activity.sessions.height
    assert activity.sessions["exposures"].str.contains("exp").all()
    metric = dict(zip(activity.users["user_id"], activity.users["tokens_metric"], strict=True))
    # 100 -> 150 (+50), stale marker, reset to 20 (+20), 70 (+50), 70; the series existed at the
    # window start, so its first value is not an increase
    assert metric["user-00001"] == 120.0
    # born after the window start: counted from 0 (500), then +300
    assert metric["user-09999"] == 800.0
    ids = store_user_ids(store)
    assert "user-09999" in ids and "user-00080" in ids and len(ids) == 81


def brute_force(events: list, flag: FeatureFlag, pct: float) -> dict[str, float]:
    f = flag.with_percentage(pct)
    users: set[str] = set()
    sessions = requests = tokens = 0
    for _, e in events:
        if not e.get("userId"):
            continue
        ctx = {"userId": e["userId"], "userSegment": e.get("userSegment"), "environment": e.get("environment")}
        if not is_enabled(f, ctx):
            continue
        if e.get("actionType") == "claude_interaction":
            users.add(str(e["userId"]))
            requests += 1
            tokens += int(e["tokens"])  # type: ignore[call-overload]
        elif e.get("action") == "session_start":
            users.add(str(e["userId"]))
            sessions += 1
    # user-09999 is known only from a metric label: no segment, the default environment
    if is_enabled(f, {"userId": "user-09999", "environment": "production"}):
        users.add("user-09999")
    return {"users": len(users), "sessions": sessions, "requests": requests, "tokens": tokens}


@pytest.mark.parametrize("flag", [
    _flag(),
    _flag(user_segments=("premium", "beta_testers")),
    _flag(environments=("development",)),
    load_flags()["enable_realtime_collaboration"],
])
def test_exposure_equals_brute_force_and_is_monotonic(activity: Activity, events: list, flag: FeatureFlag) -> None:
    pcts = [0, 5, 12.5, 30, 50, 75, 99, 100]
    out = exposure_backtest(activity, flag, pcts, usd_per_million_tokens=10.0)
    totals = out.filter(pl.col("segment") == "*").sort("percentage")
    assert totals["percentage"].to_list() == [float(p) for p in pcts]
    for row in totals.iter_rows(named=True):
        want = brute_force(events, flag, row["percentage"])
        assert {k: row[k] for k in want} == want, row["percentage"]
        assert math.isclose(row["cost_usd"], row["tokens"] * 10.0 / 1e6)
    for col in ("users", "sessions", "requests", "tokens"):
        assert (np.diff(totals[col].to_numpy()) >= 0).all()
    # per segment x environment rows add up to the totals
    parts = out.filter(pl.col("segment") != "*").group_by("percentage").agg(pl.col("requests", "tokens").sum())
    joined = parts.join(totals, on="percentage", suffix="_total")
    assert (joined["requests"] == joined["requests_total"]).all()
    assert (joined["tokens"] == joined["tokens_total"]).all()


def test_disabled_flag_is_switched_on_unless_as_configured(activity: Activity) -> None:
    off = _flag(enabled=False)
    on_rows = exposure_backtest(activity, off, [100]).filter(pl.col("segment") == "*")
    assert on_rows["requests"].item() > 0
    kept = exposure_backtest(activity, off, [100], as_configured=True).filter(pl.col("segment") == "*")
    assert kept["requests"].item() == 0


def test_capacity_equals_brute_force_per_minute(activity: Activity, events: list) -> None:
    flag = _flag()
    pcts = [0, 20, 40, 60, 80, 100]
    cap = capacity_backtest(activity, flag, pcts, rate_limit_per_minute=30, max_tokens_per_request=4000)
    first = min(t for t, e in events if e.get("actionType") == "claude_interaction" and e.get("userId")) // 60_000
    last = max(t for t, e in events if e.get("actionType") == "claude_interaction" and e.get("userId")) // 60_000
    for row in cap.iter_rows(named=True):
        f = flag.with_percentage(row["percentage"])
        per_min: Counter[int] = Counter()
        big = n = 0
        for t, e in events:
            if e.get("actionType") != "claude_interaction" or not e.get("userId"):
                continue
            if is_enabled(f, {"userId": e["userId"], "userSegment": e["userSegment"], "environment": e["environment"]}):
                per_min[t // 60_000] += 1
                n += 1
                big += int(e["tokens"]) > 4000  # type: ignore[call-overload]
        assert row["requests"] == n
        assert row["minutes"] == last - first + 1
        assert row["peak_requests_per_minute"] == max(per_min.values(), default=0)
        assert row["minutes_over_limit"] == sum(1 for v in per_min.values() if v > 30)
        assert row["requests_over_max_tokens"] == big
    assert cap["minutes_over_limit"].to_list()[-1] >= 1  # the burst crosses 30/min at 100 %
    safe = largest_safe_percentage(cap, tolerance=0.0)
    first_bad = cap.filter(pl.col("minutes_over_limit") > 0)["percentage"].min()
    assert safe is not None and safe < first_bad  # type: ignore[operator]
    assert largest_safe_percentage(cap, tolerance=1.0) == 100.0
    # the seed's default limit (100/min): the burst (3 requests from each of ~50 eligible users)
    # crosses it at some percentage; the safe one is the last before the first peak over 100
    default = capacity_backtest(activity, flag, pcts)
    peaks = dict(zip(default["percentage"], default["peak_requests_per_minute"], strict=True))
    want = max(p for p in peaks if all(peaks[q] <= 100 for q in peaks if q <= p))
    assert largest_safe_percentage(default) == want < 100
    assert largest_safe_percentage(cap, tolerance=0.0, include_token_limit=True) in (None, 0.0, 20.0, 40.0)


def test_bad_inputs(activity: Activity) -> None:
    for bad in ([101], [-1], [], [float("nan")]):
        with pytest.raises(UsageError):
            exposure_backtest(activity, _flag(), bad)
    with pytest.raises(UsageError):
        capacity_backtest(activity, _flag(), [10], rate_limit_per_minute=0)
    cap = capacity_backtest(activity, _flag(), [10])
    with pytest.raises(UsageError):
        largest_safe_percentage(cap, tolerance=1.5)


def test_empty_history() -> None:
    with Store(":memory:") as st:
        act = load_activity(st)
    assert act.requests.is_empty()
    cap = capacity_backtest(act, _flag(), [0, 50])
    assert cap["requests"].to_list() == [0, 0]
    exp = exposure_backtest(act, _flag(), [0, 50])
    assert exp.filter(pl.col("segment") == "*")["users"].to_list() == [0, 0]


def test_window_filters_history(store: Store) -> None:
    act = load_activity(store, T0 + 30 * 60_000, T0 + 31 * 60_000)
    assert act.requests.height >= 80 * 3  # the burst minute
    assert (act.requests["ts"] >= T0 + 30 * 60_000).all() and (act.requests["ts"] < T0 + 31 * 60_000).all()
    by_user = defaultdict(int)
    for u in act.requests["user_id"]:
        by_user[u] += 1
    assert min(by_user.values()) >= 3
