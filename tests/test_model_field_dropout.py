"""Field dropout: training empties a field's bag at the configured rate, evaluation never does."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.errors import OmniError
from omnisearchsage.model.config import ModelConfig, config_from_json
from omnisearchsage.model.towers import EntityTower
from omnisearchsage.trainer.config import TrainConfig

CFG = ModelConfig(dim=8, token_dim=4, hash_rows=64, entity_hidden=(16,), field_dropout=(("b", 0.3),))


def _outputs(tower: EntityTower, n: int, b_empty: bool = False) -> torch.Tensor:
    """Every entity has token 1 in field a and (unless ``b_empty``) token 2 in field b."""
    if b_empty:  # bag a of entity i is ids[i:i + 1], its bag b starts (empty) where the next a does
        ids = torch.ones(n, dtype=torch.long)
        offsets = torch.arange(n).repeat_interleave(2) + torch.tensor([0, 1]).repeat(n)
    else:
        ids, offsets = torch.tensor([1, 2] * n), torch.arange(2 * n)
    return tower(ids, offsets, torch.zeros(n, 0))


def test_training_empties_the_field_at_its_rate_and_evaluation_never() -> None:
    torch.manual_seed(0)
    tower = EntityTower(CFG, num_ids=8, fields=("a", "b"), dense_dim=0)
    n = 4000
    with torch.no_grad():
        tower.eval()
        full, without_b = _outputs(tower, 1)[0], _outputs(tower, 1, b_empty=True)[0]
        assert not torch.allclose(full, without_b)
        assert torch.allclose(_outputs(tower, n), full.expand(n, -1))  # eval: nothing dropped
        tower.train()
        out = _outputs(tower, n)
    dropped = torch.isclose(out, without_b, atol=1e-6).all(1)
    kept = torch.isclose(out, full, atol=1e-6).all(1)
    assert bool((dropped | kept).all())  # field a is never touched
    assert float(dropped.float().mean()) == pytest.approx(0.3, abs=0.03)


def test_field_dropout_round_trips_and_is_checked() -> None:
    assert config_from_json(ModelConfig, {"field_dropout": [["b", 0.3]]}).field_dropout == (("b", 0.3),)
    with pytest.raises(OmniError, match="field dropout title2=0.3"):
        TrainConfig(model=ModelConfig(field_dropout=(("title2", 0.3),))).validate()
    with pytest.raises(OmniError, match="0 <= p < 1"):
        TrainConfig(model=ModelConfig(field_dropout=(("title", 1.0),))).validate()
    result = CliRunner().invoke(app, ["train", "-w", "/nonexistent", "--field-dropout", "engaged_queries"])
    assert isinstance(result.exception, OmniError) and "is not FIELD=P" in str(result.exception)
    with pytest.raises(OmniError, match="presence dropout 1.0"):
        TrainConfig(model=ModelConfig(presence_dropout=1.0)).validate()
    assert config_from_json(ModelConfig, {}).presence_dropout == 0.0  # runs written before the option
    assert ModelConfig().field_dropout is None  # "auto" (trainer.field_dropout) unless set
    # An unresolved "auto" builds a tower that drops nothing (serving and tests build towers directly).
    assert not EntityTower(replace(CFG, field_dropout=None), 8, ("a", "b"), 0).field_drop.any()


def test_presence_dropout_cuts_rows_to_a_catalogue_pattern_of_their_own_kind() -> None:
    """Kind 0's catalogue: 3 entities with a and b, 1 with a only; kind 1's: every entity has b only.
    A share ``presence_dropout`` of the rows takes a pattern of its own kind (so a kind-0 row loses b a
    quarter of those times and never a; a kind-1 row loses a each time), the rest keep every field;
    evaluation and rows given no kinds are never touched."""
    cfg = replace(CFG, field_dropout=(), presence_dropout=0.4)
    torch.manual_seed(0)
    tower = EntityTower(cfg, num_ids=8, fields=("a", "b"), dense_dim=0)
    tower.set_presence_patterns([(np.array([[True, False], [True, True]]), np.array([1, 3])),
                                 (np.array([[False, True]]), np.array([5]))])
    n = 8000
    ids, offsets = torch.tensor([1, 2] * n), torch.arange(2 * n)
    kinds = torch.tensor([0, 1]).repeat(n // 2)
    with torch.no_grad():
        tower.eval()
        full = tower(ids[:2], offsets[:2], torch.zeros(1, 0))[0]
        no_b = tower(torch.tensor([1]), torch.tensor([0, 1]), torch.zeros(1, 0))[0]
        no_a = tower(torch.tensor([2]), torch.tensor([0, 0]), torch.zeros(1, 0))[0]
        assert torch.allclose(tower(ids, offsets, torch.zeros(n, 0), kinds), full.expand(n, -1))
        tower.train()
        assert torch.allclose(tower(ids, offsets, torch.zeros(n, 0)), full.expand(n, -1))  # no kinds
        out = tower(ids, offsets, torch.zeros(n, 0), kinds)

    def share(rows: torch.Tensor, like: torch.Tensor) -> float:
        return float(torch.isclose(rows, like, atol=1e-6).all(1).float().mean())

    k0, k1 = out[kinds == 0], out[kinds == 1]
    assert share(k0, no_b) == pytest.approx(0.4 * 0.25, abs=0.02) and share(k0, no_a) == 0.0
    assert share(k0, full) == pytest.approx(1 - 0.4 * 0.25, abs=0.02)
    assert share(k1, no_a) == pytest.approx(0.4, abs=0.03) and share(k1, no_b) == 0.0


def test_field_presence_flags_reach_the_mlp_and_old_exports_load_without_them() -> None:
    """The MLP reads one 0/1 flag per text field beside the pooled text, so it can tell a missing field
    by more than a zero bag; a config saved before the option (no key) builds the tower it was trained
    with, without the flags."""
    torch.manual_seed(0)
    tower = EntityTower(CFG, num_ids=8, fields=("a", "b"), dense_dim=3)
    assert tower.mlp[0].in_features == CFG.token_dim + 2 + 3
    old = config_from_json(ModelConfig, {})
    assert old.field_presence is False and ModelConfig().field_presence is True
    assert EntityTower(replace(CFG, field_presence=False), 8, ("a", "b"), 3).mlp[0].in_features == CFG.token_dim + 3
    # The flag is 1 where the entity has the field and 0 where it lacks it: weight on b's flag moves
    # an entity with b and leaves one without b where it was.
    with torch.no_grad():
        tower.eval()
        full, missing = _outputs_dense(tower, b_empty=False), _outputs_dense(tower, b_empty=True)
        tower.mlp[0].weight[:, CFG.token_dim + 1] += 1.0
        assert not torch.allclose(_outputs_dense(tower, b_empty=False), full)
        assert torch.allclose(_outputs_dense(tower, b_empty=True), missing)


def _outputs_dense(tower: EntityTower, b_empty: bool) -> torch.Tensor:
    ids, offsets = (torch.tensor([1]), torch.tensor([0, 1])) if b_empty else (torch.tensor([1, 2]), torch.tensor([0, 1]))
    return tower(ids, offsets, torch.zeros(1, 3))
