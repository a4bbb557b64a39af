"""Fixtures of the rollout tests: a synthetic history with known truth, and the demo store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vfanalytics.logs import parse_log_lines
from vfanalytics.series import STALE_NAN
from vfanalytics.store import Store

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z
SEGMENTS = ["free", "premium", "enterprise", "beta_testers"]
ENVS = ["production", "production", "production", "staging", "development"]


def _line(**fields: object) -> str:
    return json.dumps(fields)


def build_events(seed: int = 11, users: int = 80) -> list[tuple[int, dict[str, object]]]:
    """(ts_ms, fields) of claude_interaction and session lines; a burst in minute 30."""
    rng = np.random.default_rng(seed)
    events: list[tuple[int, dict[str, object]]] = []
    for u in range(1, users + 1):
        uid = f"user-{u:05d}"
        seg = SEGMENTS[u % 4]
        ctx = {"userId": uid, "userSegment": seg, "userTier": "free" if seg == "beta_testers" else seg,
               "environment": ENVS[u % 5]}
        for s in range(int(rng.integers(1, 4))):
            start = T0 + int(rng.integers(0, 3_600_000))
            sid = f"s-{u}-{s}"
            events.append((start, {**ctx, "actionType": "user_action", "action": "session_start", "sessionId": sid,
                                   "flagExposures": {"exp": bool(u % 3 == 0)}}))
            events.append((start + 600_000, {**ctx, "actionType": "user_action", "action": "session_end",
                                             "sessionId": sid, "sessionDuration": 600.0}))
        for _ in range(int(rng.integers(0, 30))):
            tok = int(rng.integers(100, 6000))
            events.append((T0 + int(rng.integers(0, 7_200_000)),
                           {**ctx, "actionType": "claude_interaction", "operation": "chat", "tokens": tok,
                            "success": True, "projectId": "p1"}))
        # everyone fires 3 requests in minute 30: a burst that crosses a low rate limit
        for k in range(3):
            events.append((T0 + 30 * 60_000 + 1000 * k + u,
                           {**ctx, "actionType": "claude_interaction", "operation": "chat", "tokens": 50,
                            "success": True, "projectId": "p1"}))
    # an anonymous-context line and an unrelated line must not break anything
    events.append((T0 + 5, {"actionType": "claude_interaction", "tokens": 10, "success": True}))
    events.append((T0 + 6, {"actionType": "performance_metric", "metric": "event_loop_lag", "value": 3.0}))
    return sorted(events, key=lambda e: e[0])


def write_synthetic_store(path: Path | str, events: list[tuple[int, dict[str, object]]]) -> None:
    """Logs of ``events`` plus a token counter: user-00001 with a staleness marker and a reset,
    user-09999 known only from metric labels."""
    with Store(path) as st:
        ts = [t * 1_000_000 + i for i, (t, _) in enumerate(events)]
        st.insert_logs(parse_log_lines(ts, ['{"service":"backend"}'] * len(events), [_line(**f) for _, f in events]))
        a, b = st.add_series([
            {"__name__": "vaporform_claude_tokens_used_total", "user_id": "user-00001", "project_id": "p1",
             "operation_type": "chat"},
            {"__name__": "vaporform_claude_tokens_used_total", "user_id": "user-09999", "project_id": "p2",
             "operation_type": "chat"},
        ])
        st.insert_samples(pl.DataFrame({
            "series_id": [a] * 6 + [b] * 2,
            "ts": [T0, T0 + 15_000, T0 + 30_000, T0 + 45_000, T0 + 60_000, T0 + 75_000, T0 + 15_000, T0 + 30_000],
            "value": [100.0, 150.0, STALE_NAN, 20.0, 70.0, 70.0, 500.0, 800.0],
        }))


@pytest.fixture(scope="session")
def events() -> list[tuple[int, dict[str, object]]]:
    return build_events()


@pytest.fixture(scope="session")
def synthetic_store_path(tmp_path_factory: pytest.TempPathFactory, events: list) -> Path:
    path = tmp_path_factory.mktemp("rollout") / "synthetic.duckdb"
    write_synthetic_store(path, events)
    return path


@pytest.fixture(scope="session")
def demo_store_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lead's ``small_demo_store`` when the project conftest provides it, else a one-day demo."""
    try:
        return Path(request.getfixturevalue("small_demo_store"))
    except pytest.FixtureLookupError:
        pass
    try:
        from vfanalytics.demo import DemoConfig, generate_demo
    except ImportError as exc:  # pragma: no cover - the demo module is part of the package
        pytest.skip(f"demo generator unavailable: {exc}")
    path = tmp_path_factory.mktemp("rollout-demo") / "demo.duckdb"
    with Store(path) as st:
        generate_demo(st, DemoConfig(days=1, users=30, seed=7))
    return path


@pytest.fixture
def no_progress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("VFA_NO_PROGRESS", "1")
    yield
