"""Options and helpers shared by the ``vfa`` command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vfanalytics.store import Store, resolve_store_path

__all__ = ["StoreOption", "open_store"]

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="DuckDB store file (default: $VFA_STORE, else data/vfanalytics.duckdb).",
        show_default=False,
    ),
]


def open_store(path: Path | None, *, read_only: bool = False) -> Store:
    """Open the store named by ``--store`` / ``$VFA_STORE`` / the default."""
    return Store(resolve_store_path(path), read_only=read_only)
