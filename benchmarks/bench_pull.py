"""Benchmark: Prometheus API JSON -> frames, and a 30-day pull from a local Prometheus.

Part 1 converts one saved ``query_range`` response (≥ 1 million samples over
≥ 1,000 series, recorded from the local Prometheus) three ways, in this process:

(a) ``prometheus_api_client``'s path: ``json.loads`` (what its ``response.json()``
    does) then ``MetricRangeDataFrame``; also (a') with ``orjson.loads`` instead,
(b) ours: :func:`vfanalytics.sources.promjson.decode_query_response`,
(c) bare ``orjson.loads`` of the body: the floor any JSON-based decoder pays.

Targets: (b) ≥ 20× faster than (a), and (b) ≤ 2× the time of (c).

Part 2 pulls the raw samples of 1,000 series over 30 days (5 min scrapes,
8.64 M samples) from Debian's Prometheus with :class:`PrometheusSource` in a child
process, and prints samples/s and the child's peak RSS against the Arrow size of
the final frame (target: peak RSS ≤ 3× Arrow size).

Run: ``.venv/bin/python benchmarks/bench_pull.py [--series 1000] [--days 30]``
(needs /usr/bin/prometheus and promtool; the input, its TSDB and the saved response are
cached under ``$VFA_BENCH_CACHE``, default ``~/.cache/vfanalytics-bench``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import prometheus_server  # noqa: E402
from vfanalytics.openmetrics import write_openmetrics  # noqa: E402
from vfanalytics.series import canonical_labels, series_id  # noqa: E402
from vfanalytics.sources.promjson import decode_query_response  # noqa: E402

#: the generated OpenMetrics file (~850 MB), its TSDB and the saved response live outside the checkout
CACHE = Path(os.environ.get("VFA_BENCH_CACHE", Path.home() / ".cache" / "vfanalytics-bench"))
T0 = 1_790_812_800_000  # 2026-10-01T00:00:00Z
SCRAPE = 300_000


def make_openmetrics(path: Path, n_series: int, days: int) -> int:
    rng = np.random.default_rng(42)
    labels = [
        {"__name__": "bench_requests_in_flight", "job": "bench", "instance": f"host-{i:05d}:9100", "zone": f"z{i % 7}"}
        for i in range(n_series)
    ]
    series = pl.DataFrame(
        {
            "series_id": [series_id(ls) for ls in labels],
            "metric": [ls["__name__"] for ls in labels],
            "labels": [canonical_labels(ls) for ls in labels],
        },
        schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8},
    )
    n = days * 86_400_000 // SCRAPE
    ids = np.repeat(series["series_id"].to_numpy(), n)
    phase = np.repeat(rng.integers(0, SCRAPE, n_series), n)
    ts = T0 + phase + np.tile(np.arange(n, dtype=np.int64) * SCRAPE, n_series)
    values = np.round(np.abs(np.cumsum(rng.normal(0, 3, n_series * n))) + 10, 3)
    samples = pl.DataFrame({"series_id": ids, "ts": ts, "value": values})
    return write_openmetrics(series, samples, path)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def part1(url: str, n_series: int) -> None:
    saved = CACHE / f"query_range_{n_series}.json"
    if not saved.exists():
        start = T0 + 86_400_000
        params = {"query": "bench_requests_in_flight", "start": start / 1000, "end": (start + 1099 * 15_000) / 1000,
                  "step": "15"}
        with urllib.request.urlopen(f"{url}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=600) as r:
            saved.write_bytes(r.read())
    body = saved.read_bytes()
    res = decode_query_response(body)
    n = res.samples.height
    print(f"\n== part 1: one saved query_range response: {len(body) / 1e6:.1f} MB, {res.series.height:,} series, "
          f"{n:,} samples")

    from prometheus_api_client import MetricRangeDataFrame

    # (a) as prometheus-api-client runs it: custom_query_range() returns response.json() (stdlib json),
    # then MetricRangeDataFrame; (a') the same frame built from orjson's parse, for comparison
    ta = best_of(lambda: MetricRangeDataFrame(json.loads(body)["data"]["result"]), 1)
    ta2 = best_of(lambda: MetricRangeDataFrame(orjson.loads(body)["data"]["result"]), 1)
    tb = best_of(lambda: decode_query_response(body), 5)
    tc = best_of(lambda: orjson.loads(body), 5)
    print(f"(a)  json.loads + MetricRangeDataFrame:   {n / ta:>14,.0f} samples/s  ({ta:.2f} s)")
    print(f"(a') orjson.loads + MetricRangeDataFrame: {n / ta2:>14,.0f} samples/s  ({ta2:.2f} s)")
    print(f"(b)  vfanalytics decode_query_response:   {n / tb:>14,.0f} samples/s  ({tb:.3f} s)")
    print(f"(c)  bare orjson.loads (floor):           {n / tc:>14,.0f} samples/s  ({tc:.3f} s)")
    print(f"(b) is {ta / tb:,.1f}x faster than (a), {ta2 / tb:,.1f}x faster than (a')  [target >= 20x]")
    print(f"(b) takes {tb / tc:.2f}x the time of (c)  [target <= 2x]")
    # both read the same numbers
    df = MetricRangeDataFrame(orjson.loads(body)["data"]["result"])
    assert np.array_equal(np.sort(df["value"].to_numpy()), np.sort(res.samples["value"].to_numpy()))


CHILD = r"""
import json, sys, time
import polars as pl
from vfanalytics.sources.prometheus import PrometheusSource

