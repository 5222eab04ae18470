"""Fine-tuning the pretrained text encoder: the adaptive rule (frozen with few training queries, the
siamese stage with many, an explicit scale always wins, saved with the run), the stage itself (top
layers only, from lower-layer states computed once, batches without duplicates), and an export whose
entity side reads text through the tuned body exactly as serving will."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from omnisearchsage.contract import PRODUCTS
from omnisearchsage.errors import OmniError
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.io import load_embeddings, load_entity_encoder
from omnisearchsage.model.towers import TransformerQueryTower
from omnisearchsage.trainer.config import HardNegativeConfig, TrainConfig
from omnisearchsage.trainer.export import embed_catalogue, export_run
from omnisearchsage.trainer.fine_tune import fine_tune_scale
from omnisearchsage.trainer.hard_negatives import mine_from_vectors
from omnisearchsage.trainer.loop import checkpoints, read_run_config, read_summary, train
from omnisearchsage.trainer.loss import pair_key
from omnisearchsage.trainer.siamese import (
    LowerStates,
    no_duplicate_batches,
    with_hard_negatives,
)

from .test_trainer_anchor import FROZEN, anchored_ws  # noqa: F401  (the fixture, requested by name)
from .tiny_models import tiny_bert


def test_rule_freezes_few_queries_and_fine_tunes_many():
    cfg = TrainConfig(fine_tune_min_queries=1000, fine_tune_lr_scale=0.05)
    assert fine_tune_scale(cfg, 206) == 0.0  # CrowdFlower's training queries
    assert fine_tune_scale(cfg, 999) == 0.0
    assert fine_tune_scale(cfg, 1000) == 0.05
    assert fine_tune_scale(cfg, 7525) == 0.05  # Home Depot's
    assert fine_tune_scale(replace(cfg, pretrained_lr_scale=0.0), 7525) == 0.0  # explicit: never overridden
    assert fine_tune_scale(replace(cfg, pretrained_lr_scale=0.5), 10) == 0.5


def _body(ws, name: str) -> dict[str, torch.Tensor]:
    weights = load_file(str(checkpoints(ws.run_dir(name))[-1] / "model.safetensors"))
    return {k: v for k, v in weights.items() if ".transformer." in k}


def test_auto_decides_from_the_workspace_queries_and_the_stage_tunes_only_the_top_layers(request):
    ws, _ = request.getfixturevalue("anchored_ws")
    learning = replace(FROZEN, steps=2, lr=1e-2, fine_tune_batch_size=4, fine_tune_layers=1)
    train(ws, replace(learning, fine_tune_min_queries=10**6), "few")  # fewer queries than the threshold
    train(ws, replace(learning, fine_tune_min_queries=1), "many")
    few, many = (read_run_config(ws.run_dir(n))["config"] for n in ("few", "many"))
    assert (few["pretrained_lr_scale"], few["model"]["entity_text"]) == (0.0, False)
    assert (many["pretrained_lr_scale"], many["model"]["entity_text"]) == (learning.fine_tune_lr_scale, True)
    assert ws.run("many").text_vectors.is_file() and not ws.run("few").text_vectors.exists()
    train(ws, replace(FROZEN, steps=1), "start")  # lr ~ 0: the body as loaded
    start, b_few, b_many = _body(ws, "start"), _body(ws, "few"), _body(ws, "many")
    assert all(torch.equal(start[k], b_few[k]) for k in start)  # frozen: the body never moved
    top = [k for k in start if ".encoder.layer." in k]  # the tiny body's one layer (fine_tune_layers=1)
    assert top and any(not torch.equal(start[k], b_many[k]) for k in top)  # the top layer learned
    assert all(torch.equal(start[k], b_many[k]) for k in start if k not in top)  # the embeddings did not


def test_explicit_fine_tuning_of_a_body_that_is_not_anchored_is_refused(request):
    ws, encoder = request.getfixturevalue("anchored_ws")
    explicit = replace(FROZEN, pretrained_lr_scale=0.05,
                       model=replace(FROZEN.model, query_encoder=str(encoder), lexical_buckets=0)).with_dim(32)
    with pytest.raises(OmniError, match="anchored model"):
        train(ws, explicit, "not-anchored")


def test_lower_layer_states_feed_the_top_layers_as_the_whole_body_does(tmp_path):
    """The siamese stage runs the lower layers once per text and keeps them unpadded: fed back in any
    batch order, the top layers compute what the whole body computes from tokens."""
    words = ["red", "shoes", "blue", "hat", "oak", "desk"]
    tower = TransformerQueryTower(ModelConfig(dim=32, pooling="mean", query_head="residual"),
                                  tiny_bert(words, tmp_path / "bert", layers=3)).eval()
    texts = ["red shoes", "blue hat", "oak desk red shoes blue hat", "hat", "desk oak"]
    states = LowerStates.compute(texts, tower.tokenize, lambda i, m: tower.lower_layers(i, m, 2), batch_size=2)
    assert states.tokens.dtype == torch.float16 and states.tokens.shape[0] == int(states.lengths.sum())
    rows = np.array([2, 0, 3])
    with torch.no_grad():
        from_lower = tower.pool_upper(*states.batch(rows), 2)
        from_tokens = tower.pool(**tower.tokenize([texts[r] for r in rows]))
    torch.testing.assert_close(from_lower, from_tokens, atol=2e-3, rtol=0)  # float16 storage


def test_batches_never_repeat_a_query_or_an_entity_and_cover_every_pair():
    rng = np.random.default_rng(0)
    queries, entities = rng.integers(0, 5, 200), rng.integers(0, 40, 200)
    batches = no_duplicate_batches(queries, entities, size=8, seed=1, epochs=1.0)
    for b in batches:
        assert len(set(queries[b])) == len(b) and len(set(entities[b])) == len(b)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))  # one epoch: each pair once
    two = no_duplicate_batches(queries, entities, size=8, seed=1, epochs=2.0)
    assert np.bincount(np.concatenate(two), minlength=200).tolist() == [2] * 200


def test_export_of_a_tuned_model_embeds_entities_from_text_as_serving_does(request):
    """With entity_text the catalogue's vectors come from the tuned body, not the importer's legacy
    embedding; the exported entity encoder recomputes them from title + description itself."""
    ws, _ = request.getfixturevalue("anchored_ws")
    train(ws, replace(FROZEN, steps=2, lr=1e-2, fine_tune_batch_size=4, pretrained_lr_scale=0.5), "tuned")
    export = export_run(ws, "tuned")
    ids, emb = load_embeddings(export, "product")
    products = pl.read_parquet(ws.path(PRODUCTS)).join(pl.DataFrame({"product_id": ids}), on="product_id",
                                                       how="right")
    encoder = load_entity_encoder(export)
    again = encoder.encode("product", {"title": products["title"].to_list(),
                                       "description": products["description"].to_list()})
    np.testing.assert_allclose(again, emb, atol=1e-4)
    export_run(ws, "tuned", embeddings=False)  # encoders only; `omni embed` then reads the run's vectors
    embed_catalogue(ws, "tuned")
    shard_ids, shard = load_embeddings(export, "product")
    assert shard_ids == ids
    np.testing.assert_allclose(shard, emb, atol=1e-6)
    legacy = np.stack(products["legacy_embedding"].to_list())
    dense = emb[:, :32] / np.linalg.norm(emb[:, :32], axis=1, keepdims=True)
    assert np.abs(dense - legacy / np.linalg.norm(legacy, axis=1, keepdims=True)).max() > 1e-3  # it moved


def test_stage_negatives_skip_positives_and_guarded_candidates():
    """Query 10's nearest entities: 1 (scores above both its pairs' positives: probably an unlabelled
    positive, guarded), 0 and 2 (its positives), then 3 and 4 (qualify, best first)."""
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    e = F.normalize(torch.tensor([[1.0, 0.10], [1.0, 0.0], [1.0, 0.2], [1.0, 0.6], [1.0, 0.9],
                                  [0.0, 1.0]]), dim=1)
    cfg = HardNegativeConfig(per_pair=2, candidates=6, relative_margin=0.001)
    query_rows, cand_rows = np.array([10, 10, 11]), np.array([0, 2, 5])
    hard = mine_from_vectors(q, e, np.array([0, 0, 1]), query_rows, cand_rows, cfg)
    assert hard.tolist() == [[3, 4], [3, 4], [4, 3]]
    loose = mine_from_vectors(q, e, np.array([0, 0, 1]), query_rows, cand_rows,
                              HardNegativeConfig(per_pair=2, candidates=6, relative_margin=-1.0))  # no guard
    assert loose[0].tolist() == [1, 3]


def test_hard_negative_columns_are_masked_for_rows_they_are_positive_for():
    logits = torch.zeros(3, 3)
    hard = np.array([[7], [-1], [8]])  # row 1 has no negative: no column for it
    positives = torch.sort(pair_key(torch.tensor([1, 2, 3, 3]), torch.tensor([0, 1, 2, 8]))).values
    out = with_hard_negatives(logits, hard, np.random.default_rng(0), np.array([1, 2, 3]), positives,
                              lambda rows: torch.ones(3, len(rows)))
    assert out.shape == (3, 5)
    assert torch.isinf(out[2, 4]) and torch.isfinite(out[:2, 3:]).all() and torch.isfinite(out[2, 3])


def test_stage_with_hard_negatives_trains_with_dropout_and_reports_mining(request, monkeypatch):
    """Mining embeds the catalogue with dropout off; the steps after it must train with it on again."""
    ws, _ = request.getfixturevalue("anchored_ws")
    cfg = replace(FROZEN, steps=2, lr=1e-2, fine_tune_batch_size=4, pretrained_lr_scale=0.5,
                  fine_tune_hard_negatives=2)
    modes = []  # (gradients on, the top layer in training mode) of every top-layer pass
    real = TransformerQueryTower.pool_upper

    def recording(self, hidden, mask, start):
        modes.append((torch.is_grad_enabled(), self.layers[-1].training))
        return real(self, hidden, mask, start)

    monkeypatch.setattr(TransformerQueryTower, "pool_upper", recording)
    train(ws, cfg, "hard")
    assert {training for grad, training in modes if grad} == {True}
    assert {training for grad, training in modes if not grad} == {False}
    summary = read_summary(ws.run_dir("hard"))
    assert summary["siamese"]["steps"] >= 1 and "mining_s" in summary["siamese"]
    assert _body(ws, "hard") != {}
