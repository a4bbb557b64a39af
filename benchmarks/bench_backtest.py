"""Benchmark: the vectorised sweep against one Prometheus query, and our replay against vmalert -replay.

1. Sweep: a 40 thresholds × 6 ``for`` × 3 ``keep_firing_for`` grid over 30 days at a 60 s
   interval for N (default 1,000) lhs series, scored against incidents — against the local
   Prometheus (Debian 2.42) returning that same lhs through ``query_range`` (60 s step, split
   into ≤ 11,000-point requests) over the same range. Target ratio sweep / query ≤ 1.0.
2. Replay: the seed's rule file over the small demo (2 days; ``--replay-preset default``: 14
   days) at the seed's 15 s evaluation interval, our offline replay over the store against
   ``vmalert -replay`` over a local VictoriaMetrics holding the same data (every series the
   rules read), and the same replay pushed down to that server.
   vmalert gets ``-datasource.queryStep`` = the evaluation interval so that both evaluate the
   same ticks (its default 5m evaluates every 20th); the written ALERTS sample counts are
   printed to show both did the same work. Median of ``--repeat`` runs per side.
   Target ratio ours / vmalert ≤ 1.0.

Run: ``.venv/bin/python benchmarks/bench_backtest.py [--series 1000] [--skip-prometheus] [--skip-vmalert]
[--only sweep|replay] [--repeat 3] [--replay-preset small|default]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vfanalytics.series import canonical_labels, series_id  # noqa: E402
from vfanalytics.timeutil import format_time  # noqa: E402
from vfanalytics.tuning import SweepGrid, sweep  # noqa: E402

DAY = 86_400_000
START = 1_790_000_000_000 // DAY * DAY
SEED_RULES = REPO / "data" / "rules" / "vaporform-alerts.yml"


def make_lhs(n_series: int, days: int, raw_step_ms: int, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Gauge series (a noisy daily cycle plus bursts) sampled every ``raw_step_ms``."""
    rng = np.random.default_rng(seed)
    ts = np.arange(START, START + days * DAY, raw_step_ms, dtype=np.int64)
    phase = (ts - START) / DAY * 2 * np.pi
    labels = [{"__name__": "bench_lhs", "instance": f"i{i:04d}", "job": "bench"} for i in range(n_series)]
    sids = np.array([series_id(x) for x in labels], dtype=np.uint64)
    base = 0.5 + 0.3 * np.sin(phase)[None, :] + rng.normal(0, 0.05, (n_series, len(ts)))
    bursts = rng.random((n_series, len(ts))) < 0.002
    vals = np.round(base + bursts * rng.uniform(0.5, 2.0, (n_series, len(ts))), 4)
    series = pl.DataFrame({"series_id": sids, "metric": ["bench_lhs"] * n_series,
                           "labels": [canonical_labels(x) for x in labels]},
                          schema={"series_id": pl.UInt64, "metric": pl.Utf8, "labels": pl.Utf8})
    samples = pl.DataFrame({"series_id": np.repeat(sids, len(ts)), "ts": np.tile(ts, n_series),
                            "value": vals.ravel()}, schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64})
    return series, samples


