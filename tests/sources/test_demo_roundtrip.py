"""The demo export served by real Prometheus (backfilled) and by the Loki test server, pulled back exactly."""

from __future__ import annotations

import collections

import orjson
import polars as pl
import pytest

from tests.servers import prometheus_server
from tests.sources.loki_server import LokiData, loki_server
from tests.sources.srcdata import assert_same
from vfanalytics.series import is_stale
from vfanalytics.sources.loki import LokiSource
from vfanalytics.sources.prometheus import PrometheusSource
from vfanalytics.sources.pull import pull_loki, pull_series
from vfanalytics.store import Store


@pytest.mark.integration
def test_raw_pull_from_backfilled_prometheus_equals_demo_store(small_demo_store, small_demo_export, tmp_path):
    with Store(small_demo_store, read_only=True) as demo:
        series = demo.sql("SELECT * FROM series ORDER BY series_id")
        samples = demo.sql("SELECT * FROM samples ORDER BY series_id, ts")
    # OpenMetrics cannot carry staleness markers; Prometheus never returns them from a range selector either
    samples = samples.filter(pl.Series(~is_stale(samples["value"].to_numpy())))
    lo, hi = int(samples["ts"].min()), int(samples["ts"].max())
    with prometheus_server(small_demo_export / "metrics.om", tmp_path) as url:
        with Store(tmp_path / "pulled.duckdb") as st:
            report = pull_series(st, PrometheusSource(url, raw_window=12 * 3600_000), '{__name__=~".+"}', lo, hi)
            got = st.sql("SELECT * FROM samples ORDER BY series_id, ts")
            got_series = st.sql("SELECT * FROM series ORDER BY series_id")
    assert report.rows == samples.height
    assert_same(got, samples)
    with_samples = series.filter(pl.col("series_id").is_in(samples["series_id"].unique().implode()))
    assert got_series.equals(with_samples)


def test_loki_pull_of_demo_logs_equals_demo_store(small_demo_store, small_demo_export, tmp_path):
    streams: dict[bytes, tuple[dict[str, str], list[tuple[int, str]]]] = {}
    for batch in sorted((small_demo_export / "loki").glob("*.json")):
        for s in orjson.loads(batch.read_bytes())["streams"]:
            key = orjson.dumps(s["stream"], option=orjson.OPT_SORT_KEYS)
            streams.setdefault(key, (s["stream"], []))[1].extend((int(t), line) for t, line in s["values"])
    for _, values in streams.values():
        values.sort(key=lambda e: e[0])
    with Store(small_demo_store, read_only=True) as demo:
        want = demo.sql("SELECT ts_ns, stream, line FROM logs")
    assert want.height > 0
    lo_ms = int(want["ts_ns"].min()) // 1_000_000
    hi_ms = int(want["ts_ns"].max()) // 1_000_000
    with loki_server(LokiData(list(streams.values()), replay=False)) as (url, _):
        with Store(tmp_path / "logs.duckdb") as st:
            pull_loki(st, LokiSource(url, limit=5000, window=6 * 3600_000), '{service=~".+"}', lo_ms, hi_ms)
            got = st.sql("SELECT ts_ns, stream, line FROM logs")
    assert collections.Counter(got.iter_rows()) == collections.Counter(want.iter_rows())
