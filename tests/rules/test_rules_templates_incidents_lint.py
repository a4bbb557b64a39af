"""Alert templates (Go formatting), incident files, lint findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfanalytics.alert_templates import check_template, go_float, humanize, render_template
from vfanalytics.exceptions import IncidentFileError, QueryError
from vfanalytics.incidents import load_incidents, matches, parse_matchers, relevant_to
from vfanalytics.lint import confirm, lint_rule_file
from vfanalytics.rules import loads_rule_file

SEED_RULES = Path(__file__).resolve().parents[2] / "data" / "rules" / "vaporform-alerts.yml"


@pytest.mark.parametrize("v,text", [
    (0.1, "0.1"), (1e6, "1e+06"), (123456.0, "123456"), (1234567.0, "1.234567e+06"), (1e-5, "1e-05"),
    (0.0001, "0.0001"), (2.0, "2"), (-3.25, "-3.25"), (float("inf"), "+Inf"), (float("nan"), "NaN"),
    (9.971556886227535, "9.971556886227535"),
])
def test_go_float_matches_strconv(v: float, text: str) -> None:
    assert go_float(v) == text


@pytest.mark.parametrize("tmpl,value,out", [
    ("{{ $value | humanize }}", 1234567.0, "1.235M"),
    ("{{ humanize $value }}", 0.0012, "1.2m"),
    ("{{ $value | humanize1024 }}", 1048576.0, "1Mi"),
    ("{{ $value | humanizeDuration }}", 93784.0, "1d 2h 3m 4s"),
    ("{{ $value | humanizeDuration }}", 0.25, "250ms"),
    ("{{ $value | humanizePercentage }}", 0.8534, "85.34%"),
    ("{{ $value | humanizeTimestamp }}", 1435065584.128, "2015-06-23 13:19:44.128 +0000 UTC"),
    ('{{ printf "%.2f" $value }}', 3.14159, "3.14"),
    ("{{ $labels.pod }} on {{ .Labels.node }}", 1.0, "p-1 on n-2"),
    ("{{ $externalLabels.cluster }}", 1.0, "prod"),
    ("{{- $value -}} x", 5.0, "5x"),
    ("{{ $labels.missing }}", 1.0, "<no value>"),
    ("{{ $labels.pod | toUpper }}", 1.0, "P-1"),
])
def test_render_template(tmpl: str, value: float, out: str) -> None:
    assert render_template(tmpl, {"pod": "p-1", "node": "n-2"}, value, {"cluster": "prod"}) == out


def test_template_errors() -> None:
    assert check_template("{{ $value | nosuch }}") is not None
    assert check_template("{{ $value ") is not None
    assert check_template("{{ if $value }}x{{ end }}") is not None  # outside the supported subset
    assert check_template("plain text") is None
    with pytest.raises(QueryError):
        render_template("{{ $undefined }}", {}, 1.0)
    assert humanize(0.0) == "0"


def test_incidents_csv_and_yaml(tmp_path: Path) -> None:
    csv = tmp_path / "inc.csv"
    csv.write_text("id,start,end,severity,matchers,title,alerts\n"
                   'a,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,critical,"{job=""api""}",API down,Down\n'
                   "b,1793530800,1793534400,warning,,Slow,\n")
    df = load_incidents(csv)
    assert df["id"].to_list() == ["a", "b"]
    assert df["start_ms"].to_list() == [1793527200000, 1793530800000]
    yml = tmp_path / "inc.yml"
    yml.write_text("incidents:\n  - id: x\n    start: 2026-11-01T10:00:00Z\n    end: 2026-11-01T10:30:00Z\n"
                   "    matchers: '{pod=~\"api-.*\"}'\n    alerts: [Down, Slow]\n")
    y = load_incidents(yml)
    assert y.row(0, named=True)["alerts"] == "Down,Slow"
    assert relevant_to(df, "Down")["id"].to_list() == ["a"]
    assert relevant_to(y, "Slow")["id"].to_list() == ["x"]


@pytest.mark.parametrize("body,fragment,line", [
    ("a,2026-11-01T11:00:00Z,2026-11-01T10:00:00Z,,,t\n", "row 1: end 2026-11-01T10:00:00Z is before start 2026-11-01T11:00:00Z", 2),
    ("a,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,,,t\nb,yesterday-ish,2026-11-01T11:00:00Z,,,t\n", "row 2: start: not a valid time", 3),
    ("a,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,,{job=},t\n", "row 1: invalid matchers", 2),
    ("a,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,,,t\na,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,,,t\n", "row 2: duplicate id", 3),
])
def test_incident_errors_name_row_and_line(tmp_path: Path, body: str, fragment: str, line: int) -> None:
    p = tmp_path / "inc.csv"
    p.write_text("id,start,end,severity,matchers,title\n" + body)
    with pytest.raises(IncidentFileError) as ei:
        load_incidents(p)
    assert fragment in str(ei.value)
    assert str(ei.value).startswith(f"{p}:{line}: ")


def test_matchers() -> None:
    ms = parse_matchers('job="api", route=~"/a.*"')
    assert ms == [("job", "=", "api"), ("route", "=~", "/a.*")]
    assert matches(ms, {"job": "api", "route": "/abc"})
    assert not matches(ms, {"job": "web", "route": "/abc"})
    assert matches(ms, {"job": "api"})  # an alert that aggregated route away still matches
    assert not matches(ms, {"job": "api"}, strict=True)


def test_lint_finds_the_seed_defects() -> None:
    rf, _ = loads_rule_file(SEED_RULES.read_text(), str(SEED_RULES))
    found = {(f.rule, f.code) for f in lint_rule_file(rf)}
    assert ("VaporformHighResponseTime", "VFA001") in found
    assert ("VaporformClaudeHighLatency", "VFA001") in found
    assert ("VaporformLowProjectCreationRate", "VFA002") in found  # "per hour" in the annotation
    assert ("VaporformHighErrorRate", "VFA003") in found
    assert ("KubernetesPodCrashLooping", "VFA005") in found
    assert ("VaporformHighErrorRate", "VFA002") not in found  # "errors per second" is consistent
    # every proposed expression is valid PromQL and keeps a threshold
    for f in lint_rule_file(rf):
        if f.proposed_expr:
            fixed, errors = loads_rule_file(
                f"groups: [{{name: g, rules: [{{alert: A, expr: '{f.proposed_expr}'}}]}}]")
            assert not errors, f.proposed_expr


def test_lint_no_for_and_dead_selector() -> None:
    from vfanalytics.promql import FrameSource

    rf, _ = loads_rule_file("groups: [{name: g, rules: [{alert: A, expr: nothing_here > 1}]}]", "x.yml")
    src = FrameSource.from_series({"up": ([0], [1.0])})
    codes = [f.code for f in lint_rule_file(rf, source=src, start=0, end=60_000)]
    assert codes == ["VFA006", "VFA004"]
    f = [f for f in lint_rule_file(rf, source=src, start=0, end=60_000) if f.code == "VFA004"][0]
    assert confirm(f, {"result_series": 0}).confirmed is True
    assert confirm(f, {"result_series": 3}).confirmed is False


def test_incidents_with_millisecond_columns(tmp_path: Path) -> None:
    p = tmp_path / "inc.csv"
    p.write_text("id,start_ms,end_ms,title\na,1793527200000,1793530800000,x\n")
    assert load_incidents(p).select("start_ms", "end_ms").row(0) == (1793527200000, 1793530800000)
