"""The adaptive fine-tuning rule of a pretrained query body: frozen with few training queries,
fine-tuned with many, an explicit scale always wins, and the decision is saved with the run."""
from __future__ import annotations

from dataclasses import replace

import torch
from safetensors.torch import load_file

from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.fine_tune import fine_tune_scale
from omnisearchsage.trainer.loop import checkpoints, read_run_config, train

from .test_trainer_anchor import FROZEN, anchored_ws  # noqa: F401  (the fixture, requested by name)


def test_rule_freezes_few_queries_and_fine_tunes_many():
    cfg = TrainConfig(fine_tune_min_queries=1000, fine_tune_lr_scale=0.01)
    assert fine_tune_scale(cfg, 206) == 0.0  # CrowdFlower's training queries
    assert fine_tune_scale(cfg, 999) == 0.0
    assert fine_tune_scale(cfg, 1000) == 0.01
    assert fine_tune_scale(cfg, 7525) == 0.01  # Home Depot's
    assert fine_tune_scale(replace(cfg, pretrained_lr_scale=0.0), 7525) == 0.0  # explicit: never overridden
    assert fine_tune_scale(replace(cfg, pretrained_lr_scale=0.5), 10) == 0.5


def _body(ws, name: str, index: int = -1) -> dict[str, torch.Tensor]:
    weights = load_file(str(checkpoints(ws.run_dir(name))[index] / "model.safetensors"))
    return {k: v for k, v in weights.items() if ".transformer." in k}


def test_auto_decides_from_the_workspace_queries_and_saves_the_decision(request):
    ws, _ = request.getfixturevalue("anchored_ws")
    learning = replace(FROZEN, steps=2, lr=1e-2)
    train(ws, replace(learning, fine_tune_min_queries=10**6), "few")  # fewer queries than the threshold
    train(ws, replace(learning, fine_tune_min_queries=1, fine_tune_epochs=None), "many")
    assert read_run_config(ws.run_dir("few"))["config"]["pretrained_lr_scale"] == 0.0
    assert read_run_config(ws.run_dir("many"))["config"]["pretrained_lr_scale"] == learning.fine_tune_lr_scale
    train(ws, replace(FROZEN, steps=1), "start")  # lr ~ 0: the body as loaded
    start, few, many = _body(ws, "start"), _body(ws, "few"), _body(ws, "many")
    assert all(torch.equal(start[k], few[k]) for k in start)  # frozen: the body never moved
    assert any(not torch.equal(start[k], many[k]) for k in start)  # fine-tuned: it learned


def test_top_layers_learn_from_lower_layers_computed_once(tmp_path):
    """Fine-tuning the top layer only: the lower part runs once per query, and the tower fed those
    hidden states computes exactly what the whole body computes from tokens."""
    import numpy as np
    import polars as pl

    from omnisearchsage.model.config import ModelConfig
    from omnisearchsage.model.inputs import Catalogue, TokenBags
    from omnisearchsage.model.towers import TransformerQueryTower
    from omnisearchsage.trainer.data import TrainingData
    from omnisearchsage.trainer.loop import freeze_lower_layers

    from .tiny_models import tiny_bert

    words = ["red", "shoes", "blue", "hat", "oak", "desk"]
    tower = TransformerQueryTower(ModelConfig(dim=32, pooling="mean", query_head="residual"),
                                  tiny_bert(words, tmp_path / "bert", layers=3))
    queries = ["red shoes", "blue hat", "oak desk red shoes blue hat", "hat"]
    bags = TokenBags.from_offsets(np.zeros(0, dtype=np.int64), np.zeros(len(queries), dtype=np.int64))
    data = TrainingData({"query": Catalogue("query", pl.Series(queries), bags)}, {}, 1, ())
    freeze_lower_layers(tower, data, top=1, batch_size=3)  # two batches: padded to the longest query
    assert tower.frozen_layers == 2
    assert not any(p.requires_grad for p in tower.transformer.embeddings.parameters())
    assert not any(p.requires_grad for layer in tower.layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in tower.layers[2].parameters())
    tower.eval()
    rows = np.array([2, 0])
    inputs = data.query_inputs(rows, None)
    with torch.no_grad():
        from_lower = tower.pool_upper(inputs["lower"], inputs["attention_mask"], tower.frozen_layers)
        from_tokens = tower.pool(**tower.tokenize([queries[r] for r in rows]))
    torch.testing.assert_close(from_lower, from_tokens, atol=1e-5, rtol=0)


def test_the_body_stops_learning_after_fine_tune_epochs(request):
    """The body learns in the first steps, then freezes while the rest of the model trains on."""
    ws, _ = request.getfixturevalue("anchored_ws")
    cfg = replace(FROZEN, steps=4, lr=1e-2, pretrained_lr_scale=0.01, fine_tune_epochs=1e-6,  # 1 step
                  checkpoint_every=1, keep_checkpoints=4, max_epochs=None)
    train(ws, cfg, "stops")
    train(ws, replace(FROZEN, steps=1), "start0")
    start = _body(ws, "start0")
    after1, after4 = _body(ws, "stops", 0), _body(ws, "stops", -1)
    assert any(not torch.equal(start[k], after1[k]) for k in start)  # step 1 fine-tuned the body
    assert all(torch.equal(after1[k], after4[k]) for k in start)  # then it stayed frozen
    heads = [load_file(str(c / "model.safetensors"))["model.query.head.delta"] for c in checkpoints(ws.run_dir("stops"))]
    assert not torch.equal(heads[0], heads[-1])  # while the head kept learning
