"""The ``omni`` command: a thin Typer shell over the stage modules.

No logic lives here: each command parses options, calls one library function and
prints its result. Errors the user can fix (:class:`OmniError`) become one line on
stderr and exit code 2; anything else is one line too, with the traceback behind
``--debug``.
"""
from __future__ import annotations

import logging
import os
import sys

# OpenMP threads that spin while waiting make torch many times slower on a busy (or small,
# shared) machine; passive waiting costs little elsewhere. Users can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
    # Third-party chatter (faiss's CPU-feature probing, HF weight-loading bars) is not ours to show.
    for noisy in ("faiss", "faiss.loader", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not debug else logging.DEBUG)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _register() -> None:
    """Attach each stage's commands (one module per stage under cli/), in pipeline order.

    Imported here rather than at the top so the stage modules can import ``app``'s
    helpers without a cycle.
    """
    from omnisearchsage.cli.enrich import enrich_app
    from omnisearchsage.cli.eval import eval_cmd, import_app, report_cmd
    from omnisearchsage.cli.features import features_app
    from omnisearchsage.cli.pipeline import pipeline
    from omnisearchsage.cli.sample import sample, validate
    from omnisearchsage.cli.serve import serve
    from omnisearchsage.cli.train import embed_cmd, export_cmd, train_cmd

    app.command("pipeline")(pipeline)
    app.command("sample")(sample)
    app.command("validate")(validate)
    app.add_typer(import_app, name="import")
    app.add_typer(enrich_app, name="enrich")
    app.add_typer(features_app, name="features")
    app.command("train")(train_cmd)
    app.command("export")(export_cmd)
    app.command("embed")(embed_cmd)
    app.command("eval")(eval_cmd)
    app.command("report")(report_cmd)
    app.command("serve")(serve)

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
    except Exception as e:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # `python -m omnisearchsage.cli.app` (e.g. under `torchrun -m`)
    main()
