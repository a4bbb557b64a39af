"""Benchmark: the offline PromQL evaluator against the local Prometheus on the same data.

Generates a synthetic fleet (``--series`` request counters and as many
histogram bucket series, one sample per ``--scrape`` over ``--days``), writes
it to a vfanalytics store and to an OpenMetrics file, backfills a TSDB with
``promtool`` and starts ``/usr/bin/prometheus`` on 127.0.0.1. Then, for each
query and step, it times

* Prometheus: HTTP ``/api/v1/query_range`` (split into requests of at most
  11,000 steps, Prometheus' limit), JSON decoded;
* ours: :func:`vfanalytics.promql.query_range` from the store to the result frame,

one after the other, and prints both times and the ratio ours/Prometheus.

Run (full size takes a while: the backfill dominates)::

    .venv/bin/python benchmarks/bench_promql.py --days 30 --series 1000
    .venv/bin/python benchmarks/bench_promql.py --days 7 --series 1000   # ~6 min, ~6 GB RAM

The data preparation (not the evaluator, which reads in chunks) holds the whole
fleet in memory: 30 days of 2,000 series at 60 s is 86 M samples and needs
roughly 20 GB while the store and the OpenMetrics file are written.

Measured on the 2-core dev VM (7 days, 1,000 counters + 1,000 buckets, 60 s scrape),
ours/Prometheus: rate 0.79 / 0.21, sum by rate 0.82 / 0.69, histogram_quantile
0.80 / 0.75, ratio of sums 0.70 / 0.89 (step 60 s / 15 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import prometheus_server  # noqa: E402
from vfanalytics.openmetrics import write_openmetrics  # noqa: E402
from vfanalytics.promql import query_range  # noqa: E402
from vfanalytics.series import canonical_labels, series_id  # noqa: E402
from vfanalytics.store import Store  # noqa: E402

#: 2026-10-01T00:00:00Z
T0 = 1_790_812_800_000
LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")

QUERIES = [
    ("rate", 'rate(bench_requests_total{instance="i-000"}[5m])'),
    ("sum by rate", "sum by (route) (rate(bench_requests_total[5m]))"),
    ("histogram_quantile", "histogram_quantile(0.95, sum by (le) (rate(bench_request_duration_seconds_bucket[5m])))"),
    ("ratio of sums", 'sum(rate(bench_requests_total{status="500"}[5m])) / sum(rate(bench_requests_total[5m]))'),
]


def fleet(days: int, n_series: int, scrape_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n_series`` counters ``bench_requests_total`` and ``n_series`` bucket series."""
    rng = np.random.default_rng(1)
    n = days * 86_400_000 // scrape_ms
    ts = T0 + np.arange(n, dtype=np.int64) * scrape_ms
    labels: list[dict[str, str]] = []
    columns: list[np.ndarray] = []
    routes = [f"/api/r{r}" for r in range(10)]
    instances = max(1, n_series // (len(routes) * 2))
    for i in range(instances):
        for route in routes:
            for status in ("200", "500"):
                rate = (5.0 if status == "200" else 0.1) * scrape_ms / 1000
                counter = np.cumsum(rng.poisson(rate, n)).astype(np.float64)
                labels.append({"__name__": "bench_requests_total", "instance": f"i-{i:03d}", "route": route, "status": status})
                columns.append(counter)
    hist_groups = max(1, n_series // len(LE))
    lam = np.array([0.5, 0.8, 1.0, 1.2, 1.0, 0.8, 0.5, 0.3, 0.1, 0.05]) * scrape_ms / 1000
    for g in range(hist_groups):
        per_bucket = rng.poisson(lam[:, None], (len(LE), n))  # observations falling in each bucket
        cumulative = np.cumsum(np.cumsum(per_bucket, axis=0), axis=1).astype(np.float64)
        for k, le in enumerate(LE):
            labels.append({"__name__": "bench_request_duration_seconds_bucket", "instance": f"i-{g:03d}", "le": le})
            columns.append(cumulative[k])
    ids = [series_id(ls) for ls in labels]
    series_df = pl.DataFrame(
        {"series_id": ids, "metric": [ls["__name__"] for ls in labels], "labels": [canonical_labels(ls) for ls in labels]},
        schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8},
    )
    samples_df = pl.DataFrame(
        {
            "series_id": np.repeat(np.asarray(ids, dtype=np.uint64), n),
            "ts": np.tile(ts, len(ids)),
            "value": np.concatenate(columns),
        },
        schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64},
    )
    return series_df, samples_df


def prometheus_range(url: str, expr: str, start: int, end: int, step: int) -> int:
    """Run the range query over HTTP in chunks of <= 11,000 steps; return the number of points."""
    points = 0
    chunk = 11_000 * step
    t = start
    while t <= end:
        e = min(end, t + chunk - step)
        body = urllib.parse.urlencode({"query": expr, "start": t / 1000, "end": e / 1000, "step": step / 1000}).encode()
        with urllib.request.urlopen(f"{url}/api/v1/query_range", data=body, timeout=3600) as resp:
            doc = orjson.loads(resp.read())
        if doc.get("status") != "success":
            raise RuntimeError(doc)
        points += sum(len(r["values"]) for r in doc["data"]["result"])
        t = e + step
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--series", type=int, default=1000, help="counter series (and as many bucket series)")
    ap.add_argument("--scrape", type=int, default=60, help="seconds between samples")
    ap.add_argument("--steps", default="60,15", help="query steps in seconds, comma-separated")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_promql_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    frames = fleet(args.days, args.series, args.scrape * 1000)
    print(f"data: {frames[0].height} series, {frames[1].height:,} samples ({time.perf_counter() - t:.1f}s)", flush=True)
    store_path = work / "bench.duckdb"
    if not store_path.exists():
        with Store(store_path) as st:
            st.insert_series(frames[0])
            st.insert_samples(frames[1])
    om = work / "bench.om"
    if not om.exists():
        write_openmetrics(frames[0], frames[1], om)
    del frames
    print(f"store and OpenMetrics written ({time.perf_counter() - t:.1f}s); backfilling Prometheus...", flush=True)
    start = T0 + 3_600_000
    end = T0 + args.days * 86_400_000 - 60_000
    with prometheus_server(om, work) as url, Store(store_path, read_only=True) as st:
        print(f"prometheus ready ({time.perf_counter() - t:.1f}s)\n", flush=True)
        print(f"{'query':<20} {'step':>5} {'points':>11} {'prometheus s':>13} {'ours s':>8} {'ours/prom':>10}")
        for step_s in (int(s) for s in args.steps.split(",")):
            step = step_s * 1000
            for name, expr in QUERIES:
                t0 = time.perf_counter()
                points = prometheus_range(url, expr, start, end, step)
                t_prom = time.perf_counter() - t0
                t0 = time.perf_counter()
                frame = query_range(expr, start, end, step, source=st)
                t_ours = time.perf_counter() - t0
                if frame.height != points:
                    print(f"  warning: {name}: {frame.height} points ours, {points} prometheus")
                print(f"{name:<20} {step_s:>4}s {points:>11,} {t_prom:>13.2f} {t_ours:>8.2f} {t_ours / t_prom:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
