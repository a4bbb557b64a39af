"""``vfa store``: inspect the DuckDB store."""

from __future__ import annotations

import orjson
import typer
from rich.console import Console
from rich.table import Table

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.timeutil import format_time

__all__ = ["register"]

store_app = typer.Typer(help="Inspect the DuckDB store.", no_args_is_help=True)


@store_app.command("info")
def info(
    store: StoreOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print what the store holds: series, samples, time range, logs, incidents, pulls."""
    with open_store(store, read_only=True) as st:
        data = st.info()
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"store {data['path']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("file size", f"{data['bytes'] / 1e6:,.1f} MB")
    table.add_row("schema version", str(data["schema_version"]))
    table.add_row("metrics", f"{data['metrics']:,}")
    table.add_row("series", f"{data['series']:,}")
    table.add_row("samples", f"{data['samples']:,}")
    if data["samples"]:
        table.add_row("samples from", format_time(data["samples_start_ms"]))
        table.add_row("samples to", format_time(data["samples_end_ms"]))
        table.add_row("bytes / sample", f"{data['bytes'] / data['samples']:.2f}")
    table.add_row("log lines", f"{data['logs']:,}")
    if data["logs"]:
        table.add_row("logs from", format_time(data["logs_start_ns"] // 1_000_000))
        table.add_row("logs to", format_time(data["logs_end_ns"] // 1_000_000))
    table.add_row("incidents", f"{data['incidents']:,}")
    table.add_row("near misses", f"{data['near_misses']:,}")
    table.add_row("pulls recorded", f"{data['pulls']:,}")
    for k, v in data["meta"].items():
        table.add_row(k, v)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
