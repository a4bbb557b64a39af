"""``vfa promql``: run PromQL offline and check the evaluator against Prometheus' own cases.

* ``vfa promql query-range EXPR --start T --end T --step S`` and
  ``vfa promql query EXPR --time T`` print exactly Prometheus' HTTP API JSON,
  so the output diffs directly against ``curl .../api/v1/query_range``;
* ``vfa promql conformance FILE.test ...`` runs promqltest files and ends with
  ``N passed, M failed, K skipped`` (exit 1 when anything failed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.exceptions import UsageError
from vfanalytics.promql.api import evaluate_instant, evaluate_range, to_prometheus_json
from vfanalytics.promql.conformance import run_file
from vfanalytics.promql.engine import EvalOptions, parse
from vfanalytics.promql.source import OpenMetricsSource, Source

__all__ = ["register"]

promql_app = typer.Typer(help="Evaluate PromQL offline (Prometheus semantics).", no_args_is_help=True)

OpenMetricsOption = Annotated[
    Path | None,
    typer.Option("--openmetrics", help="Read samples from this OpenMetrics file instead of the store.", show_default=False),
]
VersionOption = Annotated[
    int,
    typer.Option("--prometheus-version", help="Window semantics: 3 (left-open, default) or 2 (closed, as 2.x)."),
]
LookbackOption = Annotated[
    str, typer.Option("--lookback", help="Lookback delta of instant selectors (Prometheus duration).")
]
DelayedOption = Annotated[
    bool,
    typer.Option("--delayed-name-removal", help="Keep __name__ until the end (Prometheus' feature flag)."),
]


def _run(openmetrics: Path | None, store: Path | None, fn: Callable[[Source], None]) -> None:
    if openmetrics is not None and store is not None:
        raise UsageError("give either --store or --openmetrics, not both")
    if openmetrics is not None:
        if not openmetrics.exists():
            raise UsageError(f"{openmetrics}: no such file")
        fn(OpenMetricsSource(openmetrics))
        return
    with open_store(store, read_only=True) as st:
        fn(st)


@promql_app.command("query-range")
def query_range_cmd(
    expr: Annotated[str, typer.Argument(help="PromQL expression.")],
    start: Annotated[str, typer.Option("--start", help="Start: RFC 3339, Unix seconds or now-7d.")],
    end: Annotated[str, typer.Option("--end", help="End (inclusive).")],
    step: Annotated[str, typer.Option("--step", help="Resolution: duration (60s) or seconds.")],
    store: StoreOption = None,
    openmetrics: OpenMetricsOption = None,
    prometheus_version: VersionOption = 3,
    lookback: LookbackOption = "5m",
    delayed_name_removal: DelayedOption = False,
) -> None:
    """Evaluate a range query; print the Prometheus API JSON (resultType matrix)."""

    parse(expr)

    def go(src: Source) -> None:
        res = evaluate_range(
            expr, start, end, step, source=src, prometheus_version=prometheus_version,
            lookback=lookback, delayed_name_removal=delayed_name_removal,
        )
        typer.echo(to_prometheus_json(res).decode())

    _run(openmetrics, store, go)


@promql_app.command("query")
def query_cmd(
    expr: Annotated[str, typer.Argument(help="PromQL expression.")],
    time: Annotated[str, typer.Option("--time", help="Evaluation time: RFC 3339, Unix seconds or now.")] = "now",
    store: StoreOption = None,
    openmetrics: OpenMetricsOption = None,
    prometheus_version: VersionOption = 3,
    lookback: LookbackOption = "5m",
    delayed_name_removal: DelayedOption = False,
) -> None:
    """Evaluate an instant query; print the Prometheus API JSON."""

    parse(expr)

    def go(src: Source) -> None:
        res = evaluate_instant(
            expr, time, source=src, prometheus_version=prometheus_version,
            lookback=lookback, delayed_name_removal=delayed_name_removal,
        )
        typer.echo(to_prometheus_json(res).decode())

    _run(openmetrics, store, go)


@promql_app.command("conformance")
def conformance_cmd(
    files: Annotated[list[Path], typer.Argument(help="promqltest files (*.test).")],
    prometheus_version: VersionOption = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List passed cases too.")] = False,
) -> None:
    """Run Prometheus promqltest files; ends with 'N passed, M failed, K skipped'."""
    passed = failed = skipped = 0
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        res = run_file(path, options=EvalOptions(prometheus_version=prometheus_version, delayed_name_removal=True))
        for case in res.cases:
            if case.status == "failed":
                typer.echo(f"FAIL {case.path}:{case.line}: {case.expr}\n     {case.reason}")
            elif case.status == "skipped":
                typer.echo(f"SKIP {case.path}:{case.line}: {case.expr} -- {case.reason}")
            elif verbose:
                typer.echo(f"PASS {case.path}:{case.line}: {case.expr}")
        typer.echo(f"{path}: {res.passed} passed, {res.failed} failed, {res.skipped} skipped")
        passed += res.passed
        failed += res.failed
        skipped += res.skipped
    typer.echo(f"{passed} passed, {failed} failed, {skipped} skipped")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(promql_app, name="promql")
