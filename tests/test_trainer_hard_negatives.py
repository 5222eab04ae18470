"""Hard negatives mined from the model's index: the false-negative guard keeps candidates scoring
within the margin of the positive out, a query's known positives are never its negatives, and a
run with them trains and exports."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.inputs import entity_inputs
from omnisearchsage.model.towers import TwoTowerModel
from omnisearchsage.trainer.anchor import resolve_query_encoder
from omnisearchsage.trainer.config import HardNegativeConfig
from omnisearchsage.trainer.data import load_training_data
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.hard_negatives import mine_from_vectors, mine_task, select_hard_negatives
from omnisearchsage.trainer.loop import model_spec, read_summary, train
from omnisearchsage.trainer.loss import pair_key

from .test_trainer_anchor import FROZEN, anchored_ws  # noqa: F401  (the fixture, requested by name)


def _keys(pairs: list[tuple[int, int]]) -> np.ndarray:
    q, e = (torch.tensor(x) for x in zip(*pairs))
    return np.sort(pair_key(q, e).numpy())


def test_guard_skips_candidates_within_the_margin_of_the_positive():
    cfg = HardNegativeConfig(per_pair=2, candidates=4, relative_margin=0.1)
    # Query 0's positive (entity 9) scores 0.5: the guard rejects anything above 0.45.
    cand_rows = np.array([[7, 9, 5, 3]])
    cand_scores = np.array([[0.47, 0.5, 0.45, 0.2]])  # 7 is within the margin, 9 is the positive
    hard = select_hard_negatives(np.array([0]), np.array([0.5]), cand_rows, cand_scores, _keys([(0, 9)]), cfg)
    assert hard.tolist() == [[5, 3]]
    # A negative positive score: the margin is relative to its magnitude (threshold -0.55).
    hard = select_hard_negatives(np.array([0]), np.array([-0.5]), np.array([[1, 2, 3, 4]]),
                                 np.array([[-0.52, -0.56, -0.6, -0.9]]), _keys([(0, 9)]), cfg)
    assert hard.tolist() == [[2, 3]]


def test_other_positives_of_the_query_are_never_negatives_and_short_rows_are_padded():
    cfg = HardNegativeConfig(per_pair=3, candidates=3, relative_margin=0.0)
    # Query 4 has positives 1 and 2; pair (4, 1) scores 0.9, so entity 2 (0.3) would pass the guard.
    hard = select_hard_negatives(np.array([4]), np.array([0.9]), np.array([[2, 6, 1]]),
                                 np.array([[0.3, 0.2, 0.9]]), _keys([(4, 1), (4, 2)]), cfg)
    assert hard.tolist() == [[6, -1, -1]]


def test_mined_negatives_come_only_from_the_pool():
    """Entities outside the task's negative pool (created after the cutoff) are never mined, even
    when they are the query's nearest; rows keep the catalogue's numbering."""
    cfg = HardNegativeConfig(per_pair=2, candidates=3, relative_margin=0.0)
    entities = torch.eye(6)
    query = torch.tensor([[0.0, 4.0, 3.0, 2.0, 0.5, 0.2]])  # scores of rows 1-5, nearest first
    query[0, 0] = 10.0  # the positive (row 0) scores highest, so the guard passes the rest
    args = (query, entities, np.array([0]), np.array([0]), np.array([0]), cfg)
    assert mine_from_vectors(*args).tolist() == [[1, 2]]
    assert mine_from_vectors(*args, pool=np.array([0, 3, 4, 5])).tolist() == [[3, 4]]


def test_mined_negatives_respect_the_guard_on_a_workspace(request):
    ws, _ = request.getfixturevalue("anchored_ws")
    cfg = resolve_query_encoder(ws, replace(FROZEN, pretrained_lr_scale=0.0))
    featurizer = Featurizer.load(ws.features)
    data = load_training_data(ws, cfg, featurizer)
    model = TwoTowerModel(cfg.model, model_spec(featurizer, data, cfg.model)).eval()
    tok = model.query.tokenize
    task = data.tasks["query-product"]
    hard_cfg = HardNegativeConfig(per_pair=3, candidates=8, relative_margin=0.2)
    hard = mine_task(model, data, task, hard_cfg, tok, 64)
    assert hard.shape == (task.pairs, 3) and (hard >= 0).any()
    with torch.no_grad():
        cat = data.catalogues["product"]
        e = model.entity(**entity_inputs(data.catalogues, data.dense_layout, [("product", np.arange(len(cat)))]))
        q = model.query(**data.query_inputs(task.query_rows, tok))
    positives = set(zip(task.query_rows.tolist(), task.cand_rows.tolist()))
    for i, (qr, pr) in enumerate(zip(task.query_rows, task.cand_rows)):
        pos = float(q[i] @ e[pr])
        for n in hard[i][hard[i] >= 0]:
            assert (int(qr), int(n)) not in positives
            assert float(q[i] @ e[n]) <= pos - 0.2 * abs(pos) + 1e-6


def test_a_run_with_hard_negatives_trains_and_exports(request):
    ws, _ = request.getfixturevalue("anchored_ws")
    cfg = replace(FROZEN, steps=3, lr=1e-3, max_epochs=None,
                  hard=HardNegativeConfig(per_pair=2, candidates=8, refresh_every=2))
    run = train(ws, cfg, "hard")
    assert read_summary(run)["steps"] == 3
    assert (export_run(ws, "hard") / "manifest.json").exists()
