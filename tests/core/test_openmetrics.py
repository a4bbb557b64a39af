"""OpenMetrics export/import round trip, and promtool's acceptance of the demo export."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.conftest import require_binary
from vfanalytics.exceptions import OpenMetricsError
from vfanalytics.openmetrics import read_openmetrics, write_openmetrics
from vfanalytics.series import STALE_NAN, canonical_labels, is_stale, series_id
from vfanalytics.store import SAMPLE_SCHEMA, Store


def test_round_trip_keeps_every_sample_and_odd_labels(tmp_path: Path) -> None:
    label_sets = [
        {"__name__": "weird", "v": 'quote " backslash \\ newline \n unicode é 🚀 <script>'},
        {"__name__": "weird", "v": ""},
        {"__name__": "plain_total"},
    ]
    series = pl.DataFrame({"series_id": [series_id(x) for x in label_sets], "metric": [x["__name__"] for x in label_sets],
                           "labels": [canonical_labels(x) for x in label_sets]},
                          schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8})
    values = [0.1, -0.0, 1e-300, 1.7976931348623157e308, math.inf, -math.inf, math.nan, 1 / 3, 123456789.125, STALE_NAN]
    sid = series["series_id"].to_list()
    samples = pl.DataFrame({"series_id": [sid[i % 3] for i in range(len(values))],
                            "ts": [1000 * i + 7 for i in range(len(values))], "value": values}, schema=SAMPLE_SCHEMA)
    path = tmp_path / "x.om"
    assert write_openmetrics(series, samples, path) == len(values) - 1  # the staleness marker is not exportable
    s2, x2 = read_openmetrics(path)
    want = samples.filter(~pl.Series(is_stale(samples["value"].to_numpy()))).sort("series_id", "ts")
    got = x2.sort("series_id", "ts")
    assert got["series_id"].to_list() == want["series_id"].to_list()
    assert got["ts"].to_list() == want["ts"].to_list()
    assert [repr(v) for v in got["value"].to_list()] == [repr(v) for v in want["value"].to_list()]
    labels = {orjson.loads(x)["__name__"] + orjson.loads(x).get("v", "-") for x in s2["labels"]}
    assert "weird" + label_sets[0]["v"] in labels


def test_demo_export_round_trip(small_demo_store: Path, small_demo_export: Path) -> None:
    series, samples = read_openmetrics(small_demo_export / "metrics.om")
    with Store(small_demo_store, read_only=True) as st:
        stored = st.samples()
        n_series = st.series().height
    stored = stored.filter(~pl.Series(is_stale(stored["value"].to_numpy())))
    assert series.height == n_series
    assert samples.height == stored.height
    joined = stored.join(samples, on=["series_id", "ts"], how="inner", suffix="_om")
    assert joined.height == stored.height
    assert (joined["value"].to_numpy().view("u8") == joined["value_om"].to_numpy().view("u8")).all()


def test_loki_batches_and_incident_csv(small_demo_store: Path, small_demo_export: Path) -> None:
    lines = 0
    for batch in sorted((small_demo_export / "loki").glob("batch-*.json")):
        body = orjson.loads(batch.read_bytes())
        for stream in body["streams"]:
            assert set(stream["stream"]) == {"service", "env", "level"}
            ts = [int(v[0]) for v in stream["values"]]
            assert ts == sorted(ts)
            lines += len(ts)
    with Store(small_demo_store, read_only=True) as st:
        assert lines == st.info()["logs"]
        n_inc = st.info()["incidents"]
    inc = pl.read_csv(small_demo_export / "incidents.csv")
    assert inc.height == n_inc and {"id", "start", "end", "severity", "matchers", "title"} <= set(inc.columns)


@pytest.mark.parametrize("text,line", [
    ("up 1 1000\nup{job=\"a\" 2 1000\n", 2),
    ("up one 1000\n", 1),
    ("# TYPE up gauge\nup 1\n", 2),
])
def test_malformed_files_name_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "bad.om"
    path.write_text(text)
    with pytest.raises(OpenMetricsError) as err:
        read_openmetrics(path)
    assert err.value.line == line and str(path) in str(err.value)


@pytest.mark.integration
def test_promtool_backfills_the_demo_export(small_demo_export: Path, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    out = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                          str(small_demo_export / "metrics.om"), str(tmp_path / "tsdb")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = [p for p in (tmp_path / "tsdb").iterdir() if (p / "meta.json").exists()]
    assert len(blocks) >= 20  # two days in two-hour blocks
    total = sum(orjson.loads((b / "meta.json").read_bytes())["stats"]["numSamples"] for b in blocks)
    series, samples = read_openmetrics(small_demo_export / "metrics.om")
    assert total == samples.height