def bench_sweep(n_series: int, days: int, skip_prometheus: bool) -> None:
    from vfanalytics.backtest import frame_to_matrix, ticks_for
    from vfanalytics.promql import FrameSource, query_range

    step = 60_000
    raw_step = 300_000  # stored samples every 5 min: 30 days x 1,000 series stays backfillable here
    series, samples = make_lhs(n_series, days, raw_step)
    end = START + days * DAY - raw_step
    ticks = ticks_for(START, end, step)
    t0 = time.perf_counter()
    frame = query_range("bench_lhs", START, end, step, source=FrameSource(series, samples), prometheus_version=2)
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys, values = frame_to_matrix(frame, ticks)
    t_pivot = time.perf_counter() - t0
    rng = np.random.default_rng(3)
    inc_s = np.sort(rng.integers(START, end, 20))
    inc_e = inc_s + rng.integers(10, 120, 20) * 60_000
    match = rng.random((len(keys), 20)) < 0.05
    thresholds = list(np.quantile(values[np.isfinite(values)], np.linspace(0.5, 0.9995, 40)))
    grid = SweepGrid(thresholds, [0, 60_000, 120_000, 300_000, 600_000, 900_000], [0, 300_000, 900_000])
    t0 = time.perf_counter()
    scores = sweep(values, ticks, grid, ">", interval_ms=step, incident_start=inc_s, incident_end=inc_e,
                   label_match=match)
    t_sweep = time.perf_counter() - t0
    print(f"sweep: {len(keys)} lhs series x {len(ticks)} ticks ({days} d at 60 s), grid {grid.size} points "
          f"({len(grid.thresholds)}x{len(grid.fors)}x{len(grid.keeps)}), {scores.height} scored")
    print(f"  our sweep (run-length on arrays, scoring incl.)   {t_sweep:8.2f} s")
    print(f"  (lhs offline evaluation {t_eval:.2f} s, pivot {t_pivot:.2f} s, not part of the sweep)")
    if skip_prometheus:
        return
    import requests

    from tests.servers import prometheus_server
    from vfanalytics.sources.prometheus import split_steps

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with prometheus_server((series, samples), Path(tmp)) as url:
            t_load = time.perf_counter() - t0
            # the server's own cost: each <= 11,000-step request answered in full (bytes read, not decoded)
            t0 = time.perf_counter()
            n_bytes = 0
            with requests.Session() as http:
                for lo, hi in split_steps(START, end, step):
                    r = http.post(f"{url}/api/v1/query_range", timeout=900,
                                  data={"query": "bench_lhs", "start": lo / 1000, "end": hi / 1000, "step": step / 1000})
                    r.raise_for_status()
                    n_bytes += len(r.content)
            t_prom = time.perf_counter() - t0
    print(f"  Prometheus 2.42 query_range of the lhs            {t_prom:8.2f} s  ({n_bytes / 1e6:.0f} MB of JSON; "
          f"backfill+start {t_load:.0f} s not counted)")
    print(f"  ratio sweep / query_range = {t_sweep / t_prom:.3f}  (target <= 1.0)")


