"""The vectorised alert state machine against a literal transcription of rules/alerting.go Eval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfanalytics.backtest import alert_state_at, episodes_from_mask, evaluate_alert_matrix
from vfanalytics.rules import Rule

RESOLVED_RETENTION_MS = 15 * 60_000


def reference_eval(present: np.ndarray, interval: int, hold: int, keep: int, limit: int = 0):
    """Per tick, Prometheus' Eval: returns [(tick, {row: (state, active_at)})] of active alerts."""
    active: dict[int, dict] = {}
    history = []
    for i in range(present.shape[1]):
        ts = i * interval
        result = set(np.flatnonzero(present[:, i]).tolist())
        for h in result:
            a = active.get(h)
            if a is not None and a["state"] != "inactive":
                continue
            active[h] = {"state": "pending", "active_at": ts, "keep_since": None, "resolved_at": None}
        num = 0
        snapshot = {}
        for h in list(active):
            a = active[h]
            if h not in result:
                keep_firing = False
                if a["state"] == "firing" and keep > 0:
                    if a["keep_since"] is None:
                        a["keep_since"] = ts
                    if ts - a["keep_since"] < keep:
                        keep_firing = True
                if a["state"] == "pending" or (a["resolved_at"] is not None and ts - a["resolved_at"] > RESOLVED_RETENTION_MS):
                    del active[h]
                if a["state"] != "inactive" and not keep_firing:
                    a["state"] = "inactive"
                    a["resolved_at"] = ts
                if not keep_firing:
                    continue
            else:
                a["keep_since"] = None
            num += 1
            if a["state"] == "pending" and ts - a["active_at"] >= hold:
                a["state"] = "firing"
            snapshot[h] = (a["state"], a["active_at"])
        if limit > 0 and num > limit:
            active = {}
            snapshot = {}
        history.append(snapshot)
    return history


def ours(present: np.ndarray, interval: int, hold: int, keep: int, limit: int = 0):
    n, m = present.shape
    rule = Rule(kind="alert", name="A", expr="x > 0", for_ms=hold, keep_firing_for_ms=keep)
    keys = [f'{{"i":"{i:03d}"}}' for i in range(n)]
    ticks = np.arange(m, dtype=np.int64) * interval
    vals = np.where(present, 1.0, np.nan)
    rr = evaluate_alert_matrix(rule, "g", keys, vals, present, ticks, interval, limit)
    hist = []
    for i in range(m):
        snap = {}
        for state, labels, _ in alert_state_at(rr, i):
            row = int(labels["i"])
            ep = rr.episodes
            k = [j for j in range(len(ep["row"])) if ep["row"][j] == row and ep["pending_idx"][j] <= i < ep["end_idx"][j]]
            snap[row] = (state, int(ticks[ep["pending_idx"][k[0]]]))
        hist.append(snap)
    return hist


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.lists(st.booleans(), min_size=30, max_size=30), min_size=1, max_size=4),
    interval=st.sampled_from([15_000, 30_000, 60_000]),
    hold=st.sampled_from([0, 15_000, 60_000, 90_000, 120_000, 300_000]),
    keep=st.sampled_from([0, 15_000, 60_000, 100_000, 180_000]),
)
def test_matches_alerting_go(data, interval, hold, keep) -> None:
    present = np.array(data, dtype=bool)
    assert ours(present, interval, hold, keep) == reference_eval(present, interval, hold, keep)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.lists(st.booleans(), min_size=20, max_size=20), min_size=2, max_size=5),
    hold=st.sampled_from([0, 60_000, 120_000]),
    limit=st.integers(1, 3),
)
def test_limit_matches_alerting_go(data, hold, limit) -> None:
    present = np.array(data, dtype=bool)
    assert ours(present, 60_000, hold, 0, limit) == reference_eval(present, 60_000, hold, 0, limit)


def test_episode_boundaries_by_hand() -> None:
    #        t: 0  1  2  3  4  5  6  7  8  9
    mask = np.array([[1, 1, 1, 0, 0, 1, 0, 1, 1, 1]], dtype=bool)
    ep = episodes_from_mask(mask, for_ticks=1, keep_ticks=0)
    assert ep["pending_idx"].tolist() == [0, 5, 7]
    assert ep["firing_idx"].tolist() == [1, -1, 8]
    assert ep["end_idx"].tolist() == [3, 6, 10]  # 10 = still firing at the end
    # keep_firing_for of 2 ticks bridges the 2-tick gap after a fired run, not a pending one
    ep = episodes_from_mask(mask, for_ticks=1, keep_ticks=2)
    assert ep["pending_idx"].tolist() == [0]
    assert ep["end_idx"].tolist() == [10]
    ep = episodes_from_mask(mask, for_ticks=3, keep_ticks=2)
    assert ep["firing_idx"].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("for_ms,expect_fire", [(0, 0), (60_000, 1), (61_000, 2), (120_000, 2)])
def test_for_is_ceil_of_interval(for_ms, expect_fire) -> None:
    ep = episodes_from_mask(np.ones((1, 5), dtype=bool), for_ticks=-(-for_ms // 60_000), keep_ticks=0)
    assert ep["firing_idx"].tolist() == [expect_fire]