def hwm_mb():
    # VmHWM belongs to this process image (ru_maxrss would carry the parent's peak across fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

url, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = hwm_mb()
src = PrometheusSource(url, concurrency=int(sys.argv[4]), raw_window=int(sys.argv[5]))
t = time.perf_counter()
series, samples = src.raw_samples("bench_requests_in_flight", start, end)
dt = time.perf_counter() - t
peak = hwm_mb()
arrow = samples.to_arrow().nbytes / 2**20
print(json.dumps({"seconds": dt, "samples": samples.height, "series": series.height, "base_mb": base,
                  "peak_mb": peak, "arrow_mb": arrow, "requests": src.http.requests_sent}))
"""


def part2(url: str, days: int) -> None:
    end = T0 + days * 86_400_000
    out = subprocess.run([sys.executable, "-c", CHILD, url, str(T0), str(end), "4", str(6 * 3600_000)],
                         capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    r = json.loads(out.stdout)
    print(f"\n== part 2: raw pull of {r['series']:,} series x {days} days from Prometheus "
          f"({r['samples']:,} samples, {r['requests']} requests, concurrency 4)")
    print(f"{r['samples'] / r['seconds']:,.0f} samples/s  ({r['seconds']:.2f} s)")
    print(f"final frame Arrow size {r['arrow_mb']:.0f} MiB; child peak RSS {r['peak_mb']:.0f} MiB "
          f"(after imports {r['base_mb']:.0f} MiB; growth {r['peak_mb'] - r['base_mb']:.0f} MiB)")
    print(f"peak RSS / Arrow size = {r['peak_mb'] / r['arrow_mb']:.2f}  [target <= 3]; "
          f"growth / Arrow size = {(r['peak_mb'] - r['base_mb']) / r['arrow_mb']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--only", choices=["1", "2"], help="Run only part 1 or part 2.")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    om = CACHE / f"bench_{args.series}x{args.days}d.om"
    if not om.exists():
        t = time.perf_counter()
        n = make_openmetrics(om, args.series, args.days)
        print(f"wrote {n:,} samples to {om} in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with prometheus_server(om, Path(tmp), tsdb=CACHE / f"tsdb_{args.series}x{args.days}d") as url:
            print(f"prometheus (TSDB backfilled or cached) ready in {time.perf_counter() - t:.1f} s at {url}")
            if args.only != "2":
                part1(url, args.series)
            if args.only != "1":
                part2(url, args.days)


if __name__ == "__main__":
    main()