def _median_time(fn: Any, repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls, and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _alert_samples(result: Any) -> int:
    """ALERTS + ALERTS_FOR_STATE samples a replay writes (staleness markers aside: vmalert writes none)."""
    from vfanalytics.series import is_stale

    values = result.alerts_series()[1]["value"].to_numpy()
    return int((~is_stale(values)).sum())


def _load_victoria_metrics(url: str, store: Any, selector_sets: list[tuple[Any, ...]]) -> int:
    """Import the series the rules read into VictoriaMetrics, one request a metric; samples sent."""
    import urllib.request

    from tests.servers import frames_to_text

    sent = 0
    for name in sorted({m[0][2] for m in selector_sets if m and m[0][:2] == ("__name__", "=")}):
        series, samples = store.select([("__name__", "=", name)])
        body = ("\n".join(frames_to_text((series, samples), timestamps="ms", drop_stale=True)) + "\n").encode()
        with urllib.request.urlopen(urllib.request.Request(url + "/api/v1/import/prometheus", data=body,
                                                           method="POST"), timeout=900):
            pass
        sent += samples.height
    with urllib.request.urlopen(url + "/internal/force_flush", timeout=60):
        pass
    return sent


def bench_replay(preset: str, skip_vmalert: bool, repeat: int) -> None:
    from vfanalytics.backtest import replay
    from vfanalytics.demo import PRESETS, generate_demo
    from vfanalytics.promql.prefetch import selector_reads
    from vfanalytics.rules import load_rule_file
    from vfanalytics.store import Store

    interval = 15_000
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "demo.duckdb"
        with Store(store_path) as st:
            generate_demo(st, PRESETS[preset])
        rf = load_rule_file(SEED_RULES)
        with Store(store_path, read_only=True) as st:
            info = st.info()
            start = (info["samples_start_ms"] // 60_000 + 10) * 60_000
            end = info["samples_end_ms"] // 60_000 * 60_000
            t_ours, res = _median_time(
                lambda: replay([rf], st, start, end, evaluation_interval_ms=interval, prometheus_version=2), repeat)
            n_ep = res.episodes(fired_only=True).height
        n_rules = sum(len(g.rules) for g in rf.groups)
        ticks = (end - start) // interval + 1
        print(f"replay: {n_rules} seed rules over the {preset} demo, {ticks} ticks of 15 s "
              f"({(end - start) / DAY:.1f} d), median of {repeat} runs each")
        print(f"  our replay (offline, store)                        {t_ours:6.2f} s  ({n_ep} fired episodes, "
              f"{_alert_samples(res)} ALERTS samples)")
        if skip_vmalert:
            return
        vmalert = shutil.which("vmalert")
        if vmalert is None:
            print("  vmalert not installed: skipped")
            return
        from tests.servers import victoria_metrics_server
        from vfanalytics.sources.prometheus import PrometheusSource

        # VictoriaMetrics holds every series the rules read (importing the rest would only slow the setup)
        reads = [k for r in rf.rules() for k, _, _ in selector_reads(r.expr, 300_000)]
        with victoria_metrics_server(None, Path(tmp)) as url, Store(store_path, read_only=True) as st:
            t0 = time.perf_counter()
            n_sent = _load_victoria_metrics(url, st, reads)
            print(f"  (VictoriaMetrics loaded with {n_sent} samples of the rules' metrics in "
                  f"{time.perf_counter() - t0:.0f} s, not counted)")
            base = [vmalert, f"-rule={SEED_RULES}", f"-datasource.url={url}", f"-remoteWrite.url={url}",
                    f"-replay.timeFrom={format_time(start)}", f"-replay.timeTo={format_time(end)}",
                    "-replay.rulesDelay=0s", "-replay.maxDatapointsPerQuery=10000",
                    "-replay.disableProgressBar", f"-evaluationInterval={interval // 1000}s", "-loggerLevel=INFO"]
            # vmalert sends step=-datasource.queryStep (default 5m), not the evaluation interval: left
            # at its default it evaluates every 5 min, a twentieth of the 15 s ticks we evaluate.
            # The comparison gives it the same ticks; the default run is printed for reference only.
            t_vm, done = _median_time(lambda: subprocess.run(
                [*base, f"-datasource.queryStep={interval // 1000}s"], capture_output=True, text=True, timeout=1800),
                repeat)
            t_vm5, done5 = _median_time(
                lambda: subprocess.run(base, capture_output=True, text=True, timeout=1800), 1)
            # our replay pushed down to the same VictoriaMetrics: one query_range per rule expression
            ev = PrometheusSource(url, concurrency=1)
            t_push, pushed = _median_time(
                lambda: replay([rf], None, start, end, evaluation_interval_ms=interval, evaluator=ev), repeat)
            ev.close()
        for run in (done, done5):
            if run.returncode != 0:
                print(f"  vmalert -replay failed: {run.stderr.strip()[-500:]}")
                return
        print(f"  vmalert -replay against VictoriaMetrics            {t_vm:6.2f} s  "
              f"({_imported(done)} samples written)")
        print(f"  our replay pushed down to the same VictoriaMetrics {t_push:6.2f} s  "
              f"({pushed.episodes(fired_only=True).height} fired episodes, {_alert_samples(pushed)} ALERTS samples)")
        print(f"  (vmalert at its default -datasource.queryStep=5m: {t_vm5:.2f} s, {_imported(done5)} samples; "
              "every 5 min only, not comparable)")
        print(f"  ratio ours (offline) / vmalert = {t_ours / t_vm:.3f}  (target <= 1.0)")
        print(f"  ratio ours (pushdown) / vmalert = {t_push / t_vm:.3f}  (target <= 1.0)")


def _imported(run: subprocess.CompletedProcess[str]) -> str:
    found = re.findall(r"Imported (\d+) samples", run.stdout + run.stderr)
    return found[-1] if found else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--skip-prometheus", action="store_true")
    ap.add_argument("--skip-vmalert", action="store_true")
    ap.add_argument("--only", choices=["sweep", "replay"])
    ap.add_argument("--repeat", type=int, default=3, help="replay runs per side (the median is printed)")
    ap.add_argument("--replay-preset", choices=["small", "default"], default="small",
                    help="demo the replay runs over (default: 14 days, about 40 s to generate, 6 GB RAM)")
    args = ap.parse_args()
    if args.only in (None, "sweep"):
        bench_sweep(args.series, args.days, args.skip_prometheus)
    if args.only in (None, "replay"):
        bench_replay(args.replay_preset, args.skip_vmalert, args.repeat)


if __name__ == "__main__":
    main()
