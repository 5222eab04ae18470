"""``omni sample`` (generate the synthetic world) and ``omni validate`` (check a workspace)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.sample_data.config import SIZES
from omnisearchsage.sample_data.generate import WorldStats, generate_world
from omnisearchsage.validate import row_counts, validate_workspace


def _stats_table(stats: WorldStats, root: Path) -> Table:
    table = Table(title=f"{stats.size} world (seed {stats.seed}) in {root}", show_header=True)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name in ("pins", "products", "boards", "board_pins", "engagements", "queries", "image_files",
                 "engagements_last_7_days"):
        table.add_row(name.replace("_", " "), f"{getattr(stats, name):,}")
    for name in ("pins_without_text", "pins_with_alt_text", "pins_on_a_board", "pins_fresh"):
        table.add_row(name.replace("_", " "), f"{getattr(stats, name):.1%}")
    table.add_row("query languages", ", ".join(f"{k} {v:.1%}" for k, v in stats.query_langs.items()))
    table.add_row("seconds", f"{stats.seconds:.1f}")
    return table


def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Workspace folder to write (created if needed).")],
    size: Annotated[
        str, typer.Option(help=f"World size: {', '.join(SIZES)} (tiny <1k pins; small ~20k, the demo; "
                               "large ~2M pins and 20M engagements).")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes identical files.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a workspace that already holds tables.")] = False,
) -> None:
    """Generate a synthetic Pinterest-like world: pins, products, boards, a year of engagements.

    Writes the raw/ tables and images plus the generator's ground truth (truth/); prints statistics.
    """
    stats = generate_world(out, size, seed, overwrite=force)
    Console().print(_stats_table(stats, out))


def validate(
    path: Annotated[
        Path | None,
        typer.Argument(help="Workspace folder. Default: $OMNI_WORKSPACE, else the current directory.",
                       show_default=False),
    ] = None,
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Check a workspace's raw tables against the data contract.

    Prints "ok" and row counts, or one line per problem (file, column, rows) and exits with code 2.
    """
    if path and workspace_opt and path != workspace_opt:
        raise OmniError(f"two workspaces given ({path} and --workspace {workspace_opt}); give one")
    ws = workspace(path or workspace_opt)
    validate_workspace(ws)
    typer.echo(f"ok: {ws.root}")
    for name, n in row_counts(ws).items():
        typer.echo(f"  {name}: {n:,} rows")
