"""Progress bars for long work (demo generation, pulls, sweeps, reports).

A thin wrapper over :mod:`rich.progress` so every command looks the same. Bars
go to stderr, and are hidden when stderr is not a terminal or when
``VFA_NO_PROGRESS`` is set (scheduled runs, CI logs).

Example
-------
>>> with progress_bar("demo", total=3) as advance:
...     for _ in range(3):
...         advance(1)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar", "stderr_console"]

#: the console every vfanalytics message to a person goes through (stderr)
stderr_console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[Callable[[float], None]]:
    """Show a bar while the block runs; yields ``advance(n)``."""
    disabled = bool(os.environ.get("VFA_NO_PROGRESS")) or not stderr_console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console,
        transient=True,
        disable=disabled,
    )
    with progress:
        task = progress.add_task(description, total=total)

        def advance(n: float = 1) -> None:
            progress.advance(task, n)

        yield advance
