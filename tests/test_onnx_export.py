"""``omni export --onnx``: onnxruntime's query embeddings equal torch's (n-gram and tiny-BERT towers)."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import ENGAGED_QUERIES, FEATURE_QUERIES, Workspace
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.features.build import build_features
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.io import load_query_encoder
from omnisearchsage.model.onnx import ONNX_FILE, OnnxQueryEncoder, bag_of_ids, export_query_onnx
from omnisearchsage.trainer.config import LossConfig, TrainConfig
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.loop import train

from .tiny_models import tiny_bert

# Tiny towers with the lexical channel on, so the graph covers it too.
SMALL = TrainConfig(
    steps=6, batch_size=48, warmup_steps=2, checkpoint_every=6, lr=5e-3,
    model=ModelConfig(dim=64, token_dim=16, hash_rows=2048, entity_hidden=(32,), query_hidden=(32,),
                      lexical_buckets=128),
    loss=LossConfig(sketch_width=4096, matryoshka_dims=(8, 64), matryoshka_weights=(0.1, 1.0)),
)
#: Edge cases beside the workspace's queries: empty, punctuation only, OOV words, emoji, CJK, long.
ODD = ["", "!!!", "zzqx unseenword", "déjà vu 🍕 pizza", "東京 ramen", "case " * 80]


@pytest.fixture(scope="module")
def ws(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("onnx_ws") / "ws"
    shutil.copytree(tiny_ws.root, root)
    w = Workspace(root)
    build_board_titles(w)
    build_engaged_queries(w)
    build_features(w)
    return w


def _queries(ws: Workspace) -> list[str]:
    return pl.read_parquet(ws.path(FEATURE_QUERIES), columns=["query"]).get_column("query").head(200).to_list() + ODD


def test_bag_of_ids_matches_offsets_with_empty_bags():
    offsets = torch.tensor([0, 0, 2, 2, 5, 6, 6])
    expected = torch.repeat_interleave(torch.arange(7), torch.diff(offsets, append=torch.tensor([6])))
    assert torch.equal(bag_of_ids(torch.arange(6), offsets), expected)


def test_ngram_onnx_matches_torch_through_the_cli(ws: Workspace):
    train(ws, SMALL, "ngram")
    result = CliRunner().invoke(app, ["export", "ngram", "-w", str(ws.root), "--onnx"])
    assert result.exit_code == 0, result.output
    export = ws.export_dir("ngram")
    assert (export / "query_encoder" / ONNX_FILE).is_file() and (export / "query_encoder" / "featurizer").is_dir()
    texts = _queries(ws)
    reference = load_query_encoder(export).encode(texts)
    onnx = OnnxQueryEncoder(export)
    assert onnx.inputs == {"ids", "offsets"}
    got = onnx.encode(texts)
    assert got.shape == reference.shape == (len(texts), 64 + 128)
    assert np.abs(got - reference).max() < 1e-5
    for size in (1, 3):  # batch sizes other than the traced one
        assert np.abs(onnx.encode(texts[:size]) - reference[:size]).max() < 1e-5


@pytest.mark.parametrize("compat_from", ["body", "bag"])
def test_ngram_onnx_compat_output_matches_torch(ws: Workspace, compat_from: str):
    # 256 dims: the tiny world's legacy embeddings are 256-d, so the compat tasks train and the tower
    # has a compat head; the graph serves it as a second output, from the MLP's body or the hash bag.
    cfg = replace(SMALL, model=replace(SMALL.model, dim=256, lexical_buckets=0, compat_from=compat_from,
                                       compat_hidden=(16,)),
                  loss=replace(SMALL.loss, matryoshka_dims=(8, 256)))
    train(ws, cfg, f"compat-{compat_from}")
    export = export_run(ws, f"compat-{compat_from}")
    export_query_onnx(export)
    texts = _queries(ws)
    torch_encoder, onnx = load_query_encoder(export), OnnxQueryEncoder(export)
    linears = [m for m in torch_encoder.tower.compat if isinstance(m, torch.nn.Linear)]
    # "bag": the main MLP's shape (token_dim -> query_hidden) and then compat_hidden; "body": from the hidden layer.
    assert [m.in_features for m in linears] == ([16, 32, 16] if compat_from == "bag" else [32, 16])
    assert onnx.outputs == ["embedding", "compat"] and onnx.compat_dim == torch_encoder.compat_dim == 256
    reference = torch_encoder.encode_compat(texts)
    assert np.abs(onnx.encode_compat(texts) - reference).max() < 1e-5
    assert np.abs(onnx.encode(texts) - torch_encoder.encode(texts)).max() < 1e-5
    assert np.abs(reference - torch_encoder.encode(texts)).max() > 0.1  # its own output, not the main one
    if compat_from == "body":  # an export from before the option (no key) loads with the head it was trained with
        cfg_path = export / "query_encoder" / "config.json"
        stored = json.loads(cfg_path.read_text(encoding="utf-8"))
        del stored["model"]["compat_from"]
        cfg_path.write_text(json.dumps(stored), encoding="utf-8")
        assert np.array_equal(load_query_encoder(export).encode_compat(texts), reference)


def _tiny_bert(ws: Workspace, out: Path) -> Path:
    """A 2-layer BERT built from a config, with a WordPiece vocabulary of the world's query words."""
    words = (pl.read_parquet(ws.path(ENGAGED_QUERIES)).get_column("queries").explode().str.split(" ").explode()
             .unique().sort().to_list())
    return tiny_bert(words[:500], out, layers=2)


def test_tiny_bert_onnx_matches_torch(ws: Workspace, tmp_path: Path):
    bert = _tiny_bert(ws, tmp_path / "bert")
    # 256 dims and a compat task: the pooled output feeds the compat head too.
    cfg = replace(SMALL, steps=2, checkpoint_every=2, tasks=("query-pin", "query-query", "compat-pin"),
                  model=replace(SMALL.model, query_encoder=str(bert), pooling="mean", dim=256),
                  loss=replace(SMALL.loss, matryoshka_dims=(8, 256)))
    train(ws, cfg, "bert")
    export = export_run(ws, "bert")
    export_query_onnx(export)
    texts = _queries(ws)
    torch_encoder = load_query_encoder(export)
    reference = torch_encoder.encode(texts)
    onnx = OnnxQueryEncoder(export)
    assert onnx.inputs == {"input_ids", "attention_mask", "ids", "offsets"}
    assert np.abs(onnx.encode(texts) - reference).max() < 1e-5
    assert np.abs(onnx.encode(texts[:1]) - reference[:1]).max() < 1e-5  # another padded length
    assert onnx.compat_dim == 256
    assert np.abs(onnx.encode_compat(texts) - torch_encoder.encode_compat(texts)).max() < 1e-5
