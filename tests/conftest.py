"""Shared fixtures: the small demo store and its export, generated once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vfanalytics.demo import PRESETS, generate_demo
from vfanalytics.demo_export import export_store
from vfanalytics.store import Store

REPO = Path(__file__).resolve().parent.parent
#: the shared/ folder beside the checkout (seed, promqltest, loki recordings); VFA_SHARED overrides
SHARED = Path(os.environ.get("VFA_SHARED", REPO.parent / "shared"))
SEED = SHARED / "reference" / "vaporform"


def require_binary(name: str) -> str:
    """Path of an external program, or skip the test with the reason (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it from Debian)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared/ not found at {SHARED} (set VFA_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def seed_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "vaporform"


@pytest.fixture(scope="session")
def small_demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the ``--preset small`` demo fleet (2 days, 30 users, 60 s scrapes, seed 7).

    Open it read-only in tests (``Store(path, read_only=True)``) and close it again.
    """
    path = tmp_path_factory.mktemp("demo") / "small.duckdb"
    with Store(path) as st:
        generate_demo(st, PRESETS["small"])
    return path


@pytest.fixture(scope="session")
def small_demo_export(small_demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vfa demo export`` of the small demo: metrics.om, loki/*.json, incidents.csv, near_misses.csv."""
    out = tmp_path_factory.mktemp("export")
    with Store(small_demo_store, read_only=True) as st:
        export_store(st, out)
    return out
