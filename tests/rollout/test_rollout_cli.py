"""``vfa rollout``: exit codes, one-line errors, written results, and the demo store end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from vfanalytics.cli import main
from vfanalytics.exposure import capacity_backtest, largest_safe_percentage, load_activity
from vfanalytics.rollout import bucket, load_flags
from vfanalytics.store import Store

pytestmark = pytest.mark.usefixtures("no_progress")

DEMO_FLAG = """flags:
  - key: enable_smart_context
    name: Smart Context
    description: Send a smarter project context with each Claude request
    enabled: true
    rolloutPercentage: 30
    userSegments: [all]
    environments: [production, staging]
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_bucket_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rollout", "bucket", "user-00042", "", "--flag", "enable_claude_integration", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["bucket"] for r in rows] == bucket(["user-00042", None]).tolist() == [44, 75]
    assert rows[1]["hash_user"] == 2095811475 and rows[0]["enabled"] is True


def test_flags_command_lists_seed_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rollout", "flags", "--json"], capsys)
    assert code == 0
    assert [f["key"] for f in json.loads(out)] == list(load_flags())


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["rollout", "backtest", "--flag", "nope"], "unknown flag key 'nope'"),
        (["rollout", "backtest", "--flag", "enable_claude_integration", "--percentages", "0:120:10"], "0 to 100"),
        (["rollout", "backtest", "--flag", "enable_claude_integration", "--percentages", "abc"], "START:STOP"),
        (["rollout", "backtest", "--flag", "enable_claude_integration", "--tolerance", "2"], "--tolerance"),
        (["rollout", "backtest", "--flag", "enable_claude_integration", "--rate-limit", "0"], "--rate-limit"),
        (["rollout", "quality", "--percentage", "101"], "--percentage"),
        (["rollout", "quality", "--overlap-percentages", "5,x"], "--overlap-percentages"),
        (["rollout", "impact", "--flag", "enable_claude_integration"], "no logged exposure"),
        (["rollout", "bucket"], "give user ids"),
        (["rollout", "backtest"], "--flag"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str],
                                         synthetic_store_path: Path) -> None:
    code, _, err = run([*argv, "--store", str(synthetic_store_path)] if argv[1] != "bucket" else argv, capsys)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "where"),
    [("flags:\n  - key: a\n    rolloutPercentage: 150\n", ":2: "), ("[{]\n", ":1: "), ("flags: [1]\n", ":1: ")],
)
def test_malformed_flag_file_exits_2(tmp_path: Path, text: str, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / ("f.json" if text.startswith("[") else "f.yml")
    path.write_text(text)
    code, _, err = run(["rollout", "flags", "--flags", str(path)], capsys)
    assert code == 2 and f"{path}{where}" in err


def test_backtest_writes_results(tmp_path: Path, synthetic_store_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bt"
    code, stdout, _ = run(["rollout", "backtest", "--flag", "enable_claude_integration", "--percentages", "0:100:25",
                           "--store", str(synthetic_store_path), "--rate-limit", "50", "--out", str(out)], capsys)
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    with Store(synthetic_store_path, read_only=True) as st:
        cap = capacity_backtest(load_activity(st), load_flags()["enable_claude_integration"],
                                [0, 25, 50, 75, 100], rate_limit_per_minute=50)
    assert summary["largest_safe_percentage"] == largest_safe_percentage(cap)
    assert summary["rate_limit_per_minute"] == 50 and summary["max_tokens_per_request"] == 4000
    rows = list(csv.DictReader((out / "exposure.csv").open()))
    assert {r["percentage"] for r in rows} == {"0.0", "25.0", "50.0", "75.0", "100.0"}
    assert pl.read_csv(out / "capacity.csv")["requests"].to_list() == cap["requests"].to_list()
    assert "largest safe percentage" in stdout


def test_demo_store_end_to_end(tmp_path: Path, demo_store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags_file = tmp_path / "demo_flags.yml"
    flags_file.write_text(DEMO_FLAG)
    out = tmp_path / "demo"
    code, stdout, err = run(["rollout", "backtest", "--flag", "enable_claude_integration", "--store",
                             str(demo_store_path), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    totals = [r for r in result["exposure"] if r["segment"] == "*"]
    assert [r["percentage"] for r in totals] == [float(p) for p in range(0, 101, 5)]
    assert all(b["requests"] >= a["requests"] for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1]["requests"] > 0
    assert result["largest_safe_percentage"] is not None

    code, stdout, err = run(["rollout", "quality", "--store", str(demo_store_path), "--json"], capsys)
    assert code == 0, err
    q = json.loads(stdout)
    assert q["platform"]["not_random"] and q["platform"]["lag1_correlation"] > 0.5

    code, stdout, err = run(["rollout", "impact", "--flag", "enable_smart_context", "--flags", str(flags_file),
                             "--store", str(demo_store_path), "--resamples", "200", "--json"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    # the demo logged exposure with the platform's bucketing: the evaluator must agree on every user
    assert r["prediction_mismatches"] == 0
    assert any("not random" in w for w in r["warnings"])
