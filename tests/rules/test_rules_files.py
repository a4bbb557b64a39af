"""Rule files: loading, promtool-precise errors, round-trip writing, prometheus.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vfanalytics.exceptions import RuleFileError
from vfanalytics.rules import check_rule_files, load_prometheus_config, load_rule_file, loads_rule_file

SEED_RULES = Path(__file__).resolve().parents[2] / "data" / "rules" / "vaporform-alerts.yml"

GOOD = """\
# header comment
groups:
  - name: api            # the API group
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: core}
    rules:
      - record: job:req:rate5m
        expr: sum by (job) (rate(req_total[5m]))
      - alert: Slow
        expr: 'histogram_quantile(0.9, sum by (le) (rate(d_bucket[5m]))) > 1'
        for: 5m
        keep_firing_for: 2m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} slow: {{ $value | humanizeDuration }}"
"""


def test_load_fields_and_lines() -> None:
    rf, errors = loads_rule_file(GOOD, "good.yml")
    assert errors == []
    g = rf.groups[0]
    assert (g.name, g.interval_ms, g.query_offset_ms, g.limit, g.labels) == ("api", 30_000, 60_000, 10, {"team": "core"})
    rec, alert = g.rules
    assert (rec.kind, rec.name, rec.line) == ("record", "job:req:rate5m", 9)
    assert (alert.kind, alert.for_ms, alert.keep_firing_for_ms, alert.line, alert.expr_line) == ("alert", 300_000, 120_000, 11, 12)
    assert alert.annotations["summary"].startswith("{{ $labels.job }}")


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m] > 1\n", 5, 'group "g", rule 1, "A": could not parse expression'),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5x\n", 6, 'for: not a valid duration string: "5x"'),
        ("groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n", 4, "invalid recording rule name: bad name"),
        ("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n", 6, "invalid field 'for' in recording rule"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        record: B\n        expr: up\n", 4, "only one of 'record' and 'alert' must be set"),
        ("groups:\n  - name: g\n    rules:\n      - expr: up\n", 4, "one of 'record' or 'alert' must be set"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n", 4, "field 'expr' must be set in rule"),
        ("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n", 4, 'groupname: "g" is repeated in the same file'),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels:\n          0bad: x\n", 7, "invalid label name: 0bad"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          s: '{{ $value | nosuch }}'\n", 7, "template:"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        fro: 1m\n", 6, "field fro not found"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n      bad indent: [\n", None, "invalid YAML"),
    ],
)
def test_errors_name_file_line_group_rule(tmp_path: Path, text: str, line: int | None, fragment: str) -> None:
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(RuleFileError) as ei:
        load_rule_file(p)
    msg = str(ei.value)
    assert fragment in msg
    if line is not None:
        assert msg.startswith(f"{p}:{line}: "), msg
    else:
        assert msg.startswith(f"{p}:")


def test_check_reports_every_problem(tmp_path: Path) -> None:
    p = tmp_path / "two.yml"
    p.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up >\n      - alert: B\n        expr: up\n        for: x\n")
    ((n, errors),) = check_rule_files([p]).values()
    assert n == 2 and len(errors) == 2
    assert [e.line for e in errors] == [5, 8]


def test_round_trip_unchanged_is_byte_identical() -> None:
    text = SEED_RULES.read_text()
    rf, _ = loads_rule_file(text, str(SEED_RULES))
    assert rf.dumps() == text
    rf2, _ = loads_rule_file(GOOD, "good.yml")
    assert rf2.dumps() == GOOD


def test_edits_keep_comments_order_and_other_lines() -> None:
    text = SEED_RULES.read_text()
    rf, _ = loads_rule_file(text, str(SEED_RULES))
    r = rf.find("VaporformHighErrorRate")
    rf.set_rule_field(r, "expr", 'rate(vaporform_http_requests_total{status=~"5.."}[5m]) > 0.35')
    rf.set_rule_field(r, "for", "10m")
    rf.set_rule_field(r, "keep_firing_for", "5m")
    out = rf.dumps()
    old_lines, new_lines = text.splitlines(), out.splitlines()
    changed = [ln for ln in new_lines if ln not in old_lines]
    assert changed == ['        expr: rate(vaporform_http_requests_total{status=~"5.."}[5m]) > 0.35',
                       "        for: 10m", "        keep_firing_for: 5m"]
    assert "# High-level service availability" in out and "# Redis alerts" in out
    i = new_lines.index("        for: 10m")
    assert new_lines[i + 1] == "        keep_firing_for: 5m"  # inserted after for, before labels
    again, errors = loads_rule_file(out, "x.yml")
    assert not errors and again.find("VaporformHighErrorRate").keep_firing_for_ms == 300_000


def test_prometheus_config(tmp_path: Path) -> None:
    seed_cfg = Path("/work/shared/reference/vaporform/monitoring/prometheus/prometheus.yml")
    if seed_cfg.exists():
        cfg = load_prometheus_config(seed_cfg)
        assert cfg.evaluation_interval_ms == 15_000
        assert cfg.external_labels == {"cluster": "vaporform-production", "environment": "production"}
    p = tmp_path / "p.yml"
    p.write_text("global:\n  scrape_interval: 30s\n")
    assert load_prometheus_config(p).evaluation_interval_ms == 60_000
    p.write_text("global:\n  evaluation_interval: soon\n")
    with pytest.raises(RuleFileError, match=r"p.yml:2: global.evaluation_interval"):
        load_prometheus_config(p)


@pytest.mark.integration
def test_promtool_agrees_on_valid_and_invalid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    good2 = tmp_path / "good2.yml"  # without the 3.x-only group fields promtool 2.42 rejects
    good2.write_text("\n".join(ln for ln in GOOD.splitlines() if "query_offset" not in ln and "labels: {" not in ln))
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m] > 1\n")
    for p in (good, good2, bad, SEED_RULES):
        ours = not check_rule_files([p], prometheus_version=2)[str(p)][1]
        theirs = subprocess.run([promtool, "check", "rules", str(p)], capture_output=True).returncode == 0
        assert ours == theirs, p
