"""Sample files (OpenMetrics, CSV, Parquet) imported into the store, atomically."""

from __future__ import annotations

import polars as pl
import pytest

from tests.sources.srcdata import assert_same, make_dataset
from vfanalytics.exceptions import InputFileError
from vfanalytics.openmetrics import write_openmetrics
from vfanalytics.series import is_stale
from vfanalytics.sources.files import import_file, read_sample_file
from vfanalytics.store import Store


@pytest.fixture(scope="module")
def small():
    return make_dataset(n_plain=3, hours=1)


def _long_with_labels(series: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    return samples.join(series.select("series_id", "labels"), on="series_id").select("labels", "ts", "value")


def test_openmetrics_roundtrip(small, tmp_path):
    series, samples = small
    path = tmp_path / "m.om"
    write_openmetrics(series, samples, path)
    with Store(tmp_path / "s.duckdb") as st:
        n_series, rows = import_file(st, path)
        again = import_file(st, path)
        got = st.sql("SELECT * FROM samples ORDER BY series_id, ts")
        pulls = st.pulls()
    keep = samples.filter(pl.Series(~is_stale(samples["value"].to_numpy())))
    assert (n_series, rows) == (series.height, keep.height)
    assert again == (series.height, 0)  # already stored: nothing new
    assert_same(got, keep.sort("series_id", "ts"))
    assert pulls["kind"].to_list() == ["file", "file"] and pulls["source"][0].startswith("file://")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_files_with_labels_json(small, tmp_path, fmt):
    series, samples = small
    frame = _long_with_labels(series, samples)
    path = tmp_path / f"m.{fmt}"
    frame.write_csv(path) if fmt == "csv" else frame.write_parquet(path)
    s2, x2 = read_sample_file(path)
    assert sorted(s2["labels"].to_list()) == sorted(series["labels"].to_list())
    got = x2.sort("series_id", "ts")
    want = samples.sort("series_id", "ts")
    assert got.select("series_id", "ts").equals(want.select("series_id", "ts"))
    a, b = got["value"].to_numpy(), want["value"].to_numpy()
    assert ((a == b) | (a != a) & (b != b)).all()  # CSV spells NaN as text; every other value exact


def test_csv_with_label_columns_and_rfc3339(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "metric,job,route,timestamp,value\n"
        'http_requests_total,api,"/a,""b""",2026-11-01T00:00:00Z,1\n'
        'http_requests_total,api,"/a,""b""",2026-11-01T00:00:15.250Z,2.5\n'
        "up,api,,2026-11-01T00:00:00Z,1\n"
    )
    series, samples = read_sample_file(path)
    assert sorted(series["labels"].to_list()) == [
        '{"__name__":"http_requests_total","job":"api","route":"/a,\\"b\\""}',
        '{"__name__":"up","job":"api"}',
    ]
    assert samples.sort("ts")["ts"].to_list() == [1_793_491_200_000, 1_793_491_200_000, 1_793_491_215_250]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("job,ts,value\napi,0,1\n", "metric"),
        ("metric,ts,value\nup,0,x\n", "value must be numeric"),
        ("metric,timestamp,value\nup,yesterday,1\n", "row 1: timestamp 'yesterday'"),
        ("labels,ts,value\n\"[1]\",0,1\n", "not a JSON object"),
        ("metric,value\nup,1\n", "time column"),
    ],
)
def test_bad_files_name_the_problem_and_change_nothing(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with Store(tmp_path / "s.duckdb") as st:
        with pytest.raises(InputFileError, match=message) as err:
            import_file(st, path)
        assert str(path) in str(err.value)
        assert st.info()["samples"] == 0 and st.info()["series"] == 0 and st.info()["pulls"] == 0
