"""load_series: samples arriving in any run order come out sorted by (series, ts), last write winning."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfanalytics.promql import vector_selectors
from vfanalytics.promql.vector_selectors import load_series
from vfanalytics.series import canonical_labels, series_id


class RunSource:
    """A source that answers with fixed frames, samples in the given storage order."""

    def __init__(self, labels: list[dict[str, str]], runs: list[tuple[int, list[int], list[float]]]) -> None:
        self.series = pl.DataFrame(
            {"series_id": [series_id(x) for x in labels], "metric": [x["__name__"] for x in labels],
             "labels": [canonical_labels(x) for x in labels]},
            schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8})
        ids = self.series["series_id"].to_list()
        self.samples = pl.DataFrame(
            {"series_id": [ids[i] for i, tss, _ in runs for _ in tss],
             "ts": [t for _, tss, _ in runs for t in tss], "value": [v for _, _, vs in runs for v in vs]},
            schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64})

    def select(self, matchers, start, end):  # noqa: ANN001, ANN201 - the Source protocol
        return self.series, self.samples.filter(pl.col("ts").is_between(start, end))


@st.composite
def stored_runs(draw: st.DrawFn) -> tuple[list[dict[str, str]], list[tuple[int, list[int], list[float]]]]:
    n = draw(st.integers(1, 4))
    labels = [{"__name__": "m", "i": f"{draw(st.integers(0, 99)):02d}{k}"} for k in range(n)]
    runs = []
    for k in range(n):
        for _ in range(draw(st.integers(0, 4))):
            # one write: a time-ordered run of one series (timestamps may repeat other runs')
            tss = sorted(draw(st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True)))
            runs.append((k, [t * 1000 for t in tss], [float(draw(st.integers(0, 9))) for _ in tss]))
    order = draw(st.permutations(range(len(runs))))
    return labels, [runs[i] for i in order]


@pytest.mark.parametrize("sliced", [True, False], ids=["slices", "gather"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=stored_runs())
def test_load_series_orders_runs_and_keeps_the_last_write(case, sliced, monkeypatch) -> None:  # noqa: ANN001
    labels, runs = case
    monkeypatch.setattr(vector_selectors, "_MAX_SLICED_RUNS", 20_000 if sliced else 0)
    raw = load_series(RunSource(labels, runs), [("__name__", "=", "m")], 0, 40_000)
    # reference: by label set, then time; of equal timestamps the one stored last
    by_labels = sorted(range(len(labels)), key=lambda k: sorted(labels[k].items()))
    latest: dict[tuple[int, int], float] = {}
    for k, tss, vs in runs:
        for t, v in zip(tss, vs, strict=True):
            latest[(by_labels.index(k), t)] = v
    expected = sorted(latest.items())
    assert raw.labels == [labels[k] for k in by_labels]
    assert list(zip(raw.sid.tolist(), raw.ts.tolist(), strict=True)) == [key for key, _ in expected]
    assert raw.val.tolist() == [v for _, v in expected]


def test_load_series_sorts_a_series_whose_runs_overlap() -> None:
    # staleness markers written in their own batch interleave with the data run
    stale = float(np.frombuffer(np.uint64(0x7FF0000000000002).tobytes(), dtype=np.float64)[0])
    runs = [(0, [0, 60_000, 120_000, 180_000], [1.0, 2.0, 3.0, 4.0]), (1, [0, 60_000], [7.0, 8.0]),
            (0, [90_000], [stale])]
    labels = [{"__name__": "m", "i": "a"}, {"__name__": "m", "i": "b"}]
    raw = load_series(RunSource(labels, runs), [("__name__", "=", "m")], 0, 200_000)
    assert raw.sid.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert raw.ts.tolist() == [0, 60_000, 90_000, 120_000, 180_000, 0, 60_000]
    assert np.isnan(raw.val[2]) and raw.val[[0, 1, 3, 4, 5, 6]].tolist() == [1.0, 2.0, 3.0, 4.0, 7.0, 8.0]
