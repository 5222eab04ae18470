"""Anchoring and the lexical channel: with a recorded legacy encoder, the default model starts as
that encoder's zero-shot retrieval; the lexical channel is a shared signed-hash tf-idf view; the
entity tower can read legacy embeddings alone; max_epochs stops a small data set early."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from omnisearchsage.contract import PRODUCTS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.importers.config import RelevanceImportConfig
from omnisearchsage.importers.relevance import import_relevance
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.io import load_embeddings, load_query_encoder
from omnisearchsage.model.lexical import LexicalChannel, bag_rows
from omnisearchsage.trainer.anchor import resolve_query_encoder
from omnisearchsage.trainer.config import LossConfig, TrainConfig
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.loop import read_run_config, read_summary, train

from .test_import_relevance import write_set
from .tiny_models import tiny_bert

#: Small sketches and batches; lr ~ 0 so a 1-step run keeps its initial weights.
FROZEN = TrainConfig(steps=1, batch_size=8, lr=1e-12, warmup_steps=1, loss=LossConfig(sketch_width=1024))


def _tiny_encoder(out: Path) -> Path:
    """A 32-wide BERT with a word-level vocabulary: the 'pretrained' text encoder of the tests."""
    words = ["blue", "cable", "case", "coffee", "desk", "garden", "hat", "hose", "lamp", "leather", "mug", "oak",
             "phone", "red", "running", "sandals", "scarf", "shoes", "straw", "table", "usb", "wool"]
    return tiny_bert(words, out)


@pytest.fixture(scope="module")
def anchored_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A relevance set imported with the tiny encoder as --embed-model, features built."""
    root = tmp_path_factory.mktemp("anchor")
    encoder = _tiny_encoder(root / "encoder")
    import_relevance(*write_set(root / "cf"), root / "ws", RelevanceImportConfig(embed_model=str(encoder)))
    ws = Workspace(root / "ws")
    build_features(ws)
    return ws, encoder


def test_import_records_the_encoder_and_none_records_nothing(anchored_ws, tmp_path: Path):
    ws, encoder = anchored_ws
    record = json.loads(ws.legacy_encoder.read_text())
    assert record == {"kinds": ["product"], "model": str(encoder.resolve()), "pooling": "mean"}
    import_relevance(*write_set(tmp_path / "cf"), tmp_path / "ws", RelevanceImportConfig(embed_model="none"))
    assert not Workspace(tmp_path / "ws").legacy_encoder.exists()


