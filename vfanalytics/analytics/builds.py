"""Build times: p50/p95 by tech stack and complexity over time, change-point regressions, slowest combinations.

The source is the ``container_event`` / ``build_completed`` log line, which carries
each build's ``techStack``, ``complexity`` and exact ``buildDuration`` (seconds);
``vaporform_project_build_duration_seconds`` only keeps buckets of the same values.

Regression detection (:func:`change_points`) works per tech stack on the log of the
duration minus the median log of its (stack, complexity) cell, so a change in the
mix of simple and complex builds is not taken for a regression. On that series, in
time order, the split maximising the between-segment sum of squares
(``n1 n2 / n (mean1 - mean2)^2``, a single mean-shift change point) is tested with
a permutation test (the same maximum over shuffled orders); a change is reported
when its p-value is below ``alpha`` and its size ``exp(mean_after - mean_before)``
(a ratio of typical durations) is at least ``min_ratio`` away from 1. The time of
the change is the first build after the split.

Example
-------
>>> import numpy as np, polars as pl
>>> rng = np.random.default_rng(1)
>>> ts = np.arange(200) * 60_000
>>> dur = np.exp(rng.normal(3.0, 0.1, 200)) * np.where(np.arange(200) >= 120, 1.8, 1.0)
>>> builds = pl.DataFrame({"ts_ms": ts, "tech_stack": "nextjs", "complexity": "simple", "duration_s": dur})
>>> cp = change_points(builds)
>>> int(cp["change_ms"][0]) == 120 * 60_000, round(float(cp["ratio"][0]), 1)
(True, 1.8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "load_builds",
    "percentiles_over_time",
    "percentile_table",
    "slowest_combinations",
    "split_statistic",
    "change_points",
]

BUILD_SCHEMA = {"ts_ms": pl.Int64, "project_id": pl.Utf8, "tech_stack": pl.Utf8, "complexity": pl.Utf8,
                "duration_s": pl.Float64}


def load_builds(store: Any, start_ms: int, end_ms: int) -> pl.DataFrame:
    """Completed builds in the window from the logs (``BUILD_SCHEMA`` columns), in time order."""
    frame = store.sql(
        "SELECT ts_ns // 1000000 AS ts_ms, project_id, "
        "json_extract_string(extra, '$.techStack') AS tech_stack, "
        "json_extract_string(extra, '$.complexity') AS complexity, "
        "CAST(json_extract(extra, '$.buildDuration') AS DOUBLE) AS duration_s "
        "FROM logs WHERE event = 'build_completed' AND ts_ns BETWEEN ? AND ? ORDER BY ts_ns",
        [start_ms * 1_000_000, end_ms * 1_000_000],
    )
    return frame.cast(BUILD_SCHEMA).drop_nulls("duration_s") if frame.height else pl.DataFrame(schema=BUILD_SCHEMA)


def percentile_table(builds: pl.DataFrame, by: Sequence[str] = ("tech_stack", "complexity")) -> pl.DataFrame:
    """Builds, p50, p95 and mean duration (s) per group over the whole window (linear interpolation)."""
    return (
        builds.group_by(list(by))
        .agg(builds=pl.len(),
             p50=pl.col("duration_s").quantile(0.5, interpolation="linear"),
             p95=pl.col("duration_s").quantile(0.95, interpolation="linear"),
             mean=pl.col("duration_s").mean())
        .sort(list(by))
    )


def percentiles_over_time(builds: pl.DataFrame, every_ms: int, by: Sequence[str] = ("tech_stack",)) -> pl.DataFrame:
    """p50 / p95 per group and time bucket (``bucket_ms = ts - ts % every_ms``)."""
    keyed = builds.with_columns(bucket_ms=pl.col("ts_ms") - pl.col("ts_ms") % every_ms)
    return percentile_table(keyed, [*by, "bucket_ms"]).sort([*by, "bucket_ms"])


def slowest_combinations(builds: pl.DataFrame, n: int = 5, min_builds: int = 3) -> pl.DataFrame:
    """The ``n`` (tech stack, complexity) cells with the highest p95 among cells with ``min_builds`` builds."""
    table = percentile_table(builds)
    return table.filter(pl.col("builds") >= min_builds).sort("p95", descending=True).head(n)


def split_statistic(y: np.ndarray, min_size: int = 5) -> np.ndarray:
    """Between-segment sum of squares of every split of each row of ``y`` (NaN where a side < ``min_size``).

    ``y`` is 1-D (one series) or 2-D (rows are series, e.g. permutations); column
    ``k`` is the split before element ``k``.
    """
    y2 = np.atleast_2d(np.asarray(y, dtype=float))
    n = y2.shape[1]
    csum = np.cumsum(y2, axis=1)
    total = csum[:, -1:]
    k = np.arange(1, n, dtype=float)  # size of the left segment for split before element k
    left_mean = csum[:, :-1] / k
    right_mean = (total - csum[:, :-1]) / (n - k)
    stat = k * (n - k) / n * (left_mean - right_mean) ** 2
    valid = (k >= min_size) & (n - k >= min_size)
    stat = np.where(valid, stat, np.nan)
    out = np.full((y2.shape[0], n), np.nan)
    out[:, 1:] = stat
    return out[0] if np.ndim(y) == 1 else out


def change_points(builds: pl.DataFrame, *, alpha: float = 0.01, min_ratio: float = 0.1, min_size: int = 5,
                  permutations: int = 999, seed: int = 0) -> pl.DataFrame:
    """The strongest mean shift of each tech stack's complexity-adjusted log duration.

    Returns one row per tech stack with at least ``2 * min_size`` builds: ``tech_stack,
    builds, change_ms, ratio, p_value, before_p50, after_p50, significant``, most
    significant first. ``before_p50``/``after_p50`` are the raw median durations on each
    side (mixing complexities).
    """
    if builds.height == 0:
        return pl.DataFrame(schema={"tech_stack": pl.Utf8, "builds": pl.Int64, "change_ms": pl.Int64,
                                    "ratio": pl.Float64, "p_value": pl.Float64, "before_p50": pl.Float64,
                                    "after_p50": pl.Float64, "significant": pl.Boolean})
    rng = np.random.default_rng(seed)
    adjusted = builds.filter(pl.col("duration_s") > 0).with_columns(logd=pl.col("duration_s").log()).with_columns(
        resid=pl.col("logd") - pl.col("logd").median().over("tech_stack", "complexity")
    ).sort("ts_ms")
    rows: list[dict[str, Any]] = []
    for (stack,), part in adjusted.partition_by("tech_stack", as_dict=True, maintain_order=True).items():
        y = part["resid"].to_numpy()
        n = y.size
        if n < 2 * min_size:
            continue
        stat = split_statistic(y, min_size)
        k = int(np.nanargmax(stat))
        observed = float(stat[k])
        shuffled = rng.permuted(np.tile(y, (permutations, 1)), axis=1)
        null_max = np.nanmax(split_statistic(shuffled, min_size), axis=1)
        p_value = (1 + int((null_max >= observed).sum())) / (permutations + 1)
        ratio = float(np.exp(y[k:].mean() - y[:k].mean()))
        dur = part["duration_s"].to_numpy()
        rows.append({
            "tech_stack": stack, "builds": n, "change_ms": int(part["ts_ms"][k]), "ratio": ratio,
            "p_value": p_value, "before_p50": float(np.median(dur[:k])), "after_p50": float(np.median(dur[k:])),
            "significant": bool(p_value < alpha and abs(np.log(ratio)) >= np.log1p(min_ratio)),
        })
    out = pl.DataFrame(rows, schema={"tech_stack": pl.Utf8, "builds": pl.Int64, "change_ms": pl.Int64,
                                     "ratio": pl.Float64, "p_value": pl.Float64, "before_p50": pl.Float64,
                                     "after_p50": pl.Float64, "significant": pl.Boolean})
    return out.sort(["significant", "p_value", "tech_stack"], descending=[True, False, False])
