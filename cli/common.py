"""Options shared by every stage command, so they read the same everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omnisearchsage.contract import ENV_WORKSPACE, Workspace

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
