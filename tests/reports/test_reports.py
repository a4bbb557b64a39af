"""Every report notebook runs through papermill on the small demo; its key results are read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import polars as pl
import pytest

from vfanalytics.exceptions import ReportError, UsageError
from vfanalytics.reports import REPORTS, notebooks_dir, run_reports
from vfanalytics.store import Store

NOV_2 = 1_793_577_600_000
DAY = 86_400_000


def results(summary, name: str) -> dict:
    outcome = next(o for o in summary.outcomes if o.name == name)
    assert outcome.status == "ok", outcome.error
    return json.loads((outcome.output_dir / "results.json").read_text())


def test_notebooks_are_committed_without_outputs_and_have_one_parameters_cell() -> None:
    for name in REPORTS:
        nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        for key in ("store", "start", "end", "output_dir", "report_name"):
            assert f"{key} =" in tagged[0].source, (name, key)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
    stripper = Path(sys.executable).parent / "nbstripout"
    if stripper.exists():  # the dev extra's nbstripout agrees they are clean
        paths = [str(notebooks_dir() / f"{name}.ipynb") for name in REPORTS]
        assert subprocess.run([str(stripper), "--verify", *paths], capture_output=True).returncode == 0


def test_every_report_runs_into_one_window_directory(demo_reports) -> None:
    run = demo_reports.run_dir
    assert run.name == "20261104T000000Z"  # the small demo's window end, rounded out to the hour
    assert (demo_reports.start_ms, demo_reports.end_ms) == (NOV_2, NOV_2 + 2 * DAY)
    for name in REPORTS:
        assert (run / f"{name}.ipynb").exists() and (run / f"{name}.html").exists()
        executed = nbformat.read(run / f"{name}.ipynb", as_version=4)
        assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    manifest = json.loads((run / "run.json").read_text())
    assert set(manifest["reports"]) == set(REPORTS)
    assert all(r["status"] == "ok" for r in manifest["reports"].values())
    index = demo_reports.index.read_text()
    for name in REPORTS:
        assert f'href="{run.name}/{name}.html"' in index


def test_getting_started_counts_what_the_store_holds(demo_reports, small_demo_store) -> None:
    res = results(demo_reports, "getting_started")
    with Store(small_demo_store, read_only=True) as st:
        info = st.info()
    assert (res["series"], res["samples"], res["log_lines"], res["incidents"]) == (
        info["series"], info["samples"], info["logs"], info["incidents"])
    assert res["promql_points"] > 100


def test_token_usage_results_match_the_logs(demo_reports, small_demo_store) -> None:
    res = results(demo_reports, "token_usage")
    with Store(small_demo_store, read_only=True) as st:
        logged = st.sql("SELECT sum(tokens) AS t, count(*) AS n FROM logs WHERE action_type = 'claude_interaction'")
        top = st.sql("SELECT user_id FROM logs WHERE action_type = 'claude_interaction' "
                     "GROUP BY user_id ORDER BY sum(tokens) DESC LIMIT 1")["user_id"][0]
    assert res["total_tokens"] == int(logged["t"][0]) and res["requests"] == int(logged["n"][0])
    assert res["total_cost_usd"] == pytest.approx(res["total_tokens"] * 15.0 / 1e6)
    assert res["top_user"] == top
    assert res["mismatched_keys"] == 0 and res["metric_tokens"] == res["log_tokens"] == res["total_tokens"]
    assert 0 < res["top_1pct_share"] < res["top_10pct_share"] < 1
    assert res["month_end_cost_low"] <= res["month_end_cost_forecast"] <= res["month_end_cost_high"]
    assert res["month_end_cost_forecast"] > res["month_end_cost_month_to_date"] == pytest.approx(res["total_cost_usd"])
    out = next(o for o in demo_reports.outcomes if o.name == "token_usage").output_dir
    by_user = pl.read_csv(out / "tokens_by_user_id.csv")
    assert by_user["tokens"].sum() == res["total_tokens"]


def test_session_durations_results(demo_reports, small_demo_store) -> None:
    res = results(demo_reports, "session_durations")
    with Store(small_demo_store, read_only=True) as st:
        durations = st.sql("SELECT CAST(json_extract(extra, '$.sessionDuration') AS DOUBLE) AS d FROM logs "
                           "WHERE action = 'session_end'")["d"]
    assert res["sessions"] == durations.len()
    assert res["share_over_timeout_logged"] == pytest.approx(float((durations > 1800).mean()))
    assert res["share_over_timeout_hist_low"] == pytest.approx(res["share_over_timeout_logged"])
    for q in (50, 90):
        lower, upper = res[f"p{q}_bucket"]
        assert lower <= res[f"p{q}_s"] <= upper
        # the true quantile of the logged sessions lies in the bucket the histogram names
        assert lower <= float(durations.quantile(q / 100, "nearest")) <= upper


def test_build_times_results(demo_reports) -> None:
    res = results(demo_reports, "build_times")
    assert res["builds"] > 50
    assert res["change_points"][0]["tech_stack"] == "nextjs"
    assert res["change_points"][0]["change"].startswith("2026-11-03")
    assert len(res["slowest"]) == 5


def test_alert_tuning_results_and_exports(demo_reports) -> None:
    res = results(demo_reports, "alert_tuning")
    assert res["rules"] >= 10 and res["fired_episodes"] > 0
    assert "recommended-rules.yml" in res["exports"]
    assert res["pages_per_week_recommended"] <= res["pages_per_week_current"]
    out = next(o for o in demo_reports.outcomes if o.name == "alert_tuning").output_dir
    assert "groups:" in (out / "recommended-rules.yml").read_text()


def test_rollout_results(demo_reports) -> None:
    res = results(demo_reports, "rollout")
    users = {float(k): v for k, v in res["exposure_users"].items()}
    ordered = [users[p] for p in sorted(users)]
    assert ordered == sorted(ordered) and users[0.0] == 0 and users[100.0] > 0
    assert res["bucketing_not_random"] is True and res["salted_not_random"] is False
    assert res["sessions_without_logged_exposure"] >= 1
    assert 0 <= res["srm_pvalue"] <= 1


def test_rerunning_a_window_replaces_it(demo_reports, small_demo_store) -> None:
    out = demo_reports.index.parent
    before = sorted(p.name for p in out.iterdir())
    again = run_reports(["getting_started"], store=small_demo_store, out_root=out)
    assert again.run_dir == demo_reports.run_dir
    assert sorted(p.name for p in out.iterdir()) == before
    assert again.index.read_text().count('href="20261104T000000Z/getting_started.html"') == 1
    # another window with the same end gets its own directory, listed too
    other = run_reports(["getting_started"], store=small_demo_store, out_root=out, start="2026-11-03T00:00:00Z",
                        end="2026-11-04T00:00:00Z")
    assert other.run_dir != demo_reports.run_dir and other.run_dir.name.startswith("20261104T000000Z-")
    assert f'href="{other.run_dir.name}/getting_started.html"' in other.index.read_text()


def test_a_failing_cell_names_notebook_and_cell_and_keeps_the_partial_notebook(
        small_demo_store, tmp_path, monkeypatch) -> None:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    source = nbformat.read(notebooks_dir() / "getting_started.ipynb", as_version=4)
    boom = nbformat.v4.new_code_cell("raise RuntimeError('disk on fire')")
    source.cells.insert(4, boom)
    nbformat.write(source, nb_dir / "getting_started.ipynb")
    monkeypatch.setenv("VFA_NOTEBOOKS", str(nb_dir))
    with pytest.raises(ReportError) as err:
        run_reports(["getting_started"], store=small_demo_store, out_root=tmp_path / "out")
    msg = str(err.value)
    assert "getting_started" in msg and "disk on fire" in msg and "raise RuntimeError" in msg
    partial = next((tmp_path / "out").glob("*/getting_started.ipynb"))
    executed = nbformat.read(partial, as_version=4)
    assert any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    assert "failed" in (tmp_path / "out" / "index.html").read_text()


def test_unknown_report_or_parameter_is_a_usage_error(small_demo_store, tmp_path) -> None:
    with pytest.raises(UsageError, match="unknown report"):
        run_reports(["nope"], store=small_demo_store, out_root=tmp_path)
    with pytest.raises(UsageError, match="no report .* has a parameter 'colour'"):
        run_reports(["token_usage"], store=small_demo_store, out_root=tmp_path, params={"colour": "red"})


def test_cli_usage_errors_exit_2(tmp_path) -> None:
    vfa = [sys.executable, "-m", "vfanalytics.cli"]
    proc = subprocess.run([*vfa, "report", "nope", "--store", str(tmp_path / "missing.duckdb")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown report" in proc.stderr
    proc = subprocess.run([*vfa, "report", "all", "-p", "start"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "KEY VALUE" in proc.stderr


def test_cli_runs_a_report_with_parameters(small_demo_store, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vfanalytics.cli", "report", "token_usage", "--store",
                           str(small_demo_store), "--out", str(tmp_path), "-p", "start", "2026-11-03T00:00:00Z",
                           "-p", "end", "2026-11-04T00:00:00Z", "-p", "prices", '{"*": 30}'],
                          capture_output=True, text=True, timeout=300, env={"VFA_NO_PROGRESS": "1",
                                                                              **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr
    index = Path(proc.stdout.strip().splitlines()[-1])
    assert index == tmp_path / "index.html" and index.exists()
    res = json.loads(next(tmp_path.glob("*/token_usage/results.json")).read_text())
    assert res["total_cost_usd"] == pytest.approx(res["total_tokens"] * 30 / 1e6)
    with Store(small_demo_store, read_only=True) as st:
        n = st.sql("SELECT count(*) AS n FROM logs WHERE action_type = 'claude_interaction' "
                   "AND ts_ns BETWEEN 1793664000000000000 AND 1793750400000000000")["n"][0]
    assert res["requests"] == n


@pytest.mark.parametrize("key,value", [
    ("prometheus_url", "http://vfa:CANARY-3f9a@127.0.0.1:9/"),
    ("prometheus_token", "CANARY-3f9a"),
])
def test_credentials_are_refused_before_anything_is_written(small_demo_store, tmp_path, key: str, value: str) -> None:
    from vfanalytics.exceptions import UsageError
    from vfanalytics.reports import run_reports

    out = tmp_path / "reports"
    with pytest.raises(UsageError) as err:
        run_reports(["alert_tuning"], store=small_demo_store, out_root=out, params={key: value})
    assert "CANARY" not in str(err.value) and key in str(err.value)
    assert not out.exists() or not any("CANARY" in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
