"""Exact counter increases from stored samples: reset-aware, with staleness ending a counter.

PromQL's ``increase()`` extrapolates to the window edges and cannot see the first
value of a counter born inside the window, so it never adds up to what the
application logged. Reconciliation needs the exact figure, which the stored raw
samples give:

* within one life of a series the increase is the sum of the positive steps;
* a value lower than its predecessor is a counter reset (the process restarted):
  the new value counts in full, as ``increase()`` does;
* a Prometheus staleness marker ends the counter (its target went away); the next
  sample starts a new life and counts in full, because Vaporform's prom-client
  creates a labelled child at its first increment, so a counter starts from 0;
* a series' first sample counts in full when ``born_inside`` (the default) and no
  sample of the series lies in the ``lookback`` before ``start``; otherwise it is
  the baseline. Pass ``born_inside=False`` for pulls that start in the middle of
  long-lived counters.

Each increase is attributed to the timestamp of the sample that shows it, so
increases can be bucketed by day or hour.

Example
-------
>>> import polars as pl
>>> samples = pl.DataFrame({"series_id": [1, 1, 1, 1, 1], "ts": [0, 60_000, 120_000, 180_000, 240_000],
...                         "value": [5.0, 7.0, 2.0, 4.0, 4.0]}, schema={"series_id": pl.UInt64,
...                         "ts": pl.Int64, "value": pl.Float64})
>>> step_increases(samples, start_ms=0)["increase"].to_list()
[5.0, 2.0, 2.0, 2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from vfanalytics.series import SAMPLE_SCHEMA, is_stale

__all__ = ["step_increases", "counter_increases", "label_frame", "DEFAULT_LOOKBACK_MS"]

#: how far before ``start`` a sample proves a series was alive already (Prometheus' lookback delta)
DEFAULT_LOOKBACK_MS = 300_000


def step_increases(samples: pl.DataFrame, *, start_ms: int, born_inside: bool = True) -> pl.DataFrame:
    """Per-sample increase of each counter series (``series_id, ts, increase``), stale samples dropped.

    ``samples`` may reach back before ``start_ms`` (to tell born series from old
    ones); only rows at ``ts >= start_ms`` are returned.
    """
    if samples.height == 0:
        return pl.DataFrame(schema={"series_id": pl.UInt64, "ts": pl.Int64, "increase": pl.Float64})
    stale = is_stale(samples["value"].to_numpy())
    frame = samples.with_columns(pl.Series("stale", stale)).sort("series_id", "ts")
    # one sorted pass with plain shifts (cheaper than window expressions over 10^7 rows)
    same = pl.col("series_id") == pl.col("series_id").shift(1)
    frame = frame.with_columns(
        prev=pl.col("value").shift(1),
        prev_stale=pl.col("stale").shift(1).fill_null(False),
        first=~same.fill_null(False),
    ).filter(~pl.col("stale"))
    first_value = pl.col("value") if born_inside else pl.lit(0.0)
    # a first sample before start is only the baseline of the window
    first_value = pl.when(pl.col("ts") >= start_ms).then(first_value).otherwise(pl.lit(0.0))
    inc = (
        pl.when(pl.col("first"))
        .then(first_value)
        .when(pl.col("prev_stale") | (pl.col("value") < pl.col("prev")))
        .then(pl.col("value"))
        .otherwise(pl.col("value") - pl.col("prev"))
    )
    return (
        frame.with_columns(increase=inc.cast(pl.Float64))
        .filter(pl.col("ts") >= start_ms)
        .select("series_id", "ts", "increase")
    )


def _select_changes(source: Any, matchers: list[tuple[str, str, str]], lo: int, hi: int
                    ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``source.select`` keeping, per series, only samples whose value differs from the previous one.

    Dropping a repeated value is lossless for increases (its step is 0 and the next
    change sees the same predecessor); NaNs (staleness markers) are always kept. On a
    :class:`~vfanalytics.store.Store` the filter runs inside DuckDB, which spares
    moving a counter's flat stretches (most of its samples) into Python.
    """
    if not (hasattr(source, "series") and hasattr(source, "sql")):
        return source.select(matchers, lo, hi)
    series = source.series(matchers=matchers)
    if series.height == 0:
        return series, pl.DataFrame(schema=SAMPLE_SCHEMA)
    ids = ",".join(str(int(i)) for i in series["series_id"].to_list())
    samples = source.sql(
        "SELECT series_id, ts, value FROM ("
        "  SELECT series_id, ts, value, lag(value) OVER (PARTITION BY series_id ORDER BY ts) AS prev"
        f"  FROM samples WHERE series_id IN ({ids}) AND ts BETWEEN ? AND ?)"
        " WHERE prev IS NULL OR isnan(value) OR isnan(prev) OR value <> prev ORDER BY series_id, ts",
        [lo, hi],
    )
    return series, samples


def label_frame(series: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """``series_id`` plus one string column per label name (null when absent)."""
    dtype = pl.Struct({name: pl.Utf8 for name in names})
    decoded = series.select("series_id", pl.col("labels").str.json_decode(dtype).alias("_l"))
    return decoded.select("series_id", *[pl.col("_l").struct.field(n).alias(n) for n in names])


def counter_increases(
    source: Any,
    metric: str,
    start_ms: int,
    end_ms: int,
    labels: Sequence[str],
    *,
    matchers: Sequence[tuple[str, str, str]] = (),
    born_inside: bool = True,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    every_ms: int | None = None,
) -> pl.DataFrame:
    """Exact increase of ``metric`` over ``[start_ms, end_ms]`` grouped by ``labels``.

    Parameters
    ----------
    source:
        Anything with ``select(matchers, start_ms, end_ms) -> (series_df, samples_df)``
        (:class:`vfanalytics.store.Store`, :class:`vfanalytics.promql.FrameSource`).
    every_ms:
        Also group by time bucket ``ts - ts % every_ms`` (column ``bucket_ms``).

    Returns
    -------
    polars.DataFrame
        ``labels...``, [``bucket_ms``], ``increase`` (f64).
    """
    series, samples = _select_changes(source, [("__name__", "=", metric), *matchers], start_ms - lookback_ms, end_ms)
    steps = step_increases(samples, start_ms=start_ms, born_inside=born_inside).filter(pl.col("ts") <= end_ms)
    keyed = steps.join(label_frame(series, list(labels)), on="series_id", how="left")
    keys: list[Any] = list(labels)
    if every_ms:
        keyed = keyed.with_columns(bucket_ms=pl.col("ts") - pl.col("ts") % every_ms)
        keys.append("bucket_ms")
    if keyed.height == 0:
        return pl.DataFrame(
            schema={**{n: pl.Utf8 for n in labels}, **({"bucket_ms": pl.Int64} if every_ms else {}),
                    "increase": pl.Float64}
        )
    return keyed.group_by(keys).agg(pl.col("increase").sum()).sort(keys, nulls_last=True)

