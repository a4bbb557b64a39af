"""PrometheusSource against real servers: Debian's Prometheus 2.42 and VictoriaMetrics."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import numpy as np
import polars as pl
import pytest

from tests.servers import prometheus_server
from tests.sources.srcdata import ALL, END, T0, TRICKY
from vfanalytics.exceptions import SourceHTTPError, UsageError
from vfanalytics.series import canonical_labels
from vfanalytics.sources.prometheus import (
    PrometheusSource,
    promql_regex,
    promql_string,
    selector,
    split_steps,
)

pytestmark = pytest.mark.integration



def _bits(frame: pl.DataFrame, col: str = "value") -> np.ndarray:
    return frame[col].to_numpy().view(np.uint64)


def _assert_same_samples(got: pl.DataFrame, want: pl.DataFrame) -> None:
    got = got.sort("series_id", "ts")
    want = want.sort("series_id", "ts")
    assert got.height == want.height
    assert got["series_id"].to_list() == want["series_id"].to_list()
    assert got["ts"].to_list() == want["ts"].to_list()
    assert (_bits(got) == _bits(want)).all()


def _server_json(url: str, path: str, **params: str) -> dict:
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{q}") as r:
        return json.loads(r.read())


def _vm_export(url: str) -> pl.DataFrame:
    """VictoriaMetrics' own view of what it stores (its lossy float encoding included)."""
    rows = []
    q = urllib.parse.urlencode({"match[]": ALL})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}") as r:
        for line in r.read().splitlines():
            # VictoriaMetrics writes bare Inf / -Inf / NaN, which JSON has no words for
            obj = json.loads(re.sub(rb"(?<=[\[,])([-+]?Inf|NaN)(?=[,\]])", rb'"\1"', line))
            labels = canonical_labels(obj["metric"])
            rows += [(labels, t, float(v)) for t, v in zip(obj["timestamps"], obj["values"], strict=True)]
    return pl.DataFrame(rows, schema={"labels": pl.Utf8, "ts": pl.Int64, "value": pl.Float64}, orient="row")


def test_raw_samples_equal_stored_prometheus(prom_url, dataset):
    series, samples = PrometheusSource(prom_url, raw_window=3600_000).raw_samples(ALL, T0, END)
    assert samples.select("series_id", "ts").equals(samples.select("series_id", "ts").sort("series_id", "ts"))
    assert sorted(series["labels"].to_list()) == sorted(dataset[0]["labels"].to_list())
    _assert_same_samples(samples, dataset[1])


def test_raw_samples_subrange_boundaries_inclusive(prom_url, dataset):
    want = dataset[1]
    # edges exactly on stored samples of one series: both must be included, nothing outside
    ts = want.filter(pl.col("series_id") == want["series_id"][0])["ts"]
    lo, hi = int(ts[100]), int(ts[900])
    _, got = PrometheusSource(prom_url, raw_window=3 * 3600_000 + 7).raw_samples(ALL, lo, hi)
    _assert_same_samples(got, want.filter(pl.col("ts").is_between(lo, hi)))


def test_raw_samples_victoria_metrics_equal_its_export(vm_url, dataset):
    _, got = PrometheusSource(vm_url, raw_window=2 * 3600_000).raw_samples(ALL, T0, END)
    series = dataset[0]
    export = _vm_export(vm_url).join(series.select("labels", "series_id"), on="labels")
    _assert_same_samples(got, export.select("series_id", "ts", "value"))
    # integer counters survive VictoriaMetrics' float compression exactly
    counters = series.filter(pl.col("metric") == "vfa_test_requests_total")["series_id"]
    _assert_same_samples(
        got.filter(pl.col("series_id").is_in(counters.implode())),
        dataset[1].filter(pl.col("series_id").is_in(counters.implode())),
    )


@pytest.mark.parametrize("expr", ["rate(vfa_test_requests_total[5m])", 'sum by (job) (vfa_test_gauge{job="edge"})', "vfa_test_gauge"])
def test_query_range_equals_servers_own_json(engine, expr):
    name, url = engine
    start, end, step = T0 + 600_000, T0 + 6 * 3600_000, 60_000
    ours = PrometheusSource(url, max_points=37, concurrency=3).query_range(expr, start, end, step)
    doc = _server_json(url, "/api/v1/query_range", query=expr, start=str(start / 1000), end=str(end / 1000), step="60")
    rows = []
    for r in doc["data"]["result"]:
        labels = canonical_labels(r["metric"])
        rows += [(labels, round(float(t) * 1000), float(v)) for t, v in r["values"]]
    want = pl.DataFrame(rows, schema={"labels": pl.Utf8, "ts": pl.Int64, "value": pl.Float64}, orient="row").sort("labels", "ts")
    assert want.height > 0
    assert ours.select("labels", "ts").equals(want.select("labels", "ts")), name
    # the JSON text "NaN" carries no payload: NaN equals NaN, everything else bit for bit
    a, b = ours["value"].to_numpy(), want["value"].to_numpy()
    if name == "victoria-metrics" and expr.startswith("sum"):
        # VictoriaMetrics sums in parallel: the last bits change from one call to the next
        assert np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
    else:
        assert ((_bits(ours) == _bits(want)) | (np.isnan(a) & np.isnan(b))).all()
    # chunks partition the steps: no boundary point twice
    assert ours.select("labels", "ts").is_unique().all()


