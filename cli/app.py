"""The ``omni`` command: a thin Typer shell over the stage modules.

No logic lives here: each command parses options, calls one library function and
prints its result. Errors the user can fix (:class:`OmniError`) become one line on
stderr and exit code 2; anything else is one line too, with the traceback behind
``--debug``.
"""
from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from omnisearchsage import __version__, progress
from omnisearchsage.errors import OmniError

app = typer.Typer(
    name="omni",
    help="OmniSearchSage toolkit: enrich, featurize, train, export, evaluate and serve "
    "one query embedding for pins, products and queries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"omni {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """OmniSearchSage toolkit."""
    _state["debug"] = debug
    progress.set_enabled(not quiet and sys.stderr.isatty())
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def _register() -> None:
    """Attach each stage's commands (one module per stage under cli/)."""
    # Stage command modules register themselves here as they land.


_register()


def main() -> None:
    """Console-script entry point: run the app, turning errors into one line."""
    try:
        app(standalone_mode=False)
    except OmniError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into one line
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
