"""``omni serve``: the query-embedding service over an export, on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.serving.config import INDEX_BACKENDS, ServeConfig

_D = ServeConfig()


def serve(
    export: Annotated[
        str, typer.Argument(help="Export folder (runs/NAME/export), or a run NAME in the workspace.")
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 to listen beyond this machine.")
    ] = _D.host,
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = _D.port,
    workers: Annotated[
        int, typer.Option(help="Worker processes (each loads the model and keeps its own cache).", min=1)
    ] = _D.workers,
    cache_ttl: Annotated[
        float, typer.Option(help="Seconds a cached query embedding stays valid (30 days).", min=1)
    ] = _D.cache_ttl_s,
    cache_size: Annotated[
        int, typer.Option(help="Most cached queries per worker (LRU beyond).", min=1)
    ] = _D.cache_max_entries,
    index: Annotated[
        str,
        typer.Option(
            help=f"Entity index: {' | '.join(INDEX_BACKENDS)} (auto = faiss or usearch "
            "if installed, else exact)."
        ),
    ] = _D.index_backend,
    max_batch: Annotated[
        int, typer.Option(help="Most queries in one POST /embed.", min=1)
    ] = _D.max_batch_queries,
    ws: WorkspaceOpt = None,
) -> None:
    """Serve query embeddings and top-k pin/product search over HTTP until Ctrl-C or SIGTERM.

    Endpoints: POST /embed, POST /search, GET /healthz, GET /metrics (Prometheus).
    SIGTERM stops accepting connections and lets in-flight requests finish.
    """
    if index not in INDEX_BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(INDEX_BACKENDS)}", param_hint="--index")
    # Imported here: the service pulls in torch and FastAPI, which `omni --help` should not pay for.
    from omnisearchsage.serving import launch as service

    export_dir = service.resolve_export(export, workspace(ws))
    cfg = ServeConfig(
        host=host,
        port=port,
        workers=workers,
        cache_ttl_s=cache_ttl,
        cache_max_entries=cache_size,
        index_backend=index,
        max_batch_queries=max_batch,
    )
    typer.echo(
        f"serving {export_dir} on http://{host}:{port} ({workers} worker{'s' * (workers > 1)})", err=True
    )
    service.run_server(export_dir, cfg)
