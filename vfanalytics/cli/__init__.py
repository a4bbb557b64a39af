"""The ``vfa`` command.

Each command group lives in its own module of this package and registers itself
through a ``register(app)`` function listed in :data:`COMMAND_MODULES` (a
registry, as papermill keeps its engines), so groups are added without touching
each other. Every :class:`~vfanalytics.exceptions.VfaError` becomes a one-line
message on stderr and its ``exit_code`` (2 for usage errors); a traceback is a bug.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.text import Text

from vfanalytics.exceptions import VfaError

try:  # typer >= 0.17 vendors click; earlier ones use the click package
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    from click import exceptions as click  # type: ignore[no-redef]
from vfanalytics.progress import stderr_console

__all__ = ["app", "main", "COMMAND_MODULES"]

#: modules that add commands to ``vfa``, in help order
COMMAND_MODULES = [
    "vfanalytics.cli.store",
    "vfanalytics.cli.demo",
    "vfanalytics.cli.pull",
    "vfanalytics.cli.promql",
    "vfanalytics.cli.rules",
    "vfanalytics.cli.rollout",
    "vfanalytics.cli.report",
]

app = typer.Typer(
    name="vfa",
    help="vfanalytics: pull Prometheus/Loki data, run PromQL offline, backtest alerts and rollouts, make reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_load_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vfa`` console script."""
    try:
        rv = app(args=argv, prog_name="vfa", standalone_mode=False)
    except VfaError as exc:
        _fail(str(exc), exc.exit_code)
    except click.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    # one line, and no rich markup: messages quote PromQL such as rate(x[5m])
    message = " ".join(message.split())
    stderr_console.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    sys.exit(code)
