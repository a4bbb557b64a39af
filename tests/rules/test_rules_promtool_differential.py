"""Differential test: our alert predictions must pass the real ``promtool test rules`` (2.x mode),
and deliberately wrong predictions must fail there, alert by alert."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rules.rules_case_gen import make_batches, write_batch
from vfanalytics.promtool_tests import run_test_file

PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
pytestmark = pytest.mark.integration

N_BATCHES = 12
PER_BATCH = 45  # 540 cases


def _promtool(files: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "test", "rules", *[f.name for f in files]], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    d = tmp_path_factory.mktemp("promtool_diff")
    rng = random.Random(4242)
    right, wrong = [], []
    for b, (cases, interval_s, eval_s) in enumerate(make_batches(20261203, N_BATCHES, PER_BATCH)):
        p, pw, falsified = write_batch(d, b, cases, interval_s=interval_s, eval_s=eval_s, rng=rng)
        right.append((p, cases))
        wrong.append((pw, falsified))
    return d, right, wrong


def test_predictions_pass_real_promtool(batches) -> None:
    d, right, _ = batches
    n_cases = sum(len(c) for _, c in right)
    n_checks = sum(len(case.eval_times) for _, c in right for case in c)
    n_firing = sum(1 for _, c in right for case in c for t in case.eval_times if case.predicted[t])
    assert n_cases >= 500
    # the cases must exercise both verdicts, or the comparison proves little
    assert n_firing > n_checks * 0.2, (n_firing, n_checks)
    proc = _promtool([p for p, _ in right], d)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_wrong_predictions_fail_real_promtool_each(batches) -> None:
    d, _, wrong = batches
    proc = _promtool([p for p, _ in wrong], d)
    assert proc.returncode != 0
    reported = set(re.findall(r"alertname: (A\d+), time:", proc.stdout + proc.stderr))
    falsified = set().union(*[f for _, f in wrong])
    assert len(falsified) >= 500
    assert reported == falsified


def test_our_runner_gives_promtools_verdicts(batches) -> None:
    """`vfa rules test` on the same files: every right file passes, every wrong one fails."""
    d, right, wrong = batches
    for p, _ in right[:2]:
        assert all(r.passed for r in run_test_file(p))
    for p, falsified in wrong[:2]:
        results = run_test_file(p)
        failed = {m.group(1) for r in results for f in r.failures for m in [re.search(r"alertname: (A\d+)", f)] if m}
        assert failed == falsified
