"""The service over a real export: the tiny world, features, a 2-step run with a tiny model, export.

The model's quality is irrelevant here; what matters is that the service loads the
export through the trainer's loaders and serves exactly what the export computed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import ExportLayout, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.io import load_embeddings
from omnisearchsage.search.index import ExactIndex
from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.launch import create_app
from omnisearchsage.trainer.config import LossConfig, TrainConfig
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.loop import train

TINY_MODEL = TrainConfig(
    steps=2,
    batch_size=64,
    checkpoint_every=2,
    warmup_steps=1,
    model=ModelConfig(dim=32, token_dim=16, hash_rows=1024, entity_hidden=(32,), query_hidden=(32,)),
    loss=LossConfig(sketch_width=1024, matryoshka_dims=(32,), matryoshka_weights=(1.0,)),
)


@pytest.fixture(scope="module")
def export_dir(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve_export") / "ws"
    shutil.copytree(tiny_ws.root, root)
    ws = Workspace(root)
    build_features(ws, FeatureConfig())
    train(ws, TINY_MODEL, "serve")
    return export_run(ws, "serve")


def test_embed_returns_exactly_the_exported_query_embeddings(export_dir: Path) -> None:
    client = TestClient(create_app(export_dir, ServeConfig()))
    manifest = json.loads((export_dir / "manifest.json").read_text())
    health = client.get("/healthz").json()
    assert health["model_version"] == manifest["model_version"] and health["dim"] == manifest["dim"] == 32
    ids, emb = load_embeddings(export_dir, "query")
    body = client.post("/embed", json={"queries": ids[:8]}).json()
    assert body["model_version"] == manifest["model_version"]
    np.testing.assert_allclose(np.asarray(body["embeddings"]), emb[:8], atol=1e-5)


def test_search_ranks_the_exported_entities_like_exact_search(export_dir: Path) -> None:
    client = TestClient(create_app(export_dir, ServeConfig()))
    query = load_embeddings(export_dir, "query")[0][0]
    qvec = np.asarray(client.post("/embed", json={"queries": [query]}).json()["embeddings"], dtype=np.float32)
    pin_ids, pins = load_embeddings(export_dir, "pin")
    expected = ExactIndex(pins.copy()).search(qvec, 5).indices[0]
    hits = client.post("/search", json={"query": query, "k": 5, "entity_types": ["pin"]}).json()["hits"]
    assert [h["id"] for h in hits] == [pin_ids[i] for i in expected]


def test_sharded_embedding_by_two_processes_equals_one_process(export_dir: Path) -> None:
    """`omni export --no-embeddings` then two `omni embed` processes (as torchrun starts them: RANK and
    WORLD_SIZE) give the single-process embeddings, read as one dataset by the loaders and the service."""
    ws = Workspace(export_dir.parents[2])
    shutil.copytree(ws.run_dir("serve"), ws.run_dir("sharded"), ignore=shutil.ignore_patterns("export"))
    CliRunner().invoke(app, ["export", "sharded", "-w", str(ws.root), "--no-embeddings"], catch_exceptions=False)
    sharded = ws.export_dir("sharded")
    with pytest.raises(OmniError, match="missing"):
        create_app(sharded, ServeConfig())  # nothing embedded yet: refused before serving
    procs = [subprocess.Popen([sys.executable, "-m", "omnisearchsage.cli.app", "-q", "embed", "sharded",
                               "-w", str(ws.root)], env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"})
             for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for kind in ("pin", "product", "query"):
        assert len(list(ExportLayout(sharded).embeddings(kind).glob("part-*-of-00002.parquet"))) == 2
        ids, emb = load_embeddings(export_dir, kind)
        ids2, emb2 = load_embeddings(sharded, kind)
        assert ids2 == ids
        np.testing.assert_allclose(emb2, emb, atol=1e-6)
    TestClient(create_app(sharded, ServeConfig())).get("/healthz").raise_for_status()
    # A missing shard is named, not silently read as a smaller catalogue.
    next(ExportLayout(sharded).embeddings("pin").glob("part-00001-*")).unlink()
    with pytest.raises(OmniError, match="not a complete part-I-of-N set"):
        load_embeddings(sharded, "pin")
