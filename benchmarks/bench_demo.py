"""Demo generation throughput (samples/s) and store bytes per sample.

Usage: python benchmarks/bench_demo.py [--preset default|small] [--days N] [--users N]

Target (issue 2): the default demo (14 days, 250 users, 15 s scrapes) is generated in
<= 60 s on a 2-core machine. Generation is vectorised (NumPy/Polars), so the time is
dominated by DuckDB's compression of the sample table.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

from vfanalytics.demo import PRESETS, generate_demo
from vfanalytics.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--days", type=float)
    parser.add_argument("--users", type=int)
    args = parser.parse_args()
    cfg = PRESETS[args.preset]
    if args.days:
        cfg = dataclasses.replace(cfg, days=args.days)
    if args.users:
        cfg = dataclasses.replace(cfg, users=args.users)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        with Store(path) as st:
            summary = generate_demo(st, cfg)
        elapsed = time.perf_counter() - t0
        size = path.stat().st_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"config           {cfg}")
    print(f"series           {summary['series']:,}")
    print(f"samples          {summary['samples']:,}")
    print(f"log lines        {summary['logs']:,}")
    print(f"seconds          {elapsed:.1f}  (target <= 60 s for the default preset)")
    print(f"samples/s        {summary['samples'] / elapsed:,.0f}")
    print(f"store bytes      {size:,}")
    print(f"bytes/sample     {size / summary['samples']:.2f}  (store file / samples, logs included)")
    print(f"peak RSS         {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
