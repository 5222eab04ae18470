"""Options shared by every stage command, so they read the same everywhere."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from omnisearchsage.contract import ENV_WORKSPACE, Workspace
from omnisearchsage.errors import OmniError

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help=f"Workspace folder. Default: ${ENV_WORKSPACE}, else the current directory.",
        show_default=False,
    ),
]


def workspace(path: Path | None) -> Workspace:
    """Resolve ``--workspace`` the documented way (flag, then env var, then cwd)."""
    return Workspace.resolve(path)


def parse_numbers(items: Sequence[str], option: str, form: str) -> dict[str, float]:
    """``["save=3", "click=0.5"]`` -> ``{"save": 3.0, "click": 0.5}``; anything else is an error naming
    ``option`` and the expected ``form`` (e.g. ``"ACTION=NUMBER, e.g. save=3"``)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value) if sep and name.strip() else None
        except ValueError:
            number = None
        if number is None:
            raise OmniError(f"{option}: {item!r} is not {form}")
        out[name.strip()] = number
    return out
