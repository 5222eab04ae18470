"""Hash embeddings (Svenstrup et al., NeurIPS 2017), pooled over bags of token ids.

The feature vocabularies hold about a million unigrams, bigrams and char trigrams plus OOV
buckets (paper: 200k + 1M + 64k). A full ``num_ids x dim`` table would be the largest part of
the model; a hash embedding stores a small shared table instead and lets every token mix a few
rows of it with weights it learns itself:

    h_i(t) = ((a_i * t + b_i) mod P) mod rows                      i = 1..k  (k = 2 in the paper)
    v_t    = sum_i  p[t, i] * T[h_i(t)]                            p: num_ids x k importance weights
    bag(B) = LayerNorm( sum_{t in B} v_t )                          (zero for an empty bag)

Two tokens collide only if all k probes collide, and even then their importance weights differ,
so ``rows`` can be far below ``num_ids`` (``rows * dim + num_ids * k`` parameters).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: A Mersenne prime above every token id (ids are int32), so ``a * t + b`` fits in int64.
_PRIME = (1 << 31) - 1


def hash_constants(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` of ``k`` universal hash functions ``(a * t + b) mod p``, drawn from ``seed``.

    Modules keep them as buffers, so they are part of the model and saved with its weights.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, _PRIME, (k,), generator=gen), torch.randint(0, _PRIME, (k,), generator=gen)


def universal_hash(ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * id + b) mod p`` per hash function: int64 [n, k] for ids int64 [n]."""
    return (ids.unsqueeze(-1) * a + b) % _PRIME


def bag_sizes(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Tokens in each bag of an ``nn.EmbeddingBag``-layout batch (``total``: all bags' ids)."""
    return torch.diff(offsets, append=offsets.new_tensor([total]))


class HashEmbeddingBag(nn.Module):
    """Sum-pooled hash embeddings of bags of global token ids, in ``nn.EmbeddingBag`` layout.

    ``forward(ids, offsets)``: ``ids`` int64 [n] (all bags' ids back to back), ``offsets`` int64
    [bags] (where each bag starts) -> float [bags, dim]. Empty bags give a zero vector, so a
    missing text field contributes nothing (as missing features are zeros in the paper).

    The hash functions are buffers drawn from ``seed``: they are part of the model and are saved
    with its weights, so an exported encoder probes the same rows.
    """

    def __init__(self, num_ids: int, rows: int, dim: int, probes: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.num_ids, self.rows, self.dim, self.probes = num_ids, rows, dim, probes
        self.table = nn.Parameter(torch.empty(rows, dim))
        self.importance = nn.Parameter(torch.empty(num_ids, probes))
        self.norm = nn.LayerNorm(dim)
        a, b = hash_constants(probes, seed)
        self.register_buffer("hash_a", a)
        self.register_buffer("hash_b", b)
        # As the paper's code: Xavier-normal rows, standard-normal importance weights.
        nn.init.xavier_normal_(self.table)
        nn.init.normal_(self.importance)

    def extra_repr(self) -> str:
        return f"num_ids={self.num_ids:,}, rows={self.rows:,}, dim={self.dim}, probes={self.probes}, pooling=sum"

    def probe(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of the table each id probes: int64 [n, probes]."""
        return universal_hash(ids, self.hash_a, self.hash_b) % self.rows

    def token_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """``v_t`` for each id: float [n, dim]."""
        rows = F.embedding(self.probe(ids), self.table)  # [n, probes, dim]
        return (rows * F.embedding(ids, self.importance).unsqueeze(-1)).sum(1)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        # Tokens repeat heavily within a batch (char trigrams, popular words), so each distinct
        # token's vector is built once and the bag sums those: the same value with far fewer
        # probes, and a backward pass that scatters into the table once per distinct token.
        distinct, inverse = torch.unique(ids, return_inverse=True)
        pooled = F.embedding_bag(inverse, self.token_vectors(distinct), offsets, mode="sum")
        return self.norm(pooled) * (bag_sizes(offsets, ids.numel()) > 0).unsqueeze(-1).to(pooled.dtype)
