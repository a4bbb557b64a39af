"""The vectorised sweep against grid-point-by-grid-point replays through the state machine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfanalytics.backtest import ceil_ticks, episodes_from_mask
from vfanalytics.tuning import (
    SweepGrid,
    compare,
    default_grid,
    pareto_front,
    recommend,
    replace_threshold,
    score_episodes,
    split_threshold,
    sweep,
)


def reference(values, ticks, grid, op, interval, inc_s, inc_e, lm):
    out = []
    end_time = np.append(ticks, ticks[-1] + interval)
    for th in grid.thresholds:
        mask = compare(values, op, th)
        for f in grid.fors:
            for k in grid.keeps:
                ep = episodes_from_mask(mask, ceil_ticks(f, interval), ceil_ticks(k, interval))
                fired = ep["firing_idx"] >= 0
                s = score_episodes(ep["row"][fired], ticks[ep["firing_idx"][fired]], end_time[ep["end_idx"][fired]],
                                   incident_start=inc_s, incident_end=inc_e, label_match=lm,
                                   range_ms=int(ticks[-1] - ticks[0] + interval))
                out.append((th, f, k, s))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_sweep_equals_state_machine_per_grid_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, interval = 5, 400, 60_000
    values = rng.normal(1.0, 0.6, (n, m)).cumsum(axis=1) * 0.05 + rng.normal(0, 0.4, (n, m))
    values[rng.random((n, m)) < 0.05] = np.nan  # missing points
    ticks = 1_790_000_000_000 + np.arange(m, dtype=np.int64) * interval
    inc_s = np.sort(rng.choice(ticks, 4, replace=False))
    inc_e = inc_s + rng.integers(5, 60, 4) * interval
    lm = rng.random((n, 4)) < 0.7
    grid = SweepGrid([float(x) for x in np.quantile(values[~np.isnan(values)], [0.3, 0.6, 0.9])],
                     [0, 60_000, 90_000, 300_000], [0, 120_000, 300_000])
    got = sweep(values, ticks, grid, ">", interval_ms=interval, incident_start=inc_s, incident_end=inc_e,
                label_match=lm)
    ref = reference(values, ticks, grid, ">", interval, inc_s, inc_e, lm)
    assert got.height == len(ref)
    for row, (th, f, k, s) in zip(got.iter_rows(named=True), ref, strict=True):
        assert (row["threshold"], row["for_ms"], row["keep_firing_for_ms"]) == (th, f, k)
        for key, v in s.items():
            assert (math.isnan(v) and math.isnan(row[key])) or row[key] == pytest.approx(v), (key, th, f, k)


def test_scoring_by_hand() -> None:
    h = 3_600_000
    # two label sets; incident 0 on row 0 at [10h, 11h], incident 1 on row 1 at [20h, 21h]
    rows = np.array([0, 0, 1])
    firing = np.array([10 * h + 600_000, 15 * h, 30 * h])
    resolved = np.array([10 * h + 1_200_000, 15 * h + 600_000, 31 * h])
    s = score_episodes(rows, firing, resolved, incident_start=np.array([10 * h, 20 * h]),
                       incident_end=np.array([11 * h, 21 * h]), label_match=np.array([[1, 0], [0, 1]], bool),
                       range_ms=7 * 24 * h, lead_ms=0)
    assert s["pages"] == 3 and s["pages_per_week"] == pytest.approx(3)
    assert s["true_positives"] == 1 and s["false_positives"] == 2
    assert s["detected"] == 1 and s["missed"] == 1 and s["recall"] == 0.5
    assert s["precision"] == pytest.approx(1 / 3)
    assert s["f_beta"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert s["ttd_median_ms"] == 600_000
    assert s["firing_ms"] == 600_000 + 600_000 + h
    assert s["flaps"] == 0  # 15h is more than 30 min after the 10h20 resolve


def test_split_and_replace_threshold_keep_text() -> None:
    s = split_threshold('sum by (job) (rate(x{a=">"}[5m])) >= 0.25')
    assert (s.lhs, s.op, s.threshold, s.number_on_left) == ('sum by (job) (rate(x{a=">"}[5m]))', ">=", 0.25, False)
    assert replace_threshold('rate(x[5m])  >  0.1', 0.35) == "rate(x[5m])  >  0.35"
    s = split_threshold("0.8 < a / b")
    assert (s.lhs, s.op, s.threshold, s.number_on_left) == ("a / b", ">", 0.8, True)
    assert replace_threshold("0.8 < a / b", 2.0) == "2 < a / b"
    assert split_threshold("a > bool 1") is None
    assert split_threshold("a > b") is None
    assert split_threshold("absent(up)") is None
    assert split_threshold("up == 0").op == "=="


def test_default_grid_sizes_and_current_point() -> None:
    v = np.random.default_rng(1).gamma(2.0, 1.0, (20, 1000))
    g = default_grid(v, ">", 3.0, 120_000, 0)
    assert len(g.thresholds) <= 40 and 3.0 in g.thresholds
    assert len(g.fors) == 6 and 120_000 in g.fors
    assert len(g.keeps) == 3 and 0 in g.keeps
    assert g.size <= 720
    eq = default_grid(v, "==", 0.0, 60_000, 0)
    assert eq.thresholds == [0.0]


def test_recommend_respects_constraints_and_explains() -> None:
    rng = np.random.default_rng(5)
    n, m, interval = 3, 20_000, 60_000  # two weeks at 1m
    values = rng.gamma(2.0, 0.5, (n, m))
    ticks = 1_790_000_000_000 + np.arange(m, dtype=np.int64) * interval
    inc_s = ticks[[3000, 9000, 15000]]
    for t in (3000, 9000, 15000):
        values[0, t:t + 20] += 10.0  # real incidents lift row 0 for 20 minutes
    inc_e = inc_s + 20 * interval
    lm = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)
    grid = default_grid(values, ">", 1.0, 60_000, 0)
    scores = sweep(values, ticks, grid, ">", interval_ms=interval, incident_start=inc_s, incident_end=inc_e,
                   label_match=lm)
    cur = {"threshold": 1.0, "for_ms": 60_000, "keep_firing_for_ms": 0}
    rec = recommend("R", "g", scores, cur, max_pages_per_week=5, min_recall=1.0)
    assert rec.chosen["recall"] == 1.0 and rec.chosen["pages_per_week"] <= 5
    assert rec.current["pages_per_week"] > 5  # the rule as written pages on noise
    assert rec.changed and "recall 3/3" in rec.reason
    front = pareto_front(scores)
    assert 0 < front.height < scores.height
    impossible = recommend("R", "g", scores, cur, max_pages_per_week=0.0, min_recall=1.0)
    assert impossible.feasible == 0 and impossible.reason.startswith("no grid point meets")


def test_tune_side_by_side_equals_one_rule_at_a_time(small_demo_store) -> None:  # noqa: ANN001
    from pathlib import Path

    from vfanalytics.rules import load_rule_files
    from vfanalytics.store import Store
    from vfanalytics.tuning_pipeline import tune

    rfs = load_rule_files([Path(__file__).resolve().parents[2] / "data" / "rules" / "vaporform-alerts.yml"])
    with Store(small_demo_store, read_only=True) as st:
        info = st.info()
        start = (info["samples_start_ms"] // 60_000 + 10) * 60_000
        end = start + 24 * 3_600_000
        runs = {n: tune(rfs, st, start, end, incidents=st.incidents(), evaluation_interval_ms=15_000,
                        prometheus_version=2, concurrency=n) for n in (1, 3)}
    assert runs[1].table().equals(runs[3].table())
    assert [[(f.code, f.confirmed) for f in it.findings] for it in runs[1].items] == \
        [[(f.code, f.confirmed) for f in it.findings] for it in runs[3].items]
    assert sum(len(it.findings) for it in runs[3].items) >= 4
