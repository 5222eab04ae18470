"""Starting the service from an export folder: check it, load it, run uvicorn (one or many workers)."""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import multiprocess

from omnisearchsage.contract import ExportLayout, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.model.io import load_embeddings, load_query_encoder
from omnisearchsage.search.ann import resolve_backend
from omnisearchsage.serving.app import build_app
from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.limits import uvicorn_limits
from omnisearchsage.serving.metrics import ENV_PROMETHEUS_DIR, multiprocess_metrics

log = logging.getLogger(__name__)

#: Environment through which ``run_server`` hands the export and config to uvicorn's
#: worker processes (they import :func:`app_from_env`, so nothing is pickled).
ENV_EXPORT = "OMNI_SERVE_EXPORT"
ENV_CONFIG = "OMNI_SERVE_CONFIG"
_MANIFEST_KEYS = ("model_version", "dim", "entity_types")


def check_export(export_dir: Path) -> dict[str, Any]:
    """Read and check an export's manifest and files; raise one-line OmniError if anything is missing."""
    layout = ExportLayout(export_dir)
    if not export_dir.is_dir():
        raise OmniError(f"no export at {export_dir}: run `omni train` then `omni export` first")
    manifest = layout.read_manifest()
    absent = [k for k in _MANIFEST_KEYS if k not in manifest]
    if absent:
        raise OmniError(f"{layout.manifest} lacks {absent}: the export is incomplete, rerun `omni export`")
    needed = [layout.query_encoder] + [layout.embeddings(t) for t in manifest["entity_types"]
                                       if t in ExportLayout.EMBEDDING_FILES]
    missing = [str(p.relative_to(export_dir)) for p in needed if not p.exists()]
    if missing:
        raise OmniError(f"export {export_dir} is incomplete, missing {missing[:3]}: rerun `omni export`")
    return manifest


def resolve_export(target: str, ws: Workspace) -> Path:
    """``target`` as an export folder, else as a run name: ``WS/runs/NAME/export``.

    A folder holding a manifest wins; a run of that name wins over any other folder
    (a run called ``bench`` beside a ``bench/`` directory); a plain folder is last, so
    that :func:`check_export` can say what it lacks.
    """
    path, named = Path(target), ws.export_dir(target)
    if ExportLayout(path).manifest.is_file():
        return path
    if named.exists():
        return named
    if path.exists():
        return path
    raise OmniError(
        f"no export at {path} nor at {named} (run {target!r} in workspace {ws.root}): "
        "run `omni train` then `omni export` first"
    )


def create_app(export_dir: Path, cfg: ServeConfig | None = None) -> FastAPI:
    """The service over an export folder (``runs/NAME/export``) written by ``omni export``."""
    cfg = cfg or ServeConfig()
    manifest = check_export(export_dir)
    encoder = load_query_encoder(export_dir)  # its version is the manifest's model_version
    entities = {
        t: load_embeddings(export_dir, t) for t in cfg.index_entity_types if t in manifest["entity_types"]
    }
    probes = None
    if resolve_backend(cfg.index_backend) != "exact" and "query" in manifest["entity_types"]:
        probes = load_embeddings(export_dir, "query")[1]
    log.info(
        "serving %s (dim %d) over %s",
        encoder.version,
        encoder.dim,
        {t: len(ids) for t, (ids, _) in entities.items()},
    )
    return build_app(encoder, entities, cfg, probes=probes)


def configure_threads(cfg: ServeConfig) -> None:
    """Pin torch (and faiss, when it is the index) to ``cfg.torch_threads`` threads in this worker process."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    if resolve_backend(cfg.index_backend) == "faiss":
        import faiss

        faiss.omp_set_num_threads(cfg.torch_threads)


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: export and config come from the environment."""
    cfg = ServeConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(os.environ[ENV_CONFIG]).items()}
    )
    configure_threads(cfg)
    if multiprocess_metrics():
        # This worker's live gauges (cache size) must stop counting once it exits.
        atexit.register(multiprocess.mark_process_dead, os.getpid())
    return create_app(Path(os.environ[ENV_EXPORT]), cfg)


def run_server(export_dir: Path, cfg: ServeConfig) -> None:
    """Serve ``export_dir`` with uvicorn until SIGINT/SIGTERM, which drains in-flight requests first.

    One worker loads the app here, so a bad export fails before the port opens;
    several workers each load it through :func:`app_from_env`.
    """
    import uvicorn

    check_export(export_dir)
    common: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "access_log": False,
        "timeout_graceful_shutdown": cfg.graceful_shutdown_s,
        **uvicorn_limits(cfg),
    }
    if cfg.workers == 1:
        configure_threads(cfg)
        uvicorn.run(create_app(export_dir, cfg), **common)
        return
    os.environ[ENV_EXPORT] = str(export_dir.resolve())
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    # Workers are spawned, so they import prometheus_client after this is set and run in its
    # multiprocess mode. A directory the user set is theirs to wipe between runs; ours is fresh.
    own_dir = None if os.environ.get(ENV_PROMETHEUS_DIR) else tempfile.mkdtemp(prefix="omni-metrics-")
    if own_dir:
        os.environ[ENV_PROMETHEUS_DIR] = own_dir
    try:
        uvicorn.run(
            f"{__name__}:app_from_env",
            factory=True,
            workers=cfg.workers,
            timeout_worker_healthcheck=cfg.worker_healthcheck_s,
            **common,
        )
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
