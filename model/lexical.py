"""The lexical channel: a weighted bag of words hashed into a few hundred signed buckets.

A two-tower model trained on few queries (a labelled relevance set has hundreds, not millions)
cannot learn exact word matching for words it never saw in a query, yet exact matches are what
BM25 wins on. This channel gives both towers the same sparse view of the text, so the dot
product of two channel vectors approximates the cosine of their tf-idf vectors::

    v(text) = sum_{unigram t in text} sign(t) * w_t * e_{bucket(t)}          [buckets]
    channel = beta * L2(v)

``bucket`` and ``sign`` are hash functions of the global token id (feature hashing, Weinberger
et al. 2009: the signs make collisions cancel in expectation); ``w`` is one learned weight per
token id, initialised to the token's idf over the entity catalogue; ``beta`` is one learned
scale. Query and entity towers share the module (same ``w``, same ``beta``), and each tower
concatenates the channel after its dense output, so the model's score is
``cos_dense + beta^2 * cos_lexical`` up to normalisation: a learned hybrid of dense and lexical
retrieval in one vector that any ANN index serves.

Only unigram ids (in-vocabulary and OOV buckets) are read: bigrams and char trigrams would
mostly repeat the words' evidence. The bucket count trades collisions against the served width;
the README (*Real data*) has the measurements behind the anchored default.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from omnisearchsage.model.hash_embedding import hash_constants, universal_hash


class LexicalChannel(nn.Module):
    """Token-id bags -> ``beta * L2(signed hashed weighted counts)``: float [bags, buckets].

    ``ranges``: the ``[start, end)`` global id ranges the channel reads (the unigram vocabulary
    and its OOV buckets); other ids are ignored. ``idf``: float [num_ids] initial token weights
    (ones when None). The hash constants are buffers from ``seed``, saved with the weights.
    """

    def __init__(self, num_ids: int, buckets: int, ranges: Sequence[tuple[int, int]], init_beta: float,
                 seed: int, idf: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_ids, self.buckets = num_ids, buckets
        self.ranges = tuple((int(a), int(b)) for a, b in ranges)
        self.token_weight = nn.Parameter(idf.clone().float() if idf is not None else torch.ones(num_ids))
        self.log_beta = nn.Parameter(torch.tensor(math.log(init_beta)))
        a, b = hash_constants(2, seed)  # one hash picks the bucket, the other the sign
        self.register_buffer("hash_a", a)
        self.register_buffer("hash_b", b)

    def extra_repr(self) -> str:
        return f"buckets={self.buckets}, ids={list(self.ranges)}, weights=per-token (idf init), shared=True"

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    def forward(self, ids: torch.Tensor, bag_of_id: torch.Tensor, bags: int) -> torch.Tensor:
        """``ids`` int64 [n] with ``bag_of_id`` int64 [n] (which output row each id adds to)."""
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for start, end in self.ranges:
            keep |= (ids >= start) & (ids < end)
        ids, rows = ids[keep], bag_of_id[keep]
        hashed = universal_hash(ids, self.hash_a, self.hash_b)  # [n, 2]
        bucket, sign = hashed[:, 0] % self.buckets, (hashed[:, 1] % 2) * 2 - 1
        values = self.token_weight[ids] * sign.to(self.token_weight.dtype)
        out = self.token_weight.new_zeros(bags * self.buckets).index_add(0, rows * self.buckets + bucket, values)
        return self.beta * F.normalize(out.view(bags, self.buckets), dim=-1)


def bag_rows(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The bag each of ``total`` ids belongs to, from ``nn.EmbeddingBag`` offsets."""
    sizes = torch.diff(offsets, append=offsets.new_tensor([total]))
    return torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), sizes)