def test_auto_starts_as_the_encoders_zero_shot_retrieval(anchored_ws):
    ws, encoder = anchored_ws
    train(ws, FROZEN, "anchored")
    saved = read_run_config(ws.run_dir("anchored"))
    model = saved["config"]["model"]
    assert (model["query_encoder"], model["dim"], model["query_head"], model["anchor_kind"], model["entity_mlp"],
            model["lexical_buckets"]) == (str(encoder), 32, "residual", "product", False, 1024)
    assert "compat-product" in saved["tasks"]  # the legacy space is the model's: compat trains
    export = export_run(ws, "anchored")

    # Products: the dense part is the legacy (encoder) embedding itself.
    ids, emb = load_embeddings(export, "product")
    legacy = (pl.read_parquet(ws.path(PRODUCTS)).select("product_id", "legacy_embedding")
              .join(pl.DataFrame({"product_id": ids}), on="product_id", how="right"))
    legacy = np.stack(legacy["legacy_embedding"].to_list())
    dense = emb[:, :32] / np.linalg.norm(emb[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(dense, legacy / np.linalg.norm(legacy, axis=1, keepdims=True), atol=1e-4)

    # Queries: the dense part is the encoder's mean-pooled output, as sentence-transformers computes it.
    from sentence_transformers import SentenceTransformer

    texts = ["red shoes", "blue hat", "wool scarf"]
    q = load_query_encoder(export).encode(texts)[:, :32]
    zero_shot = SentenceTransformer(str(encoder), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(q / np.linalg.norm(q, axis=1, keepdims=True), zero_shot, atol=1e-4)
    # An anchored model has no compat head by default: its compat vectors are the main output, whose
    # legacy-width prefix the legacy index is scored with.
    assert (model["compat_head"], saved["config"]["compat_shared_pairs"]) == (False, False)
    compat = load_query_encoder(export).encode_compat(texts)
    np.testing.assert_array_equal(compat, load_query_encoder(export).encode(texts))


def test_an_anchored_compat_head_on_request_starts_as_the_encoders_zero_shot_vectors(anchored_ws):
    """--compat-head on an anchored model: an identity-initialised residual like its main head, so the
    compat output starts in the legacy space (the encoder's zero-shot vectors); an n-gram run gets a head
    by default."""
    from sentence_transformers import SentenceTransformer

    ws, encoder = anchored_ws
    cfg = replace(FROZEN, model=replace(FROZEN.model, compat_head=True), compat_shared_pairs=True)
    train(ws, cfg, "anchored-head")
    saved = read_run_config(ws.run_dir("anchored-head"))["config"]
    assert (saved["model"]["compat_head"], saved["compat_shared_pairs"]) == (True, True)
    texts = ["red shoes", "blue hat", "wool scarf"]
    zero_shot = SentenceTransformer(str(encoder), device="cpu").encode(texts, normalize_embeddings=True)
    compat = load_query_encoder(export_run(ws, "anchored-head")).encode_compat(texts)
    np.testing.assert_allclose(compat, zero_shot, atol=1e-4)


def test_auto_without_a_usable_record_is_the_ngram_tower(anchored_ws, tiny_ws_copy: Workspace):
    plain = resolve_query_encoder(tiny_ws_copy, TrainConfig()).model
    assert (plain.query_encoder, plain.lexical_buckets, plain.entity_mlp) == ("ngram", 0, True)
    tiny_ws_copy.legacy_encoder.write_text(json.dumps({"kinds": ["product"], "model": "/nowhere", "pooling": "mean"}))
    with pytest.raises(OmniError, match="/nowhere"):  # a named encoder that is gone is an error, not a silent switch
        resolve_query_encoder(tiny_ws_copy, TrainConfig())
    tiny_ws_copy.legacy_encoder.write_text("{}")
    with pytest.raises(OmniError, match="legacy_encoder.json: not a legacy-encoder record"):
        resolve_query_encoder(tiny_ws_copy, TrainConfig())
    ws, _ = anchored_ws
    assert resolve_query_encoder(ws, TrainConfig(model=ModelConfig(use_legacy=False))).model.query_encoder == "ngram"


def test_lexical_channel_is_a_shared_signed_hash_of_unigrams_only():
    channel = LexicalChannel(num_ids=100, buckets=4096, ranges=[(0, 50)], init_beta=0.5, seed=1)
    # Bags: {1, 2, 3}, {3, 2, 1} (same words), {4, 5} (other words), {1, 2, 3, 60, 61} (+ non-unigram ids).
    ids = torch.tensor([1, 2, 3, 3, 2, 1, 4, 5, 1, 2, 3, 60, 61])
    offsets = torch.tensor([0, 3, 6, 8])
    out = channel(ids, bag_rows(offsets, len(ids)), 4)
    assert torch.allclose(out.norm(dim=1), torch.full((4,), 0.5))
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[3])
    assert (out[0] @ out[2]).abs() < 1e-6  # no shared word, no collision among 4,096 buckets
    empty = channel(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 2)
    assert torch.equal(empty, torch.zeros(2, 4096))


def test_legacy_only_entity_tower_trains_and_no_input_at_all_is_refused(tiny_ws_copy: Workspace):
    build_features(tiny_ws_copy)
    small = replace(FROZEN, steps=2, lr=1e-3, model=ModelConfig(token_dim=16, hash_rows=512, entity_fields=()))
    run = train(tiny_ws_copy, small, "continuous")
    assert read_run_config(run)["spec"]["fields"] == [] and read_summary(run)["steps"] == 2
    with pytest.raises(OmniError, match="the entity tower would read nothing"):
        train(tiny_ws_copy, replace(small, model=replace(small.model, use_legacy=False)), "nothing")


def test_max_epochs_stops_a_small_data_set_early(anchored_ws):
    ws, _ = anchored_ws
    run = train(ws, replace(FROZEN, steps=500, batch_size=2, lr=1e-3, max_epochs=2.0), "epochs")
    # One training pair per task, one pair per task per step: two epochs are two steps (not 500),
    # and the warmup shrinks with them.
    config = read_run_config(run)["config"]
    assert read_summary(run)["steps"] == config["steps"] == 2 and config["warmup_steps"] == 1


def test_lexical_weights_start_at_idf_plus_the_offset(anchored_ws):
    """The channel's token weights start at idf + lexical_idf_offset: every word, common or rare, keeps
    at least the offset (a word in every title would otherwise weigh 0)."""
    from safetensors.torch import load_file

    from omnisearchsage.trainer.loop import checkpoints

    ws, _ = anchored_ws

    def weights(name: str, offset: float) -> torch.Tensor:
        cfg = replace(FROZEN, model=replace(FROZEN.model, lexical_idf_offset=offset))
        saved = load_file(str(checkpoints(train(ws, cfg, name))[-1] / "model.safetensors"))
        return next(v for k, v in saved.items() if k.endswith("lexical.token_weight"))

    plain, offset = weights("idf-plain", 0.0), weights("idf-offset", 3.0)
    torch.testing.assert_close(offset - plain, torch.full_like(plain, 3.0))
    assert plain.min() >= 0 and plain.max() > plain.min()  # idf: a spread of weights, none negative


def test_lexical_tokens_pick_the_channel_id_ranges_and_unknown_kinds_fail(anchored_ws):
    from omnisearchsage.features.featurizer import Featurizer
    from omnisearchsage.trainer.loop import lexical_ranges

    ws, _ = anchored_ws
    featurizer = Featurizer.load(ws.features)
    space = featurizer.id_space
    assert lexical_ranges(featurizer, ("unigram",)) == tuple(tuple(space[k]) for k in ("unigram", "oov_unigram"))
    both = lexical_ranges(featurizer, ("unigram", "bigram"))
    assert both == tuple(tuple(space[k]) for k in ("unigram", "oov_unigram", "bigram", "oov_bigram"))
    with pytest.raises(OmniError, match="word4"):
        lexical_ranges(featurizer, ("unigram", "word4"))
