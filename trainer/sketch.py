"""Streaming frequency estimates for logQ correction: a count-min sketch.

The sampled softmax (``loss.py``) needs, at every step, how often each candidate has been drawn
so far: popular pins turn up as in-batch negatives far more often than rare ones, and the logQ
correction subtracts the log of that probability. Counting exactly needs a dictionary the size
of the catalogue (and of all query x entity pairs); a count-min sketch (Cormode & Muthukrishnan,
2005) counts in fixed memory::

    update(x):   C[i, g_i(x)] += 1               for every row i = 1..depth
    count(x)   = min_i C[i, g_i(x)]              never below the true count; above it by at most
                                                 e * N / width with probability 1 - e^-depth

where N is the number of updates so far. The paper's code uses width 2**26 and depth 2 (1 GiB
of int64 per sketch, four sketches per task); ``LossConfig.sketch_width`` sets ours.

The counts are buffers registered ``persistent=False``: they never enter a checkpoint. They are
a deterministic function of the ids the sampler drew, so ``--resume`` rebuilds them by replaying
the sampler (cheap: no forward passes) instead of storing gigabytes beside the weights.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

#: Keeps the mixed hash non-negative and below 2**31 before the modulo.
_MASK31 = (1 << 31) - 1


class FrequencyEstimate(NamedTuple):
    """Sketch counts of some keys and the number of updates the sketch has seen."""

    counts: torch.Tensor  # int64 [n], >= 1 for keys already added
    total: torch.Tensor  # int64 []

    def log_prob(self) -> torch.Tensor:
        """log(count / total): the estimated log-probability of drawing each key from the stream."""
        return torch.log(self.counts.double() / self.total.double()).float()


class CountMinSketch(nn.Module):
    """Approximate counts of int64 keys in ``depth x width`` int64 cells.

    Example::

        sketch = CountMinSketch(width=2**16, depth=2)
        sketch.update(torch.tensor([3, 3, 7]))
        sketch(torch.tensor([3, 7])).counts  # tensor([2, 1]) (or more, never less)
    """

    def __init__(self, width: int, depth: int, seed: int = 0) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        gen = torch.Generator().manual_seed(seed)
        # Odd multipliers for a multiply-shift hash per row (as Spark's and the paper's sketch).
        multipliers = torch.randint(1, 2**62, (depth,), generator=gen) | 1
        self.register_buffer("multipliers", multipliers, persistent=False)
        self.register_buffer("cells", torch.zeros(depth, width, dtype=torch.long), persistent=False)
        self.register_buffer("total", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("_rows", torch.arange(depth), persistent=False)

    @property
    def memory_bytes(self) -> int:
        return self.cells.numel() * self.cells.element_size()

    def extra_repr(self) -> str:
        return f"width={self.width:,}, depth={self.depth}, memory={self.memory_bytes / 2**20:.1f} MiB"

    def _columns(self, keys: torch.Tensor) -> torch.Tensor:
        h = keys.view(-1, 1) * self.multipliers  # wraps around in int64: that is the mixing
        h = (h ^ (h >> 32)) & _MASK31
        return h % self.width  # [n, depth]

    def reset(self) -> None:
        self.cells.zero_()
        self.total.zero_()

    @torch.no_grad()
    def update(self, keys: torch.Tensor) -> None:
        """Count each key once (repeated keys count once per occurrence)."""
        cols = self._columns(keys)
        self.cells.index_put_((self._rows.expand_as(cols), cols), torch.ones_like(cols), accumulate=True)
        self.total += keys.numel()

    @torch.no_grad()
    def forward(self, keys: torch.Tensor) -> FrequencyEstimate:
        cols = self._columns(keys)
        return FrequencyEstimate(self.cells[self._rows.expand_as(cols), cols].min(dim=1).values, self.total.clone())
