"""Bucketing quality, overlap, SRM and impact, on populations whose truth is known."""

from __future__ import annotations

import json
import uuid

import mmh3
import numpy as np
import polars as pl
import pytest
from scipy import stats

from vfanalytics.bucketing import bucketing_quality, impact, overlap_matrix, salted_bucket, srm_test
from vfanalytics.exceptions import UsageError
from vfanalytics.exposure import Activity, load_activity
from vfanalytics.logs import parse_log_lines
from vfanalytics.rollout import FeatureFlag, bucket
from vfanalytics.store import Store

SEQUENTIAL = [f"user-{i:05d}" for i in range(1, 5001)]
_RNG = np.random.default_rng(1)
RANDOM_IDS = [str(uuid.UUID(bytes=_RNG.bytes(16), version=4)) for _ in range(5000)]


def test_platform_hash_on_sequential_ids_is_not_random() -> None:
    q = bucketing_quality(SEQUENTIAL, percentage=30, window=10)
    assert q["n"] == 5000
    assert q["lag1_correlation"] > 0.8
    assert q["dispersion_index"] > 3 and q["dispersion_pvalue"] < 1e-6
    assert q["share_windows_all_or_none"] > 5 * q["expected_all_or_none"]
    assert q["not_random"]
    assert q["anonymous_bucket"] == 75 and not q["anonymous_exposed_at_percentage"]
    assert q["special_ids"] == {"": 75, "undefined": int(bucket("undefined")[0]), "null": int(bucket("null")[0]),
                                "0": 48}
    # consecutive ids fill the buckets round-robin: too uniform, not too lumpy
    assert q["chi2_pvalue"] > 0.5


def test_salted_hash_on_sequential_ids_is_random() -> None:
    q = bucketing_quality(SEQUENTIAL, percentage=30, window=10, salt_key="enable_smart_context")
    assert abs(q["lag1_correlation"]) < 0.05
    assert 0.5 < q["dispersion_index"] < 1.5
    assert q["chi2_pvalue"] > 0.001
    assert not q["not_random"]
    assert q["method"].startswith("salted murmur3")


def test_platform_hash_on_random_ids_looks_random() -> None:
    # the measures are not hard-wired to the platform hash: random ids pass
    q = bucketing_quality(RANDOM_IDS, percentage=30, window=10)
    assert not q["not_random"], q
    assert q["chi2_pvalue"] > 0.001


def test_quality_bad_input() -> None:
    with pytest.raises(UsageError):
        bucketing_quality(SEQUENTIAL, percentage=120)
    with pytest.raises(UsageError):
        bucketing_quality(["only-one", "", None])
    with pytest.raises(UsageError):
        bucketing_quality(SEQUENTIAL, window=1)


def test_small_population_notes_chi_square_limits() -> None:
    q = bucketing_quality(SEQUENTIAL[:30], percentage=30, window=10)
    assert "note" in q and q["n"] == 30


def test_salted_bucket_is_murmur3_of_key_and_id() -> None:
    ids = ["user-00001", "x", "", None]
    want = [mmh3.hash(f"k:{s or 'anonymous'}", 0, signed=False) % 100 for s in ids]
    assert salted_bucket("k", ids).tolist() == want
    # the salt decorrelates flags: another key puts almost every user in another bucket
    assert float(np.mean(salted_bucket("a", SEQUENTIAL) != salted_bucket("b", SEQUENTIAL))) > 0.95


def test_overlap_platform_nested_salted_independent() -> None:
    ids = [f"u{i}" for i in range(20_000)]
    pcts = {"a": 10.0, "b": 30.0, "c": 60.0}
    plat = overlap_matrix(pcts, ids)
    get = {(r["flag_a"], r["flag_b"]): r["overlap"] for r in plat.iter_rows(named=True)}
    assert get[("a", "b")] == get[("a", "c")] == get[("b", "c")] == 1.0  # every flag reaches the same users
    assert get[("c", "a")] == pytest.approx(float(np.mean(bucket(ids) < 10)) / float(np.mean(bucket(ids) < 60)))
    salted = overlap_matrix(pcts, ids, salted=True)
    for r in salted.iter_rows(named=True):
        if r["flag_a"] != r["flag_b"]:
            assert r["overlap"] == pytest.approx(r["independent"], abs=0.03)
    flags = [FeatureFlag("a", "A", "", True, 10, ("all",), ("production",))]
    assert overlap_matrix(flags, ids)["overlap"].to_list() == [1.0]


