"""bf16 autocast for text-encoder passes: only where the hardware has native bf16, and the vectors it
gives stay the float32 ones up to bf16 rounding (the importer and the siamese stage rely on both)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnisearchsage import text_encoders
from omnisearchsage.text_encoders import bf16_autocast, encode_texts

from .tiny_models import tiny_bert

WORDS = ["blue", "cable", "case", "coffee", "desk", "garden", "hat", "hose", "lamp", "leather", "mug", "oak"]


@pytest.mark.parametrize("native", [True, False])
def test_autocast_only_with_native_bf16_and_when_enabled(monkeypatch, native: bool):
    monkeypatch.setattr(text_encoders, "native_bf16", lambda kind: native)
    with bf16_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") is native
        if native:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with bf16_autocast("cpu", enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")  # the context leaves no autocast behind


def test_bf16_embeddings_are_the_float32_ones_up_to_rounding(monkeypatch, tmp_path: Path):
    encoder = tiny_bert(WORDS, tmp_path / "encoder")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 9))) for _ in range(100)]
    exact = encode_texts(encoder, texts, bf16=False)
    monkeypatch.setattr(text_encoders, "native_bf16", lambda kind: True)  # bf16 even where it is emulated
    fast = encode_texts(encoder, texts)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(fast, exact)  # bf16 did run
    assert (fast * exact).sum(1).min() > 0.99
