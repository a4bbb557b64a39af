"""The evaluator against Prometheus' own conformance cases (``../shared/promqltest``).

Every case inside the supported subset must pass; every skipped case must be
skipped for one of the justified reasons below (native histograms, the
experimental functions and aggregations, syntax newer than promql-parser,
annotations the evaluator does not produce).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vfanalytics.cli.promql import register
from vfanalytics.promql import run_file

SHARED = Path(os.environ.get("VFA_SHARED", Path(__file__).resolve().parents[3] / "shared"))
PROMQLTEST = SHARED / "promqltest"

#: why a case may be skipped; anything else is a regression
JUSTIFIED_SKIPS = [
    r"^native histograms$",
    r"^expected line: native histogram series values",
    r"^function histogram_(count|sum|avg|stddev|stdvar)\(\)$",  # native-histogram functions
    # outside the subset: histogram_fraction and the multi-quantile histogram_quantiles
    r"^function histogram_(fraction|quantiles)\(\)$",
    r"^function info\(\)$",
    # experimental functions and aggregations (--enable-feature=promql-experimental-functions)
    r"^function (sort_by_label|sort_by_label_desc|double_exponential_smoothing|ts_of_(first|last|min|max)_over_time"
    r"|min_of|max_of)\(\)$",
    r"^aggregation (limitk|limit_ratio)\(\)$",
    # duration expressions (--enable-feature=promql-duration-expr)
    r"^function (start|end|range|step)\(\)$",
    r"^syntax promql-parser 0\.12 cannot parse",
    r"^expects warn/info annotations",
]

FILES = sorted(PROMQLTEST.glob("*.test")) if PROMQLTEST.is_dir() else []

#: only the promql command group, as `vfa` registers it
app = typer.Typer()
register(app)



def _require_files() -> None:
    if not FILES:
        pytest.skip(f"no promqltest files at {PROMQLTEST} (set VFA_SHARED)")


@pytest.fixture(scope="module")
def results() -> dict[str, object]:
    _require_files()
    return {p.name: run_file(p) for p in FILES}


def test_no_failures(results: dict) -> None:
    failures = [f"{c.path}:{c.line}: {c.expr} -- {c.reason}" for r in results.values() for c in r.cases if c.status == "failed"]
    assert not failures, "\n".join(failures)


def test_skips_are_justified(results: dict) -> None:
    odd = [
        f"{c.path}:{c.line}: {c.expr} -- {c.reason}"
        for r in results.values()
        for c in r.cases
        if c.status == "skipped" and not any(re.search(p, c.reason) for p in JUSTIFIED_SKIPS)
    ]
    assert not odd, "\n".join(odd)


def test_the_subset_is_exercised(results: dict) -> None:
    passed = {name: r.passed for name, r in results.items()}
    assert sum(passed.values()) >= 750, passed
    # files entirely inside the subset pass completely
    for name in ("at_modifier.test", "literals.test", "selectors.test", "trig_functions.test",
                 "name_label_dropping.test", "collision.test"):
        if name in results:
            assert results[name].skipped == 0 and results[name].failed == 0, name


def test_cli_summary_line(tmp_path: Path) -> None:
    _require_files()
    out = CliRunner().invoke(app, ["promql", "conformance", str(PROMQLTEST / "literals.test"), str(PROMQLTEST / "subquery.test")])
    assert out.exit_code == 0, out.output
    last = out.output.strip().splitlines()[-1]
    m = re.fullmatch(r"(\d+) passed, (\d+) failed, (\d+) skipped", last)
    assert m, last
    assert int(m.group(1)) > 40 and m.group(2) == "0"
    # each skip names its reason
    assert all(" -- " in ln for ln in out.output.splitlines() if ln.startswith("SKIP"))


def test_cli_reports_a_failing_case(tmp_path: Path) -> None:
    bad = tmp_path / "bad.test"
    bad.write_text(
        "load 1m\n  up{job=\"a\"} 1 1 1\n\n"
        "eval instant at 2m up\n  up{job=\"a\"} 2\n\n"
        "eval instant at 2m sort_by_label(up, \"job\")\n  up{job=\"a\"} 1\n\n"
        "eval instant at 2m sum(up\n  expect fail\n"
    )
    out = CliRunner().invoke(app, ["promql", "conformance", str(bad)])
    assert out.exit_code == 1
    assert out.output.strip().splitlines()[-1] == "1 passed, 1 failed, 1 skipped"
    assert "sort_by_label" in out.output
