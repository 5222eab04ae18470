"""The entity tower's visual slot: the tower learns from it, export reproduces it, --no-visual and a
missing table leave it out. Visual embeddings come from a tiny ViT built from a config."""
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
from omnisearchsage.contract import (
    ENGAGED_QUERIES,
    ENGAGEMENTS,
    PRODUCTS,
    TRUTH_PINS,
    VISUAL_EMBEDDINGS,
    Workspace,
)
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import BoardsConfig, QueriesConfig, VisualConfig
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.enrich.visual import embed_workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.inputs import VISUAL
from omnisearchsage.model.io import load_embeddings, load_entity_encoder, load_query_encoder
from omnisearchsage.trainer.config import LossConfig, TrainConfig
from omnisearchsage.trainer.data import TrainingData, load_training_data
from omnisearchsage.trainer.export import embed_catalogue, export_run, load_trained_model
from omnisearchsage.trainer.loop import train
from omnisearchsage.validate import read_table

from .tiny_models import tiny_vit

runner = CliRunner()

#: Small towers; visual features only unless a test says otherwise.
VISUAL_ONLY = TrainConfig(
    steps=200, max_epochs=None, batch_size=64, warmup_steps=5, log_every=10, checkpoint_every=200, lr=5e-3,
    tasks=("query-pin",),
    model=ModelConfig(dim=32, token_dim=16, hash_rows=1024, entity_hidden=(64,), query_hidden=(32,),
                      entity_fields=(), use_legacy=False),
    loss=LossConfig(sketch_width=4096, matryoshka_dims=(8, 32), matryoshka_weights=(0.1, 1.0)),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny towers: one thread is faster than two spinning on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    # 24 px (9 patches of 8 px). A randomly initialised ViT's features are a lottery: on the sample
    # world's images some sizes keep the fill colour separable and others do not (32 and 64 px did not
    # once shapes got edges). A broken visual path still fails here (the tower reads nothing else); the
    # quality of real image features is measured on the bundled EfficientNet (README, bench/visual.py).
    return str(tiny_vit(tmp_path_factory.mktemp("vit") / "vit", image_size=24))


def _embed(ws: Workspace, vit: str) -> None:
    embed_workspace(ws, VisualConfig(model=vit, num_workers=0))


@pytest.fixture(scope="module")
def colour_ws(tiny_ws: Workspace, vit: str, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world where every query names the fill colour of the pin it engaged with (the
    generator's ground truth): a task only the pixels can solve."""
    root = tmp_path_factory.mktemp("colour") / "ws"
    shutil.copytree(tiny_ws.root, root)
    ws = Workspace(root)
    colours = (read_table(ws, TRUTH_PINS).select("pin_id", colour=pl.col("image_words").list.first()))
    events = (read_table(ws, ENGAGEMENTS).filter(pl.col("entity_type") == "pin")
              .join(colours.rename({"pin_id": "entity_id"}), on="entity_id")
              .with_columns(query=pl.col("colour")).drop("colour").collect())
    events.write_parquet(ws.path(ENGAGEMENTS))
    build_features(ws)
    _embed(ws, vit)
    return ws


def test_a_tower_given_only_visual_features_learns_a_colour_task(colour_ws: Workspace):
    ws = colour_ws
    train(ws, VISUAL_ONLY, "colour")
    config = json.loads((ws.run_dir("colour") / "config.json").read_text())
    # The entity tower reads nothing but the 32-d visual slot and its flag.
    assert config["spec"]["fields"] == [] and config["spec"]["dense_layout"] == {VISUAL: [0, 32]}
    export = export_run(ws, "colour")

    truth = read_table(ws, TRUTH_PINS).select("pin_id", colour=pl.col("image_words").list.first()).collect()
    colour_of = dict(truth.iter_rows())
    ids, pins = load_embeddings(export, "pin")
    pin_colours = np.array([colour_of[i] for i in ids])
    names = sorted(set(pin_colours))
    queries = load_query_encoder(export).encode(names)
    top = np.argsort(-(queries @ pins.T), axis=1)[:, :10]
    precision = float((pin_colours[top] == np.array(names)[:, None]).mean())
    chance = max(float((pin_colours == c).mean()) for c in names)  # the commonest colour's share
    # 20 points over always answering the commonest colour (a broken visual path stays at chance); a
    # ratio would ask more of a world whose commonest colour is more common (0.29 on world v12's tiny).
    assert precision >= 0.5 and precision > chance + 0.2, (precision, chance)


@pytest.fixture(scope="module")
def ws(tiny_ws: Workspace, vit: str, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world with board titles, engaged queries, features and visual embeddings, a tenth of
    the products' removed (entities without an image embedding)."""
    root = tmp_path_factory.mktemp("visual_ws") / "ws"
    shutil.copytree(tiny_ws.root, root)
    w = Workspace(root)
    build_board_titles(w, BoardsConfig())
    build_engaged_queries(w, QueriesConfig())
    build_features(w)
    _embed(w, vit)
    table = pl.read_parquet(w.path(VISUAL_EMBEDDINGS))
    dropped = (pl.col("entity_type") == "product") & (pl.col("entity_id").rank("ordinal").over("entity_type") % 10 == 1)
    table.filter(~dropped).write_parquet(w.path(VISUAL_EMBEDDINGS))
    return w


#: Every feature: text fields, legacy embeddings, the visual slot.
EVERYTHING = replace(VISUAL_ONLY, steps=3, checkpoint_every=3, tasks=("all",),
                     model=replace(VISUAL_ONLY.model, entity_fields=ModelConfig().entity_fields, use_legacy=True))


def _data(ws: Workspace, cfg: TrainConfig) -> TrainingData:
    return load_training_data(ws, cfg, Featurizer.load(ws.features))


def test_export_reproduces_training_time_embeddings_with_visual_features(ws: Workspace, vit: str):
    train(ws, EVERYTHING, "all")
    export = export_run(ws, "all")
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["visual_model"] == str(Path(vit).resolve()) and manifest["visual_dim"] == 32

    data = _data(ws, EVERYTHING)
    assert list(data.dense_layout) == ["pin", "product", VISUAL]  # legacy slots first, then the visual one
    products = data.catalogues["product"]
    assert 0 < (~products.has_visual).sum() < len(products) // 5  # the dropped tenth has zeros + flag 0
    model = load_trained_model(ws, "all")[0]
    rows = np.arange(40)
    with torch.no_grad():
        trained = model.entity(**data.entity_inputs([("product", rows)])).numpy()
    ids, emb = load_embeddings(export, "product")
    assert ids[:40] == products.keys.gather(rows).to_list()
    assert np.abs(emb[:40] - trained).max() < 1e-5

    # From raw inputs: text fields, legacy and visual embeddings with NaN rows where missing.
    raw = read_table(ws, PRODUCTS).collect().head(40)
    engaged = (pl.read_parquet(ws.path(ENGAGED_QUERIES)).filter(pl.col("entity_type") == "product")
               .select(product_id="entity_id", engaged_queries="queries"))
    raw = raw.join(engaged, on="product_id", how="left", maintain_order="left")
    fields = {f: raw.get_column(f).to_list() for f in ("title", "description", "brand", "engaged_queries")}
    legacy = np.stack([np.full(256, np.nan, np.float32) if v is None else np.asarray(v, np.float32)
                       for v in raw.get_column("legacy_embedding").to_list()])
    visual = np.where(products.has_visual[rows, None], products.visual[rows], np.nan).astype(np.float32)
    assert np.isnan(visual).any()  # some of these 40 have no visual embedding
    encoder = load_entity_encoder(export)
    assert np.abs(encoder.encode("product", fields, legacy, visual) - trained).max() < 1e-5
    # The slot is read: leaving the visual embeddings out gives other vectors.
    assert np.abs(encoder.encode("product", fields, legacy) - trained).max() > 1e-4

    # `omni embed` (the catalogue in shards, after export --no-embeddings) reads the slot too.
    export_run(ws, "all", embeddings=False)
    for shard in range(2):
        embed_catalogue(ws, "all", shard, 2)
    sharded_ids, sharded = load_embeddings(export, "product")
    assert sharded_ids == ids and np.abs(sharded - emb).max() < 1e-5
    with pytest.raises(OmniError, match="visual embeddings have 16 dims; the model was trained with 32"):
        encoder.encode("product", {"title": ["x"]}, visual=np.zeros((1, 16), np.float32))


def test_no_visual_ignores_the_table_and_a_missing_table_means_no_slot(ws: Workspace, tmp_path: Path):
    args = ["train", "-w", str(ws.root), "--tasks", "query-pin", "--steps", "2", "--batch-size", "24",
            "--name", "blind", "--no-visual"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((ws.run_dir("blind") / "config.json").read_text())
    assert VISUAL not in config["spec"]["dense_layout"] and config["visual_model"] is None
    no_visual = replace(EVERYTHING, model=replace(EVERYTHING.model, use_visual=False))
    assert all(c.visual is None for c in _data(ws, no_visual).catalogues.values())  # not even loaded

    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root, ignore=shutil.ignore_patterns("runs"))
    copy.path(VISUAL_EMBEDDINGS).unlink()
    data = _data(copy, EVERYTHING)
    assert VISUAL not in data.dense_layout and data.visual_model is None
    # Nothing else to read: the tower would be blind, which is an error, not a silent model.
    with pytest.raises(OmniError, match="the entity tower would read nothing"):
        _data(copy, VISUAL_ONLY)


def test_export_refuses_visual_embeddings_of_another_model(ws: Workspace, tmp_path: Path):
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    if not copy.run_dir("all").exists():
        train(copy, EVERYTHING, "all")
    table = pl.read_parquet(copy.path(VISUAL_EMBEDDINGS)).with_columns(model=pl.lit("/models/other"))
    table.write_parquet(copy.path(VISUAL_EMBEDDINGS))
    with pytest.raises(OmniError, match="embeddings of '/models/other', but run all was trained on"):
        export_run(copy, "all")


def test_visual_embeddings_of_mixed_widths_are_refused(ws: Workspace, tmp_path: Path):
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root, ignore=shutil.ignore_patterns("runs"))
    table = pl.read_parquet(copy.path(VISUAL_EMBEDDINGS))
    first = table.filter(pl.col("entity_type") == "pin").get_column("entity_id")[0]
    short = pl.when(pl.col("entity_id") == first).then(pl.col("embedding").list.head(8)).otherwise("embedding")
    table.with_columns(embedding=short).write_parquet(copy.path(VISUAL_EMBEDDINGS))
    with pytest.raises(OmniError, match=f"column embedding has lengths other than 32 .*entity_id {first}"):
        _data(copy, EVERYTHING)
