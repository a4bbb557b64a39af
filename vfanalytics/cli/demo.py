"""``vfa demo``: generate the deterministic demo fleet and export it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.demo import PRESETS, generate_demo
from vfanalytics.exceptions import UsageError
from vfanalytics.progress import progress_bar, stderr_console
from vfanalytics.timeutil import format_time, parse_duration, parse_time

__all__ = ["register"]

demo_app = typer.Typer(help="The deterministic demo fleet (metrics, logs, incidents).", no_args_is_help=True)


@demo_app.command("generate")
def generate(
    store: StoreOption = None,
    preset: str = typer.Option("default", help="Starting point: 'default' (14 days, 250 users) or 'small'."),
    days: float | None = typer.Option(None, help="Days of history (overrides the preset)."),
    users: int | None = typer.Option(None, help="Number of users (overrides the preset)."),
    seed: int | None = typer.Option(None, help="Random seed (overrides the preset)."),
    step: str | None = typer.Option(None, help="Scrape interval, Prometheus duration syntax, e.g. 15s."),
    start: str | None = typer.Option(None, help="First scrape time (RFC 3339 or Unix seconds)."),
) -> None:
    """Generate the demo fleet into the store (replacing what it holds), in one transaction."""
    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    changes: dict[str, object] = {}
    if days is not None:
        changes["days"] = days
    if users is not None:
        changes["users"] = users
    if seed is not None:
        changes["seed"] = seed
    if step is not None:
        changes["step_ms"] = parse_duration(step)
    if start is not None:
        changes["start_ms"] = parse_time(start)
    cfg = dataclasses.replace(PRESETS[preset], **changes)  # type: ignore[arg-type]
    with open_store(store) as st, progress_bar("generating demo fleet", total=4) as advance:
        summary = generate_demo(st, cfg, progress=advance)
        path = st.path
    stderr_console.print(
        f"demo fleet in {path}: {summary['series']:,} series, {summary['samples']:,} samples, "
        f"{summary['logs']:,} log lines, {summary['incidents']} incidents, {summary['near_misses']} near misses, "
        f"{format_time(summary['start_ms'])} .. {format_time(summary['end_ms'])}, "
        f"content hash {summary['content_hash']}",
        highlight=False,
    )


@demo_app.command("export")
def export(
    out: Path = typer.Option(Path("data/generated/export"), "--out", help="Output directory."),
    store: StoreOption = None,
) -> None:
    """Export the store as OpenMetrics (metrics.om), Loki push JSON (loki/) and incidents.csv."""
    from vfanalytics.demo_export import export_store

    with open_store(store, read_only=True) as st, progress_bar("exporting", total=3) as advance:
        result = export_store(st, out, progress=advance)
    Console().print(
        f"wrote {result['samples']:,} samples to {result['openmetrics']}, {result['log_lines']:,} log lines in "
        f"{result['loki_batches']} Loki batches under {result['loki_dir']}, incidents to {result['incidents']}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