def test_split_steps_has_no_overlap_and_no_gap():
    chunks = split_steps(5, 5 + 99 * 7, 7, max_points=10)
    times = [t for a, b in chunks for t in range(a, b + 1, 7)]
    assert times == list(range(5, 5 + 100 * 7, 7))
    assert all((b - a) // 7 + 1 <= 10 for a, b in chunks)


def test_too_many_samples_splits_and_retries(dataset, prom_url, tmp_path):
    with prometheus_server(dataset, tmp_path, extra_args=["--query.max-samples=3000"]) as url:
        src = PrometheusSource(url, raw_window=12 * 3600_000 + 1, max_points=11_000)
        _, got = src.raw_samples(ALL, T0, END)
        _assert_same_samples(got, dataset[1])
        frame = src.query_range("vfa_test_requests_total", T0, END, 60_000)
        unlimited = PrometheusSource(prom_url).query_range("vfa_test_requests_total", T0, END, 60_000)
        assert frame.height > 3000
        assert frame.equals(unlimited)
        with pytest.raises(SourceHTTPError, match="too many samples"):
            PrometheusSource(url, min_window=10 * 3600_000, raw_window=12 * 3600_000).raw_samples(ALL, T0, END)


def test_bad_query_surfaces_server_message(engine):
    _, url = engine
    with pytest.raises(SourceHTTPError) as err:
        PrometheusSource(url).query_range("sum(", T0, T0 + 60_000, 15_000)
    assert err.value.status in (400, 422)
    assert "parse" in str(err.value).lower() or "unexpected" in str(err.value).lower()


def test_series_and_label_values(engine, dataset):
    _, url = engine
    src = PrometheusSource(url)
    got = src.series(ALL, T0, END)
    assert sorted(got["labels"].to_list()) == sorted(dataset[0]["labels"].to_list())
    assert src.label_values("path", start=T0, end=END) == sorted(TRICKY)
    assert src.label_values("job", match="vfa_test_gauge", start=T0, end=END) == ["edge"]


@pytest.mark.parametrize("value", TRICKY)
def test_escaped_label_values_select_exactly_their_series(engine, value):
    _, url = engine
    src = PrometheusSource(url)
    for sel in (selector("vfa_test_gauge", path=value), f"vfa_test_gauge{{path=~{promql_regex(value)}}}"):
        got = src.series(sel, T0, END)
        assert got.height == 1, sel
        assert json.loads(got["labels"][0])["path"] == value


def test_escaping_rejects_injection():
    assert promql_string('a"} or vector(1) #') == '"a\\"} or vector(1) #"'
    with pytest.raises(UsageError):
        selector("up", **{"job} or vector(1) #": "x"})
    with pytest.raises(UsageError):
        PrometheusSource("http://127.0.0.1:1").raw_samples("rate(up[5m])", 0, 1)


def test_tenant_and_extra_headers_are_sent(prom_url):
    from tests.sources.faultproxy import Schedule, fault_proxy

    with fault_proxy(prom_url, Schedule(rate=0)) as (url, stats):
        src = PrometheusSource(url, headers={"X-Scope-OrgID": "tenant-1", "X-Extra": "ü"}, token="t0k")
        src.label_values("job")
    seen = stats.headers_seen[0]
    assert seen["X-Scope-OrgID"] == "tenant-1" and seen["Authorization"] == "Bearer t0k"


def test_sample_budget_sizes_the_chunks(prom_url):
    from tests.sources.faultproxy import Schedule, fault_proxy

    expr = "vfa_test_requests_total"  # 24 series
    with fault_proxy(prom_url, Schedule(rate=0)) as (url, stats):
        frame = PrometheusSource(url, max_samples=24 * 30).query_range(expr, T0, T0 + 299 * 60_000, 60_000)
    assert stats.requests == 2 + 10  # two instant queries to count series, then 300 points in chunks of 30
    assert frame.equals(PrometheusSource(prom_url).query_range(expr, T0, T0 + 299 * 60_000, 60_000))


def test_victoria_metrics_server_loads_an_openmetrics_file(dataset, tmp_path):
    from tests.servers import victoria_metrics_server
    from vfanalytics.openmetrics import write_openmetrics

    series, samples = dataset
    path = tmp_path / "m.om"
    write_openmetrics(series, samples, path)
    counters = series.filter(pl.col("metric") == "vfa_test_requests_total")["series_id"].implode()
    with victoria_metrics_server(path, tmp_path) as url:
        _, got = PrometheusSource(url).raw_samples(ALL, T0, END)
    _assert_same_samples(got.filter(pl.col("series_id").is_in(counters)), samples.filter(pl.col("series_id").is_in(counters)))
    assert got.filter(~pl.col("series_id").is_in(counters)).height > 0


def test_instant_query_frame(engine):
    _, url = engine
    frame = PrometheusSource(url).query('sum by (job) (vfa_test_requests_total)', T0 + 3600_000)
    assert frame.columns == ["series_id", "labels", "ts", "value"]
    assert frame["labels"].to_list() == ['{"job":"api"}'] and frame["ts"].to_list() == [T0 + 3600_000]
