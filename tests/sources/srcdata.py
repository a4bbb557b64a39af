"""Synthetic series for the sources tests, and helpers to compare what stores hold.

The dataset has the awkward parts real data has: label values with quotes,
backslashes, newlines and non-ASCII text; NaN, ±Inf, -0.0 and long-mantissa
values; scrape timestamps off whole seconds; a counter reset; missing scrapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from vfanalytics.series import canonical_labels, series_id
from vfanalytics.sources.pull import merge_intervals
from vfanalytics.store import Store

#: 2026-11-01T00:00:00Z
T0 = 1_793_491_200_000
STEP = 15_000
HOURS = 12

TRICKY = ['say "hi"', "back\\slash", "new\nline", "ünïcødé ✓ 日本", "a,b=c}", "{x=\"y\"}", "tab\there", "'single'"]


def make_dataset(n_plain: int = 24, hours: int = HOURS, seed: int = 3) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    label_sets = []
    for i in range(n_plain):
        label_sets.append({"__name__": "vfa_test_requests_total", "job": "api", "instance": f"10.0.0.{i}:9100"})
    for i, value in enumerate(TRICKY):
        label_sets.append({"__name__": "vfa_test_gauge", "job": "edge", "path": value, "idx": str(i)})
    series = pl.DataFrame(
        {
            "series_id": [series_id(ls) for ls in label_sets],
            "metric": [ls["__name__"] for ls in label_sets],
            "labels": [canonical_labels(ls) for ls in label_sets],
        },
        schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8},
    )
    n = hours * 3600_000 // STEP
    parts = []
    for k, sid in enumerate(series["series_id"].to_list()):
        offset = int(rng.integers(0, STEP))  # scrape phase, off whole seconds
        ts = T0 + offset + np.arange(n, dtype=np.int64) * STEP
        if k < n_plain:
            values = np.cumsum(rng.integers(0, 50, n)).astype(np.float64)
            values[n // 2 :] -= values[n // 2]  # a counter reset
        else:
            values = rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)
            values[rng.integers(0, n, 5)] = np.nan
            values[rng.integers(0, n, 3)] = np.inf
            values[rng.integers(0, n, 3)] = -np.inf
            values[rng.integers(0, n, 3)] = -0.0
        gap = slice(n // 3, n // 3 + 40) if k % 5 == 0 else slice(0, 0)  # a missing scrape stretch
        keep = np.ones(n, dtype=bool)
        keep[gap] = False
        parts.append(pl.DataFrame({"series_id": np.full(keep.sum(), sid, dtype=np.uint64), "ts": ts[keep], "value": values[keep]}))
    samples = pl.concat(parts).sort("series_id", "ts")
    return series, samples


END = T0 + HOURS * 3600_000
ALL = '{__name__=~"vfa_test_.*"}'


def content(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple[int, int]]]:
    """What a store holds: series, samples (sorted) and the merged coverage of its pulls."""
    with Store(path, read_only=True) as st:
        series = st.sql("SELECT * FROM series ORDER BY series_id")
        samples = st.sql("SELECT * FROM samples ORDER BY series_id, ts")
        pulls = st.pulls()
    cover = merge_intervals(zip(pulls["start_ms"].to_list(), pulls["end_ms"].to_list(), strict=True), gap=1)
    return series, samples, cover


def assert_same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same (series_id, ts) rows and bit-identical values."""
    assert a.select("series_id", "ts").equals(b.select("series_id", "ts"))
    assert (a["value"].to_numpy().view(np.uint64) == b["value"].to_numpy().view(np.uint64)).all()
