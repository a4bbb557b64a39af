"""Pulls through a fault-injecting proxy in front of real servers end identical to clean pulls, or fail clearly."""

from __future__ import annotations

import collections
import random

import polars as pl
import pytest

from tests.sources.faultproxy import FAULTS, Schedule, fault_proxy
from tests.sources.loki_server import LOKI_DIR, load_streams, loki_server
from tests.sources.srcdata import ALL, END, T0, assert_same, content
from vfanalytics.exceptions import RetryBudgetExceeded, SourceHTTPError
from vfanalytics.series import canonical_labels
from vfanalytics.sources.http import RetryPolicy
from vfanalytics.sources.loki import LokiSource
from vfanalytics.sources.prometheus import PrometheusSource
from vfanalytics.sources.pull import pull_series
from vfanalytics.store import Store

FAST = RetryPolicy(attempts=6, backoff=0.001, max_backoff=0.01, seed=1)


def _source(url: str, **kw) -> PrometheusSource:
    return PrometheusSource(url, timeout=0.5, retry=kw.pop("retry", FAST), **kw)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [1, 2])
def test_faulty_raw_pull_equals_clean_pull(prom_url, dataset, tmp_path, seed):
    sched = Schedule(seed=seed, rate=0.6, faulty_attempts=3, stall=0.8)
    with fault_proxy(prom_url, sched) as (url, stats):
        with Store(tmp_path / "f.duckdb") as st:
            pull_series(st, _source(url, raw_window=1800_000, concurrency=4), ALL, T0, END)
    assert set(stats.faults) == set(FAULTS), stats.faults  # every kind of fault was met
    _, samples, cover = content(tmp_path / "f.duckdb")
    assert cover == [(T0, END)]
    assert_same(samples, dataset[1])


@pytest.mark.integration
def test_faulty_query_range_equals_clean(engine):
    _, upstream = engine
    expr = "rate(vfa_test_requests_total[5m])"
    clean = PrometheusSource(upstream).query_range(expr, T0, END, 60_000)
    with fault_proxy(upstream, Schedule(seed=5, rate=0.6, faulty_attempts=3, stall=0.8)) as (url, stats):
        faulty = _source(url, max_points=40).query_range(expr, T0, END, 60_000)
    assert sum(stats.faults.values()) > 5
    assert faulty.equals(clean)


@pytest.mark.integration
def test_faults_outlasting_the_budget_leave_the_store_unchanged(prom_url, tmp_path):
    path = tmp_path / "u.duckdb"
    with Store(path) as st:
        pull_series(st, PrometheusSource(prom_url), "vfa_test_gauge", T0, T0 + 3600_000)
    before = content(path)
    with fault_proxy(prom_url, Schedule(always="503")) as (url, stats):
        with Store(path) as st, pytest.raises(RetryBudgetExceeded) as err:
            pull_series(st, _source(url), ALL, T0, END)
    assert "giving up after 6 tries" in str(err.value) and "HTTP 503" in str(err.value)
    after = content(path)
    assert before[0].equals(after[0]) and before[1].equals(after[1]) and before[2] == after[2]


@pytest.mark.integration
def test_failure_mid_pull_keeps_whole_chunks_and_resumes(prom_url, dataset, tmp_path):
    path = tmp_path / "m.duckdb"
    sched = Schedule(after=5, always="reset")
    with fault_proxy(prom_url, sched) as (url, _):
        with Store(path) as st, pytest.raises(RetryBudgetExceeded):
            pull_series(st, _source(url, raw_window=1800_000, concurrency=1), ALL, T0, END)
        _, part, cover = content(path)
        assert cover == [(T0, T0 + 5 * 1800_000 - 1)]  # five whole chunks, each with its pulls row
        in_cover = pl.any_horizontal([pl.col("ts").is_between(a, b) for a, b in cover])
        assert_same(part, dataset[1].filter(in_cover))
        sched.always = None  # the server recovers; the same pull resumes where it stopped
        with Store(path) as st:
            resumed = pull_series(st, _source(url, raw_window=1800_000), ALL, T0, END)
    assert resumed.windows == [(T0 + 5 * 1800_000, END)]
    assert_same(content(path)[1], dataset[1])


@pytest.mark.integration
def test_retry_after_is_honoured_and_client_errors_are_not_retried(prom_url):
    waits: list[float] = []
    sched = Schedule(rate=1.0, faults=("429",), faulty_attempts=1, retry_after="7")
    with fault_proxy(prom_url, sched) as (url, stats):
        src = PrometheusSource(url, retry=RetryPolicy(attempts=3, backoff=0.001, max_backoff=30), sleep=waits.append)
        src.query("vfa_test_gauge", T0 + 3600_000)
        assert waits == [7.0] and stats.requests == 2
        sched.rate = 0
        n = stats.requests
        with pytest.raises(SourceHTTPError):
            src.query("sum(", T0)
        assert stats.requests == n + 1
    # backoff grows exponentially, with jitter, and is capped
    pol = RetryPolicy(backoff=1.0, max_backoff=5.0, seed=3)
    r = random.Random(3)
    delays = [pol.delay(a, r) for a in range(8)]
    assert all(0 <= d <= min(5.0, 2**a) for a, d in enumerate(delays))


@pytest.mark.skipif(not (LOKI_DIR / "dataset_push.json").exists(), reason="no Loki dataset")
def test_faulty_loki_pull_returns_every_line_once():
    want: collections.Counter = collections.Counter()
    for labels, values in load_streams():
        want.update((ts, canonical_labels(labels), line) for ts, line in values)
    with loki_server() as (upstream, _), fault_proxy(upstream, Schedule(seed=9, rate=0.5, faulty_attempts=3, stall=0.8)) as (url, stats):
        src = LokiSource(url, limit=200, window=20 * 60_000, timeout=0.5, retry=FAST)
        frame = src.query_range('{env=~".+"}', 1_793_527_200_000, 1_793_534_400_000)
    assert sum(stats.faults.values()) > 5
    assert collections.Counter(frame.iter_rows()) == want