def test_srm_test_matches_chi_square() -> None:
    r = srm_test(2600, 7400, 0.30)
    assert r["chi2"] == pytest.approx((400**2) / 3000 + (400**2) / 7000)
    assert r["pvalue"] == pytest.approx(stats.chi2.sf(r["chi2"], 1))
    assert r["srm"]
    ok = srm_test(3000, 7000, 0.30)
    assert ok["chi2"] == 0 and not ok["srm"]
    with pytest.raises(UsageError):
        srm_test(1, 1, 1.5)
    assert not srm_test(0, 0, 0.3)["srm"]


T0 = 1_793_577_600_000


def experiment_activity(ids: list[str], *, uplift: float, drop_exposed_logs: float = 0.0,
                        team_effect: bool = False, seed: int = 4) -> Activity:
    """A store in which exposed users (bucket < 30) send `uplift` more tokens per request."""
    rng = np.random.default_rng(seed)
    exposed = bucket(ids) < 30
    ts: list[int] = []
    lines: list[str] = []
    for i, (uid, e) in enumerate(zip(ids, exposed, strict=True)):
        tier = "enterprise" if team_effect and (i // 20) % 2 == 0 else "free"
        ctx = {"userId": uid, "userSegment": tier, "userTier": tier, "environment": "production"}
        base = 1000.0 * (1.5 if tier == "enterprise" else 1.0)
        for s in range(3):
            t = T0 + int(rng.integers(0, 86_400_000))
            start = {**ctx, "actionType": "user_action", "action": "session_start", "sessionId": f"{uid}-{s}"}
            if not (e and rng.random() < drop_exposed_logs):
                start["flagExposures"] = {"exp": bool(e)}
            lines += [json.dumps(start), json.dumps({**ctx, "actionType": "user_action", "action": "session_end",
                                                      "sessionId": f"{uid}-{s}", "sessionDuration": 900.0})]
            ts += [t, t + 900_000]
        for _ in range(5):
            tok = int(rng.normal(base * (1 + uplift * e), 100))
            lines.append(json.dumps({**ctx, "actionType": "claude_interaction", "operation": "chat",
                                     "tokens": tok, "success": bool(rng.random() > 0.05)}))
            ts.append(T0 + int(rng.integers(0, 86_400_000)))
    with Store(":memory:") as st:
        st.insert_logs(parse_log_lines([t * 1_000_000 + k for k, t in enumerate(ts)], ['{"s":"b"}'] * len(ts), lines))
        return load_activity(st)


EXP = FeatureFlag("exp", "Exp", "", True, 30, ("all",), ("production", "staging"))


def test_impact_recovers_known_uplift_with_random_bucketing() -> None:
    act = experiment_activity(RANDOM_IDS[:400], uplift=0.15)
    r = impact(act, EXP, n_resamples=500)
    assert r["prediction_mismatches"] == 0
    assert not r["srm_users"]["srm"] and not r["srm_sessions"]["srm"]
    m = {row["metric"]: row for row in r["metrics"].iter_rows(named=True)}["tokens_per_request"]
    assert m["welch_ci_low"] < 150 < m["welch_ci_high"]
    assert m["bootstrap_ci_low"] < 150 < m["bootstrap_ci_high"]
    assert m["welch_ci_low"] > 0 and m["welch_pvalue"] < 1e-6
    assert not any("not random" in w for w in r["warnings"]), r["warnings"]


def test_impact_warns_on_sequential_ids_and_detects_srm() -> None:
    act = experiment_activity(SEQUENTIAL[:400], uplift=0.0, drop_exposed_logs=0.3, team_effect=True)
    r = impact(act, EXP, n_resamples=200)
    assert r["srm_sessions"]["srm"], r["srm_sessions"]
    assert r["sessions_without_logged_exposure"] > 0
    assert any("not random" in w for w in r["warnings"])
    assert any("sample ratio mismatch in sessions" in w for w in r["warnings"])
    assert r["metrics"].height == 5 and set(r["metrics"]["metric"]) >= {"tokens", "error_rate", "session_duration_s"}


def test_impact_without_logged_exposure_is_a_usage_error() -> None:
    act = experiment_activity(RANDOM_IDS[:20], uplift=0.0)
    other = FeatureFlag("never_logged", "N", "", True, 30, ("all",), ("production",))
    with pytest.raises(UsageError, match="no logged exposure"):
        impact(act, other)
    assert isinstance(act.sessions, pl.DataFrame)
