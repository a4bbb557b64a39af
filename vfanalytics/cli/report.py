"""``vfa report NAME|all``: run report notebooks with papermill into ``reports/<window end>/``."""

from __future__ import annotations

from pathlib import Path

import typer

from vfanalytics.cli._common import StoreOption
from vfanalytics.reports import REPORTS
from vfanalytics.store import resolve_store_path

__all__ = ["register"]


def _parameters(args: list[str]) -> dict[str, str]:
    """``-p KEY VALUE`` / ``--parameter KEY VALUE`` pairs (typer has no repeatable two-value option)."""
    from vfanalytics.exceptions import UsageError

    params: dict[str, str] = {}
    i = 0
    while i < len(args):
        if args[i] not in ("-p", "--parameter"):
            raise UsageError(f"unexpected argument {args[i]!r}; parameters are given as -p KEY VALUE")
        if len(args) - i < 3:
            raise UsageError(f"{args[i]} needs KEY VALUE")
        params[args[i + 1]] = args[i + 2]
        i += 3
    return params


def report(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"Report to run: {', '.join(REPORTS)}, or 'all'.", metavar="NAME|all"),
    out: Path = typer.Option(Path("reports"), "--out", help="Folder holding the runs and index.html."),
    align: str | None = typer.Option(
        None, "--align", help="Floor the window edges to a multiple of this duration (e.g. 1d) for idempotent "
        "scheduled runs.",
    ),
    cell_timeout: int = typer.Option(300, "--cell-timeout", help="Seconds a single cell may run."),
    store: StoreOption = None,
) -> None:
    """Execute report notebooks, render offline HTML, write exports and index.html.

    Notebook parameters are given as -p KEY VALUE (repeatable), e.g. -p start now-7d -p end now -p prices '{"*": 3}'; JSON numbers, lists and objects are parsed.

    Without -p start/end the window is the store's whole time range, rounded out to hours. A failing cell exits non-zero naming the notebook and cell; the partial notebook is kept.
    """
    from vfanalytics.exceptions import UsageError
    from vfanalytics.progress import progress_bar, stderr_console
    from vfanalytics.reports import run_reports

    names = list(REPORTS) if name == "all" else [name]
    if name != "all" and name not in REPORTS:
        raise UsageError(f"unknown report {name!r}; reports: {', '.join(REPORTS)}, all")
    params = _parameters(list(ctx.args))
    with progress_bar("reports", total=len(names)) as advance:
        def done(outcome: object) -> None:
            advance(1)
            o = outcome  # a ReportOutcome
            status = "[green]ok[/]" if getattr(o, "status", "") == "ok" else "[red]failed[/]"
            stderr_console.print(f"{getattr(o, 'name', '?')}: {status} in {getattr(o, 'seconds', 0.0):.1f} s")

        summary = run_reports(names, store=resolve_store_path(store), out_root=out, params=params,
                              align=align, cell_timeout_s=cell_timeout, on_report_done=done)
    typer.echo(str(summary.index))


def register(app: typer.Typer) -> None:
    app.command("report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(report)
