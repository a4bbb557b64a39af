"""Report runs shared by the report tests: every notebook once on the small demo, and a hostile-label store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vfanalytics.logs import parse_log_lines
from vfanalytics.reports import REPORTS, RunSummary, run_reports
from vfanalytics.series import canonical_labels
from vfanalytics.store import Store

#: a user id that would run script if any page put it into markup unescaped
HOSTILE_USER = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


@pytest.fixture(scope="session")
def demo_reports(small_demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> RunSummary:
    """``vfa report all`` on the small demo (each cell at most 120 s)."""
    out = tmp_path_factory.mktemp("reports")
    return run_reports(list(REPORTS), store=small_demo_store, out_root=out, cell_timeout_s=120)


@pytest.fixture(scope="session")
def hostile_store(small_demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo plus one huge Claude request by a user whose id is markup."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.duckdb"
    shutil.copy(small_demo_store, path)
    line = json.dumps({"timestamp": "2026-11-02T12:00:00.000Z", "level": "info", "service": "backend",
                       "message": "Claude interaction: chat", "actionType": "claude_interaction",
                       "operation": "chat", "projectId": "proj-<b>bold</b>", "duration": 900, "success": True,
                       "tokens": 50_000_000, "userId": HOSTILE_USER, "userTier": "free", "userSegment": "free",
                       "environment": "production"})
    stream = canonical_labels({"service": "backend", "env": "production", "level": "info"})
    with Store(path) as st:
        st.insert_logs(parse_log_lines([1_793_620_800_000_000_000], [stream], [line]))
    return path


@pytest.fixture(scope="session")
def hostile_report(hostile_store: Path, tmp_path_factory: pytest.TempPathFactory) -> RunSummary:
    out = tmp_path_factory.mktemp("hostile-reports")
    return run_reports(["token_usage"], store=hostile_store, out_root=out, cell_timeout_s=120)
