"""Pulls into the store: incremental windows, atomic chunks, SIGKILL-and-resume, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.sources.faultproxy import Schedule, fault_proxy
from tests.sources.srcdata import ALL, END, T0, assert_same, content
from vfanalytics.sources.prometheus import PrometheusSource
from vfanalytics.sources.pull import pull_query_range, pull_series, uncovered
from vfanalytics.store import Store

pytestmark = pytest.mark.integration

VFA = str(Path(sys.executable).with_name("vfa"))


def test_uncovered_windows():
    assert uncovered(0, 100, [], gap=1) == [(0, 100)]
    assert uncovered(0, 100, [(0, 100)], gap=1) == []
    assert uncovered(0, 100, [(10, 20), (21, 30), (50, 200)], gap=1) == [(0, 9), (31, 49)]
    assert uncovered(0, 100, [(0, 40)], gap=10) == [(50, 100)]


def test_pull_series_incremental_and_wider(prom_url, dataset, tmp_path):
    with fault_proxy(prom_url, Schedule(rate=0)) as (url, stats):
        src = PrometheusSource(url, raw_window=3600_000)
        with Store(tmp_path / "s.duckdb") as st:
            mid = pull_series(st, src, ALL, T0 + 3 * 3600_000, T0 + 6 * 3600_000)
            assert mid.windows == [(T0 + 3 * 3600_000, T0 + 6 * 3600_000)] and mid.chunks == 4
            n = stats.requests
            again = pull_series(st, src, ALL, T0 + 3 * 3600_000, T0 + 6 * 3600_000)
            assert again.up_to_date and again.requests == 0 and stats.requests == n  # nothing sent
            wider = pull_series(st, src, ALL, T0, END)
            assert wider.windows == [(T0, T0 + 3 * 3600_000 - 1), (T0 + 6 * 3600_000 + 1, END)]
    series, samples, cover = content(tmp_path / "s.duckdb")
    assert cover == [(T0, END)]
    assert_same(samples, dataset[1])
    assert sorted(series["labels"].to_list()) == sorted(dataset[0]["labels"].to_list())


def test_pull_query_range_stores_recording_style(prom_url, tmp_path):
    src = PrometheusSource(prom_url, max_points=50)
    expr = "sum by (job) (rate(vfa_test_requests_total[5m]))"
    step = 60_000
    with Store(tmp_path / "q.duckdb") as st:
        first = pull_query_range(st, src, expr, T0 + 1, T0 + 2 * 3600_000 + 30_000, step)
        assert first.windows == [(T0 + step, T0 + 2 * 3600_000)]  # aligned to multiples of the step
        assert pull_query_range(st, src, expr, T0 + step, T0 + 2 * 3600_000, step).requests == 0
        wider = pull_query_range(st, src, expr, T0, T0 + 3 * 3600_000, step)
        assert wider.windows == [(T0, T0), (T0 + 2 * 3600_000 + step, T0 + 3 * 3600_000)]
        named = pull_query_range(st, src, expr, T0, T0 + 3 * 3600_000, step, name="job:requests:rate5m")
        assert named.windows == [(T0, T0 + 3 * 3600_000)]
        stored = st.samples(matchers=[("__query__", "=", expr)])
        as_named = st.samples(metric="job:requests:rate5m")
        series = st.series(matchers=[("__query__", "=", expr)])
    direct = src.query_range(expr, T0, T0 + 3 * 3600_000, step)
    assert series["labels"].to_list() == ['{"__query__":"' + expr + '","job":"api"}']
    assert stored["ts"].to_list() == direct["ts"].to_list()
    assert stored["value"].to_list() == direct["value"].to_list() == as_named["value"].to_list()


def _vfa(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "VFA_NO_PROGRESS": "1"}
    return subprocess.Popen([VFA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


def test_sigkill_and_resume_equals_uninterrupted_pull(prom_url, tmp_path):
    args = ["pull", "series", "--match", ALL, "--start", str(T0 / 1000), "--end", str(END / 1000), "--window", "20m"]
    clean = _vfa(*args, "--url", prom_url, "--store", str(tmp_path / "clean.duckdb"))
    assert clean.wait(120) == 0, clean.stderr.read()
    with fault_proxy(prom_url, Schedule(rate=0, delay=0.1)) as (url, stats):
        proc = _vfa(*args, "--url", url, "--concurrency", "2", "--store", str(tmp_path / "killed.duckdb"))
        deadline = time.monotonic() + 60
        while stats.requests < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # what survived is consistent: exactly the samples of the recorded windows, nothing else
    ref_series, ref_samples, ref_cover = content(tmp_path / "clean.duckdb")
    _, part, cover = content(tmp_path / "killed.duckdb")
    assert cover and cover != ref_cover, "the kill came too late to interrupt the pull"
    in_cover = pl.any_horizontal([pl.col("ts").is_between(a, b) for a, b in cover])
    assert_same(part, ref_samples.filter(in_cover))
    resume = _vfa(*args, "--url", prom_url, "--store", str(tmp_path / "killed.duckdb"))
    assert resume.wait(120) == 0, resume.stderr.read()
    series, samples, cover = content(tmp_path / "killed.duckdb")
    assert cover == ref_cover == [(T0, END)]
    assert series.equals(ref_series)
    assert_same(samples, ref_samples)


def _cli(capsys, *args: str) -> tuple[int, str]:
    from vfanalytics.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0), capsys.readouterr().err


def test_cli_reports_and_errors(prom_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VFA_NO_PROGRESS", "1")
    store = str(tmp_path / "c.duckdb")
    base = ["--url", prom_url, "--store", store, "--start", str(T0 / 1000), "--end", str((T0 + 3600_000) / 1000)]
    code, err = _cli(capsys, "pull", "prometheus", "--query", "vfa_test_gauge", "--step", "1m", *base)
    assert code == 0, err
    assert "pulled" in err and "new samples" in err
    code, err = _cli(capsys, "pull", "prometheus", "--query", "vfa_test_gauge", "--step", "1m", *base)
    assert code == 0 and "up to date" in err
    code, err = _cli(capsys, "pull", "prometheus", "--query", "sum(", "--step", "1m", *base)
    lines = err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error:") and "HTTP 400" in lines[0] and "parse error" in lines[0]
    code, err = _cli(capsys, "pull", "series", "--match", "rate(x[5m])", *base)
    assert code == 2 and "selector" in err
