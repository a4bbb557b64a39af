"""The public API, the CLI and the semantics the conformance files do not pin down."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from vfanalytics.cli.promql import register
from vfanalytics.exceptions import PromQLSyntaxError, QueryError, UnsupportedQuery
from vfanalytics.promql import (
    FrameSource,
    evaluate_instant,
    evaluate_range,
    query,
    query_range,
    to_prometheus_json,
)
from vfanalytics.promql import api as api_mod
from vfanalytics.series import STALE_NAN, canonical_labels, series_id
from vfanalytics.store import Store

MIN = 60_000

#: only the promql command group, as `vfa` registers it
app = typer.Typer()
register(app)



def counter_source() -> FrameSource:
    return FrameSource.from_series(
        {
            'req_total{job="a"}': (list(range(0, 11 * MIN, MIN)), [float(i * 60) for i in range(11)]),
            'req_total{job="b"}': (list(range(0, 11 * MIN, MIN)), [float(i * 120) for i in range(11)]),
        }
    )


def test_query_range_frame_shape() -> None:
    df = query_range("rate(req_total[5m])", 5 * MIN, 10 * MIN, "1m", source=counter_source())
    assert df.schema == pl.Schema({"series_id": pl.UInt64, "labels": pl.Utf8, "ts": pl.Int64, "value": pl.Float64})
    assert df.height == 12
    a = df.filter(pl.col("labels") == canonical_labels({"job": "a"}))
    assert a["value"].to_list() == pytest.approx([1.0] * 6)
    assert a["series_id"][0] == series_id({"job": "a"})


def test_window_semantics_by_version() -> None:
    # samples exactly on the window's left edge count in 2.x and not in 3.x
    src = counter_source()
    v3 = query("count_over_time(req_total[5m])", 5 * MIN, source=src)
    v2 = query("count_over_time(req_total[5m])", 5 * MIN, source=src, prometheus_version=2)
    assert set(v3["value"]) == {5.0} and set(v2["value"]) == {6.0}
    # the lookback is left-open in 3.x too
    only = FrameSource.from_series({"g": ([0], [1.0])})
    assert query("g", 5 * MIN, source=only).height == 0
    assert query("g", 5 * MIN, source=only, prometheus_version=2).height == 1


def test_staleness_marker_ends_series() -> None:
    src = FrameSource.from_series({"g": ([0, MIN, 2 * MIN], [1.0, 2.0, STALE_NAN])})
    df = query_range("g", 0, 4 * MIN, "1m", source=src)
    assert df["ts"].to_list() == [0, MIN]
    # range windows skip the marker itself
    assert query("count_over_time(g[5m])", 2 * MIN, source=src)["value"].to_list() == [2.0]


def test_unknown_metric_is_empty_not_an_error() -> None:
    assert query_range("rate(nope[5m])", 0, 10 * MIN, MIN, source=counter_source()).height == 0
    assert evaluate_instant("absent(nope{job=\"x\"})", 0, source=counter_source()).labels == [{"job": "x"}]


def test_nan_inf_and_huge_values() -> None:
    src = FrameSource.from_series({'v{k="nan"}': ([0], [math.nan]), 'v{k="inf"}': ([0], [math.inf]), 'v{k="big"}': ([0], [1.7e308])})
    out = {ls["k"]: float(v[0]) for ls, v in zip(*(lambda r: (r.labels, r.values))(evaluate_instant("v * 2", 0, source=src)), strict=True)}
    assert math.isnan(out["nan"]) and out["inf"] == math.inf and out["big"] == math.inf
    r = evaluate_instant("sum(v)", 0, source=src)
    assert math.isnan(float(r.values[0][0]))
    assert evaluate_instant("1 / 0", 0, source=src).scalar == (0, math.inf)


def test_errors() -> None:
    with pytest.raises(PromQLSyntaxError, match=r"char \d+"):
        query("sum(rate(x[5m])", 0, source=counter_source())
    with pytest.raises(QueryError, match="regular expression"):
        query('x{a=~"("}', 0, source=counter_source())
    with pytest.raises(UnsupportedQuery, match="double_exponential_smoothing"):
        query("double_exponential_smoothing(req_total[5m], 0.5, 0.5)", 0, source=counter_source())
    with pytest.raises(UnsupportedQuery, match="limitk"):
        query("limitk(1, req_total)", 0, source=counter_source())
    with pytest.raises(QueryError, match="range query"):
        query_range("req_total[5m]", 0, MIN, MIN, source=counter_source())


def test_name_dropped_at_once_by_default() -> None:
    src = FrameSource.from_series({'a_total{j="x"}': ([0, MIN], [0.0, 1.0]), 'b_total{j="x"}': ([0, MIN], [0.0, 2.0])})
    # Prometheus' default: two rates with the same labels after dropping __name__ collide
    with pytest.raises(QueryError, match="same labelset"):
        query('rate({__name__=~"a_total|b_total"}[5m])', MIN, source=src)
    assert query('label_replace(rate({__name__=~"a_total|b_total"}[5m]), "n", "$1", "__name__", "(.*)")', MIN,
                 source=src, delayed_name_removal=True).height == 2


def test_chunked_range_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    src = counter_source()
    expr = "max_over_time(rate(req_total[3m])[4m:30s]) + on(job) group_left topk(1, req_total)"
    whole = query_range(expr, 4 * MIN, 10 * MIN, 15_000, source=src)
    monkeypatch.setattr(api_mod, "CHUNK_STEPS", 4)
    chunked = query_range(expr, 4 * MIN, 10 * MIN, 15_000, source=src)
    assert whole.sort(["labels", "ts"]).equals(chunked.sort(["labels", "ts"]))


def test_prometheus_json() -> None:
    src = counter_source()
    doc = orjson.loads(to_prometheus_json(evaluate_range('req_total{job="a"} / 60', 0, 2 * MIN, MIN, source=src)))
    assert doc == {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {"job": "a"}, "values": [[0, "0"], [60, "1"], [120, "2"]]}]},
    }
    doc = orjson.loads(to_prometheus_json(evaluate_instant("scalar(req_total{job=\"a\"}) / 0.75", 61.5, source=src)))
    assert doc["data"] == {"resultType": "scalar", "result": [61.5, "80"]}
    doc = orjson.loads(to_prometheus_json(evaluate_instant('"hi"', 1000, source=src)))
    assert doc["data"] == {"resultType": "string", "result": [1, "hi"]}
    doc = orjson.loads(to_prometheus_json(evaluate_instant("req_total{job=\"b\"} * -Inf", "60", source=src)))
    assert doc["data"]["result"][0]["value"] == [60, "-Inf"]


def test_store_source_and_cli(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        sid = st.add_series([{"__name__": "up", "job": "api"}])[0]
        st.insert_samples(pl.DataFrame({"series_id": [sid] * 3, "ts": [0, 60_000, 120_000], "value": [1.0, 0.0, 1.0]},
                                       schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64}))
    with Store(path, read_only=True) as st:
        assert query_range("up == 0", 0, 120_000, "60s", source=st)["ts"].to_list() == [60_000]
    runner = CliRunner()
    out = runner.invoke(app, ["promql", "query-range", "sum(up)", "--start", "0", "--end", "120", "--step", "60s",
                              "--store", str(path)])
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.output)["data"]["result"] == [{"metric": {}, "values": [[0, "1"], [60, "0"], [120, "1"]]}]
    out = runner.invoke(app, ["promql", "query", "up", "--time", "60", "--store", str(path), "--prometheus-version", "2"])
    assert orjson.loads(out.output)["data"]["result"] == [{"metric": {"__name__": "up", "job": "api"}, "value": [60, "0"]}]


def test_cli_syntax_error_before_opening_the_store(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["promql", "query", "sum(up", "--time", "0", "--store", str(tmp_path / "none.duckdb")])
    assert isinstance(out.exception, PromQLSyntaxError) and out.exception.exit_code == 2
    assert "char 4" in str(out.exception)


def test_openmetrics_source(tmp_path: Path) -> None:
    om = tmp_path / "m.om"
    om.write_text('# TYPE up unknown\nup{job="x"} 1 0\nup{job="x"} 0 60\n# EOF\n')
    df = query_range("up", 0, 60_000, 60_000, source=om)
    assert df["value"].to_list() == [1.0, 0.0]


def test_vectorised_over_many_series() -> None:
    n, steps = 300, 2000
    ts = np.arange(steps, dtype=np.int64) * 15_000
    labels = [{"__name__": "c_total", "i": str(i), "g": str(i % 7)} for i in range(n)]
    ids = [series_id(ls) for ls in labels]
    src = FrameSource.from_arrays(labels, ids, [np.full(steps, s, np.uint64) for s in ids], [ts] * n,
                                  [np.cumsum(np.full(steps, 1.0 + i % 3)) for i in range(n)])
    df = query_range("sum by (g) (rate(c_total[5m]))", 600_000, int(ts[-1]), 15_000, source=src)
    assert df.height == 7 * len(range(600_000, int(ts[-1]) + 1, 15_000))


def test_offline_evaluator_protocol() -> None:
    from vfanalytics.promql import OfflineEvaluator

    ev = OfflineEvaluator(counter_source(), prometheus_version=2)
    assert ev.query("count_over_time(req_total[5m])", 5 * MIN)["value"].to_list() == [6.0, 6.0]
    assert ev.query_range("sum(req_total)", 0, MIN, MIN)["value"].to_list() == [0.0, 180.0]


def test_aggregation_arithmetic_follows_the_version() -> None:
    """2.x adds plainly (as promtool 2.42 does); 3.x compensates (Kahan), and avg follows each version's mean."""
    from vfanalytics.promql import FrameSource, query

    src = FrameSource.from_series({'x{i="1"}': ([0], [1e16]), 'x{i="2"}': ([0], [1.0]), 'x{i="3"}': ([0], [1.0])})
    assert float(query("sum(x)", 0, source=src, prometheus_version=2)["value"][0]) == 1e16
    assert float(query("sum(x)", 0, source=src, prometheus_version=3)["value"][0]) == 1e16 + 2
    inf = FrameSource.from_series({'y{i="1"}': ([0], [float("inf")]), 'y{i="2"}': ([0], [5.0])})
    assert float(query("avg(y)", 0, source=inf, prometheus_version=2)["value"][0]) == float("inf")
    three = FrameSource.from_series({'z{i="1"}': ([0], [1.0]), 'z{i="2"}': ([0], [2.0]), 'z{i="3"}': ([0], [4.0])})
    for version in (2, 3):
        assert abs(float(query("avg(z)", 0, source=three, prometheus_version=version)["value"][0]) - 7 / 3) < 1e-15
