"""Wall time of each report notebook on the default demo store, against the 60 s budget.

Usage: python benchmarks/bench_reports.py [--store PATH] [--preset default|small] [--reports a,b,...]

Target (issue 7): each report <= 60 s on the default demo (14 days, 250 users, 15 s
scrapes), kernel start and HTML rendering included. Without ``--store`` the demo is
generated into a temporary folder first (not timed). The machine's load average is
printed too: on a shared 2-core machine it explains more of the spread than the code.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from vfanalytics.demo import PRESETS, generate_demo
from vfanalytics.exceptions import ReportError
from vfanalytics.reports import REPORTS, ReportOutcome, run_reports
from vfanalytics.store import Store

BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an existing demo store (default: generate one)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--reports", default="all", help="comma-separated report names, or all")
    args = parser.parse_args()
    names = list(REPORTS) if args.reports == "all" else args.reports.split(",")
    os.environ.setdefault("VFA_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "demo.duckdb"
            t0 = time.perf_counter()
            with Store(store) as st:
                generate_demo(st, PRESETS[args.preset])
            print(f"generated the {args.preset} demo in {time.perf_counter() - t0:.1f} s (not counted)")
        outcomes: list[ReportOutcome] = []
        t0 = time.perf_counter()
        try:
            run_reports(names, store=store, out_root=Path(tmp) / "reports", on_report_done=outcomes.append)
        except ReportError as exc:
            print(f"FAILED: {exc}")
        total = time.perf_counter() - t0
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'report':<20}{'seconds':>9}{'/ budget':>10}  status")
    for o in outcomes:
        print(f"{o.name:<20}{o.seconds:>9.1f}{o.seconds / BUDGET_S:>10.2f}  {o.status}")
    print(f"{'all (with HTML, index)':<20}{total:>9.1f}")


if __name__ == "__main__":
    main()
