"""The per-task loss: sampled softmax over in-batch and random negatives, with logQ correction."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from omnisearchsage.trainer.config import LossConfig
from omnisearchsage.trainer.sketch import CountMinSketch


class PairBatch(NamedTuple):
    """What one task scores in one step (``B`` pairs here, ``B_all`` over all processes).

    | field | shape | meaning |
    |---|---|---|
    | query | [B, D] | this process's query embeddings |
    | pos | [B, D'] | their engaged entities (the positives) |
    | query_ids, pos_ids | [B] | catalogue row ids, for the sketches and the masks |
    | all_pos | [B_all, D'] | the positives of every process: the in-batch candidates |
    | all_query_ids, all_pos_ids | [B_all] | their ids |
    | neg | [N, D'] | random negatives drawn from the catalogue (every process's) |
    | neg_ids | [N] | their ids |
    | hard | [B, k, D'] or None | each pair's mined hard negatives (``hard_negatives.py``) |
    | hard_valid | [B, k] bool or None | False where a pair had fewer than k |

    With one process the ``all_*`` fields are the local ones.
    """

    query: torch.Tensor
    pos: torch.Tensor
    query_ids: torch.Tensor
    pos_ids: torch.Tensor
    all_pos: torch.Tensor
    all_query_ids: torch.Tensor
    all_pos_ids: torch.Tensor
    neg: torch.Tensor
    neg_ids: torch.Tensor
    hard: torch.Tensor | None = None
    hard_valid: torch.Tensor | None = None


class TaskLoss(NamedTuple):
    """A task's loss (the weighted sum of its components) and each component, for logging."""

    total: torch.Tensor
    components: dict[str, torch.Tensor]


def pair_key(query_ids: torch.Tensor, entity_ids: torch.Tensor) -> torch.Tensor:
    """One int64 per (query, entity): ids are below 2**31, so the two halves never overlap."""
    return (query_ids << 32) | entity_ids


def _is_positive(keys: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """``keys`` that are in the sorted ``positives``: a binary search per key, no sort of ``keys``."""
    found = torch.searchsorted(positives, keys).clamp(max=len(positives) - 1)
    return positives[found] == keys


class SampledSoftmaxLoss(nn.Module):
    r"""Sampled softmax with logQ correction, in-batch + random negatives, learned temperature and
    Matryoshka prefixes: the loss of one OmniSearchSage task (query->pin, query->product, ...).

    For a pair (q, p) with candidates N (the other positives of the batch, or random catalogue
    entities), the loss is a softmax cross-entropy that should pick p out of {p} + N::

        l(q, p) = -log  exp(s(q, p) - log P(p|q)) / [ exp(s(q, p) - log P(p|q))
                                                     + sum_{n in N, n not a hit} exp(s(q, n) - log Q(n)) ]

        s(q, x) = scale * cos(q, x)          scale = 1 / temperature, learned, clamped to max_scale
        Q(n)    ~ |N| * c(n) / sum_m c(m)    how likely n is to be among the |N| sampled candidates
        P(p|q)  ~ c(q, p) / c(q)             how often q's pairs have p as their entity

    ``c`` are streaming counts from count-min sketches (``sketch.py``). Subtracting ``log Q(n)`` is
    the logQ correction of sampled softmax (Bengio & Senecal 2008; Yi et al., RecSys 2019): in-batch
    candidates are drawn in proportion to their popularity, and without it the model learns to
    push popular entities down instead of learning relevance. The positive is corrected by
    ``log P(p|q)`` as in the paper's code. A *hit* is a candidate that is itself a positive of the
    same query in this batch (the row's own entity, or the entity of another pair with the same
    query): it is masked, so a true positive is never pushed away.

    Mined hard negatives (``PairBatch.hard``, k per pair) join their own row's in-batch candidates
    without a logQ term (they are chosen by score, not drawn by popularity); the miner has already
    excluded the query's positives and the candidates its false-negative guard rejects.

    Two such terms are summed, as the paper's ``MIXED_SUM`` mode: ``in_batch`` (N = all positives
    of the batch, over every process) and ``random`` (N = ``num_negatives`` x B entities drawn
    uniformly from the catalogue, which covers the long tail in-batch negatives miss). Each is
    computed on every Matryoshka prefix ``d`` of the embeddings (re-normalised) and weighted by
    ``w_d``, so the first 32, 64, ... dimensions are usable embeddings on their own.

    Compared with sentence-transformers' ``MultipleNegativesRankingLoss`` (in-batch softmax with
    a fixed scale), this adds the logQ terms, random negatives, accidental-hit masks, a learned
    scale, and prefix dimensions; with one dimension, no random term and ``log P = log Q = 0`` it
    reduces to that loss.

    Inputs: a :class:`PairBatch`. Output: a :class:`TaskLoss` with components
    ``in_batch@d`` and ``random@d`` (unweighted) for each prefix ``d``.

    Example::

        loss = SampledSoftmaxLoss("query-pin", LossConfig(sketch_width=1024), dims=(4, 8), weights=(0.1, 1.0))
        q, p, n = (F.normalize(torch.randn(k, 8), dim=-1) for k in (3, 3, 12))
        ids = torch.arange(3)
        out = loss(PairBatch(q, p, ids, ids, p, ids, ids, n, torch.arange(12)))
        out.total.backward()
    """

    def __init__(self, name: str, cfg: LossConfig, dims: Sequence[int], weights: Sequence[float],
                 seed: int = 0) -> None:
        super().__init__()
        self.name, self.dims, self.weights = name, tuple(dims), tuple(weights)
        self.max_log_scale = math.log(cfg.max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.init_scale)))
        sketch = {"width": cfg.sketch_width, "depth": cfg.sketch_depth}
        self.query_counts = CountMinSketch(**sketch, seed=seed)
        self.pair_counts = CountMinSketch(**sketch, seed=seed + 1)
        self.in_batch_counts = CountMinSketch(**sketch, seed=seed + 2)
        self.random_counts = CountMinSketch(**sketch, seed=seed + 3)

    def extra_repr(self) -> str:
        prefixes = ", ".join(f"{d}:{w:g}" for d, w in zip(self.dims, self.weights))
        return (f"task={self.name!r}, negatives=in_batch+random, logq=True, "
                f"scale<={math.exp(self.max_log_scale):g}, matryoshka={{{prefixes}}}")

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def sketch_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.modules() if isinstance(m, CountMinSketch))

    def observe(self, all_query_ids: torch.Tensor, all_pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> None:
        """Add one step's sampled ids to the sketches (``forward`` does; a resume replays it)."""
        self.query_counts.update(all_query_ids)
        self.pair_counts.update(pair_key(all_query_ids, all_pos_ids))
        self.in_batch_counts.update(all_pos_ids)
        self.random_counts.update(neg_ids)

    def forward(self, b: PairBatch) -> TaskLoss:
        with torch.no_grad():
            self.log_scale.clamp_(max=self.max_log_scale)
            self.observe(b.all_query_ids, b.all_pos_ids, b.neg_ids)
            # log P(p|q) = log c(q, p) - log c(q): both sketches saw the same number of updates.
            log_p_pos = (self.pair_counts(pair_key(b.query_ids, b.pos_ids)).log_prob()
                         - self.query_counts(b.query_ids).log_prob())
            # log Q(n) = log(|N| * c(n) / total): the chance n is among this step's |N| candidates.
            log_q_in = self.in_batch_counts(b.all_pos_ids).log_prob() + math.log(len(b.all_pos_ids))
            log_q_rnd = self.random_counts(b.neg_ids).log_prob() + math.log(max(len(b.neg_ids), 1))
            positives = pair_key(b.all_query_ids, b.all_pos_ids).sort().values
            hit_in = _is_positive(pair_key(b.query_ids.unsqueeze(1), b.all_pos_ids.unsqueeze(0)), positives)
            hit_rnd = _is_positive(pair_key(b.query_ids.unsqueeze(1), b.neg_ids.unsqueeze(0)), positives)

        components: dict[str, torch.Tensor] = {}
        total = b.query.new_zeros((), dtype=torch.float32)
        for dim, weight in zip(self.dims, self.weights):
            q, p, c, n = (F.normalize(x[:, :dim].float(), dim=-1) for x in (b.query, b.pos, b.all_pos, b.neg))
            pos_logit = self.scale * (q * p).sum(-1, keepdim=True) - log_p_pos.unsqueeze(1)
            in_batch_logits, in_batch_hits = self.scale * q @ c.T - log_q_in, hit_in
            if b.hard is not None:  # the row's own hard negatives join its in-batch candidates
                h = F.normalize(b.hard[..., :dim].float(), dim=-1)
                in_batch_logits = torch.cat([in_batch_logits, self.scale * torch.einsum("bd,bkd->bk", q, h)], dim=1)
                in_batch_hits = torch.cat([in_batch_hits, ~b.hard_valid], dim=1)
            in_batch = self._cross_entropy(pos_logit, in_batch_logits, in_batch_hits)
            random = self._cross_entropy(pos_logit, self.scale * q @ n.T - log_q_rnd, hit_rnd)
            components[f"in_batch@{dim}"], components[f"random@{dim}"] = in_batch, random
            total = total + weight * (in_batch + random)
        return TaskLoss(total, components)

    @staticmethod
    def _cross_entropy(pos_logit: torch.Tensor, neg_logits: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
        # Column 0 is the positive; masked hits get the dtype's lowest value, not -inf, so a row
        # whose candidates are all hits still has a finite (zero) loss.
        neg_logits = neg_logits.masked_fill(hits, torch.finfo(neg_logits.dtype).min)
        logits = torch.cat([pos_logit, neg_logits], dim=1)
        return F.cross_entropy(logits, logits.new_zeros(len(logits), dtype=torch.long))


class MultiTaskLoss(nn.Module):
    """One :class:`SampledSoftmaxLoss` per task; the step's loss is their sum weighted by batch share.

    Weighting by the share of the step's pairs a task holds makes the total the mean loss per pair,
    so a task with twice the pairs counts twice (the paper's pin 8 : product 4 : query 2 mix).
    ``prefixes`` maps each task to its Matryoshka ``{dim: weight}``.
    """

    def __init__(self, cfg: LossConfig, prefixes: Mapping[str, Mapping[int, float]],
                 shares: Mapping[str, float]) -> None:
        super().__init__()
        share_sum = sum(shares[t] for t in prefixes)
        self.shares = {t: shares[t] / share_sum for t in prefixes}
        self.tasks = nn.ModuleDict({
            task: SampledSoftmaxLoss(task, cfg, list(dims), list(dims.values()), seed=17 * i)
            for i, (task, dims) in enumerate(prefixes.items())
        })

    def extra_repr(self) -> str:
        return "shares={" + ", ".join(f"{t}: {s:.3f}" for t, s in self.shares.items()) + "}"

    @property
    def sketch_bytes(self) -> int:
        return sum(t.sketch_bytes for t in self.tasks.values())

    def forward(self, batches: Mapping[str, PairBatch]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and every component, detached, as ``task/in_batch@256``, ``task/scale``, ..."""
        weighted, logs = [], {}
        for task, batch in batches.items():
            out = self.tasks[task](batch)
            weighted.append(self.shares[task] * out.total)
            logs[f"{task}/loss"] = out.total.detach()
            logs.update({f"{task}/{k}": v.detach() for k, v in out.components.items()})
            logs[f"{task}/scale"] = self.tasks[task].scale.detach()
        return torch.stack(weighted).sum(), logs
