"""The siamese stage: a run's pretrained text encoder fine-tuned on both sides, before the multi-task loop.

An anchored model (``anchor.py``) queries a catalogue whose legacy embeddings the same pretrained
encoder computed from the entities' text. With thousands of training queries (``fine_tune.py``
decides), the strongest thing a user would otherwise do is sentence-transformers' recipe: fine-tune
that encoder on the (query, entity text) pairs with in-batch negatives
(MultipleNegativesRankingLoss), *both* sides moving together. Fine-tuning the query side alone
leaves the entities in the untuned space, which is why it did not help (README, *Real data*).
This stage runs that recipe inside the trainer, on the run's own pairs:

* one body, shared by queries and entity texts (``text_encoders.encoder_text``: what the importer
  embedded), mean or CLS pooled as the encoder pools, L2-normalised;
* only its top ``fine_tune_layers`` layers learn: the embeddings and the layers below run once per
  distinct text, and their hidden states are kept (``LowerStates``), so a CPU step runs a third of
  the body;
* batches of ``fine_tune_batch_size`` pairs with no query and no entity twice (sentence-transformers'
  ``NoDuplicatesBatchSampler``: a duplicate would be a false in-batch negative), loss
  ``cross_entropy(fine_tune_logit_scale * cos(q_i, e_j), i)``, AdamW at ``lr * pretrained_lr_scale``
  decaying linearly to 0 over ``fine_tune_epochs`` epochs of the pairs;
* every pass of the body (the lower layers once, each step's top layers, the final vectors) runs in
  bf16 autocast where the hardware has native bf16 (``text_encoders.bf16_autocast``; ``fine_tune_bf16``),
  the loss and the optimizer in float32;
* with ``fine_tune_hard_negatives`` > 0, each pair also brings one mined hard negative, sentence-
  transformers' ``mine_hard_negatives`` + MNRL recipe: before the first step the untuned body ranks the
  catalogue for every training query, and each pair keeps its query's best-scoring entities that are not
  its positives, existed before the cutoff (the task's negative pool) and pass the false-negative
  guard (``hard_negatives.mine_from_vectors``, the loop's
  rule and ``cfg.hard``'s candidates and margin); a step draws one of them per pair, and they join every
  row's candidates (a column that is a known positive of a row is masked for that row);
* then the body is frozen; the stage returns the tuned body's vector of every catalogue entity of
  that kind, which the entity tower reads in its anchor slot from then on (``ModelConfig.entity_text``)
  and which the export writes as it is.

The multi-task loop then trains what it always trains on top (residual maps, the lexical channel,
the compat tasks) with the body frozen. Written here rather than by calling sentence-transformers:
the body is the query tower's own module, its lower layers are cached, and the result must land in
the run's checkpoint, none of which its trainer offers.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from omnisearchsage.errors import OmniError
from omnisearchsage.model.towers import TransformerQueryTower
from omnisearchsage.progress import progress_bar
from omnisearchsage.text_encoders import bf16_autocast
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import TrainingData
from omnisearchsage.trainer.hard_negatives import mine_from_vectors
from omnisearchsage.trainer.loss import pair_key

log = logging.getLogger(__name__)


@dataclass
class LowerStates:
    """The frozen lower layers' hidden states of many texts, unpadded: one float16 row per token."""

    tokens: torch.Tensor  # float16 [total tokens, hidden]
    starts: torch.Tensor  # int64 [texts]: first token row of each text
    lengths: torch.Tensor  # int64 [texts]

    @classmethod
    def compute(cls, texts: Sequence[str], tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]],
                lower: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int) -> LowerStates:
        """Run ``lower`` once over ``texts``, batched by length (padding is most of a short text's cost)."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        chunks, lengths = [], torch.zeros(len(texts), dtype=torch.long)
        with torch.no_grad(), progress_bar(len(texts), "lower layers", "text") as bar:
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                enc = tokenize([texts[i] for i in rows])
                mask = enc["attention_mask"].bool()
                chunks.append(lower(enc["input_ids"], enc["attention_mask"])[mask].to(torch.float16))
                lengths[torch.from_numpy(rows)] = mask.sum(1)
                bar.advance(len(rows))
        # Tokens are stored in processing order; each text's start follows from the lengths in that order.
        ordered = torch.from_numpy(order)
        starts = torch.zeros(len(texts), dtype=torch.long)
        starts[ordered] = torch.cumsum(lengths[ordered], 0) - lengths[ordered]
        hidden = chunks[0].shape[1] if chunks else 0
        return cls(torch.cat(chunks) if chunks else torch.zeros(0, hidden, dtype=torch.float16), starts, lengths)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 hidden states [len(rows), longest, hidden] and their attention mask."""
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        pos = torch.arange(width)
        mask = pos[None, :] < lengths[:, None]
        take = torch.where(mask, self.starts[idx, None] + pos[None, :], 0)
        hidden = self.tokens[take].float() * mask[..., None]
        return hidden, mask.long()


def no_duplicate_batches(queries: np.ndarray, entities: np.ndarray, size: int, seed: int,
                         epochs: float) -> list[np.ndarray]:
    """Pair indices in batches of ``size`` where no query and no entity repeats, over ``epochs``
    shuffled passes (sentence-transformers' ``NoDuplicatesBatchSampler``: a pair that would repeat one
    waits for a later batch)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(int(np.ceil(epochs))):
        pending = rng.permutation(len(queries)).tolist()
        while pending:
            batch, seen_q, seen_e, rest = [], set(), set(), []
            for i in pending:
                q, e = int(queries[i]), int(entities[i])
                if len(batch) < size and q not in seen_q and e not in seen_e:
                    batch.append(i)
                    seen_q.add(q)
                    seen_e.add(e)
                else:
                    rest.append(i)
            out.append(np.array(batch, dtype=np.int64))
            pending = rest
    per_epoch = len(out) / np.ceil(epochs)
    return out[: max(1, round(per_epoch * epochs))]


def with_hard_negatives(logits: torch.Tensor, hard: np.ndarray, draw: np.random.Generator,
                        query_rows: np.ndarray, positives: torch.Tensor,
                        score: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """``logits`` [rows, rows] with one more column per row that has a mined negative: one drawn among
    the row's qualifying ones (``hard`` [rows, per_pair], -1 padded), scored against every row by
    ``score(entity rows)``; a column that is a known positive of a row (``positives``: sorted
    ``pair_key``) is masked for that row, as the in-batch negatives of the loop are."""
    count = (hard >= 0).sum(1)
    has = np.flatnonzero(count)
    if not len(has):
        return logits
    picked = hard[has, (draw.random(len(has)) * count[has]).astype(np.int64)]
    extra = score(picked)
    keys = pair_key(torch.from_numpy(query_rows)[:, None], torch.from_numpy(picked)[None, :])
    found = torch.searchsorted(positives, keys).clamp(max=len(positives) - 1)
    extra = extra.masked_fill((positives[found] == keys).to(extra.device), float("-inf"))
    return torch.cat([logits, extra], dim=1)


@dataclass
class SiameseResult:
    """The tuned body's float32 [rows, hidden] L2-normalised vectors of the catalogue's texts, and
    where the stage's time went (``omni train`` writes it to the run's summary)."""

    vectors: np.ndarray
    timings: dict[str, float]


def fine_tune_siamese(tower: TransformerQueryTower, data: TrainingData, kind: str, texts: Sequence[str],
                      cfg: TrainConfig, device: torch.device | None = None) -> SiameseResult:
    """Fine-tune ``tower``'s body on the ``query-<kind>`` pairs, both sides through it (module doc);
    returns the tuned body's vectors of ``texts`` (one per row of the ``kind`` catalogue). The body
    is frozen when this returns. It runs on ``device`` (the kept states stay in host memory, one
    batch at a time goes over) and the tower is back on its own device afterwards."""
    task = data.tasks.get(f"query-{kind}")
    layers = tower.layers
    if task is None or task.frozen:
        raise OmniError(f"the siamese stage needs query-{kind} training pairs; train that task or pass "
                        "--pretrained-lr-scale 0")
    if layers is None:
        raise OmniError(f"{tower.source}: not a BERT-style body (embeddings + encoder.layer); the siamese "
                        "stage cannot split it: pass --pretrained-lr-scale 0")
    top = min(cfg.fine_tune_layers or len(layers), len(layers))
    frozen = len(layers) - top
    queries = data.catalogues["query"].keys.to_list()
    home = next(tower.parameters()).device
    device = device or home
    tower.to(device)
    tower.transformer.requires_grad_(False)
    tower.transformer.eval()
    for layer in layers[frozen:]:
        layer.requires_grad_(True)
        layer.train()  # dropout in the learning layers, as sentence-transformers trains

    def lower(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with bf16_autocast(device, cfg.fine_tune_bf16):
            return tower.lower_layers(ids.to(device), mask.to(device), frozen).to(torch.float16).cpu()

    def pooled(states: LowerStates, rows: np.ndarray) -> torch.Tensor:
        hidden, mask = states.batch(rows)
        with bf16_autocast(device, cfg.fine_tune_bf16):
            upper = tower.pool_upper(hidden.to(device), mask.to(device), frozen)
        return F.normalize(upper.float(), dim=-1)

    def vectors(states: LowerStates) -> torch.Tensor:
        """Every text's pooled vector, dropout off, batched by length: float32 [texts, hidden] on the CPU."""
        modes = [layer.training for layer in layers[frozen:]]  # the learning layers train with dropout
        tower.transformer.eval()
        out = torch.empty(len(states.lengths), tower.transformer.config.hidden_size)
        order = np.argsort(states.lengths.numpy(), kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), batch_rows):
                rows = order[start : start + batch_rows]
                out[torch.from_numpy(rows)] = pooled(states, rows).cpu()
        for layer, mode in zip(layers[frozen:], modes, strict=True):
            layer.train(mode)
        return out

    batch_rows = cfg.export_batch_size // 8  # rows of the lower layers' padded batches
    log.info("siamese stage: top %d of %d layers learn; lower layers once per text", top, len(layers))
    q_rows, e_rows = np.unique(task.query_rows), np.arange(len(texts))
    clock = time.perf_counter()
    q_states = LowerStates.compute([queries[i] for i in q_rows], tower.tokenize, lower, batch_rows)
    e_states = LowerStates.compute(texts, lambda t: tower.tokenize(t, cfg.model.entity_max_tokens), lower, batch_rows)
    lower_s, clock = time.perf_counter() - clock, time.perf_counter()
    q_index = np.full(len(queries), -1, dtype=np.int64)  # catalogue row -> row of q_states
    q_index[q_rows] = np.arange(len(q_rows))

    hard = None
    if cfg.fine_tune_hard_negatives:
        hard = mine_from_vectors(vectors(q_states), vectors(e_states), q_index[task.query_rows], task.query_rows,
                                 task.cand_rows, replace(cfg.hard, per_pair=cfg.fine_tune_hard_negatives),
                                 task.negative_pool)
        log.info("siamese stage: %.1f hard negatives per pair after the guard",
                 float((hard >= 0).sum(1).mean()))
    positives = torch.sort(pair_key(torch.from_numpy(task.query_rows), torch.from_numpy(task.cand_rows))).values
    draw = np.random.default_rng(cfg.seed + 1)
    mining_s, clock = time.perf_counter() - clock, time.perf_counter()
    batches = no_duplicate_batches(task.query_rows, task.cand_rows, cfg.fine_tune_batch_size, cfg.seed,
                                   cfg.fine_tune_epochs)
    params = [p for p in tower.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr * cfg.pretrained_lr_scale, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / len(batches))
    torch.manual_seed(cfg.seed)
    with progress_bar(len(batches), "siamese stage", "step") as bar:
        for step, pairs in enumerate(batches):
            q = pooled(q_states, q_index[task.query_rows[pairs]])
            e = pooled(e_states, e_rows[task.cand_rows[pairs]])
            logits = cfg.fine_tune_logit_scale * q @ e.T
            if hard is not None:
                logits = with_hard_negatives(logits, hard[pairs], draw, task.query_rows[pairs], positives,
                                             lambda rows: cfg.fine_tune_logit_scale * q @ pooled(e_states, rows).T)
            loss = F.cross_entropy(logits, torch.arange(len(pairs), device=device))
            if not torch.isfinite(loss):
                raise OmniError(f"siamese stage loss became {loss.item()} at step {step + 1}; lower --lr or "
                                "--pretrained-lr-scale")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            schedule.step()
            bar.advance(1, status=f"loss {loss.item():.3f}")
    steps_s, clock = time.perf_counter() - clock, time.perf_counter()
    tower.transformer.requires_grad_(False)
    tower.transformer.eval()
    pairs_seen = sum(len(b) for b in batches)
    log.info("siamese stage: %d steps, %.0f pairs/s; the body is frozen from here on", len(batches),
             pairs_seen / steps_s)
    out = vectors(e_states).numpy()
    tower.to(home)
    timings = {"lower_layers_s": lower_s, "mining_s": mining_s, "steps": len(batches), "steps_s": steps_s,
               "pairs_per_s": pairs_seen / steps_s, "vectors_s": time.perf_counter() - clock}
    return SiameseResult(out, {k: round(v, 2) for k, v in timings.items()})
