"""The training loop, ``train(ws, cfg, name) -> run dir``, readable top to bottom.

    data      = load_training_data(ws, cfg)          catalogues + (query, entity) pairs per task
    model     = TwoTowerModel(cfg.model, spec)        query tower + entity tower
    criterion = MultiTaskLoss(cfg.loss, ...)          one sampled softmax per task
    for step in range(start, cfg.steps):
        batch = data.batch(data.sample(step))         a pure function of (seed, step, rank)
        loss  = objective(batch)                      towers -> per-task pairs -> weighted losses
        backward; clip; lr = warmup + cosine; optimizer step
        every log_every steps: metrics.jsonl          every checkpoint_minutes: a checkpoint

Devices come from accelerate: the same code runs on a CPU, one GPU (bf16 autocast), or many
GPUs under ``accelerate launch`` (DDP; every task's positives and negatives are gathered from
all processes, so each query is scored against the global batch).

A run lives in ``runs/NAME/``: ``config.json`` (the config and what the data decided: id space,
fields, dense layout, tasks), ``metrics.jsonl`` (one line per log step, every loss component),
``checkpoints/step-NNNNNNN/`` (weights, optimizer state, step; safetensors + JSON) and, once
finished, ``summary.json``. ``resume=True`` continues from the newest checkpoint and reproduces
the uninterrupted run exactly on CPU: batches and dropout masks are functions of (seed, step),
and the count-min sketches are rebuilt by replaying the sampler.

Checkpoints are taken by time (``checkpoint_minutes``; optionally also every ``checkpoint_every``
steps), at the end, and when SIGINT or SIGTERM arrives: the step in flight finishes, a checkpoint
is written and the run stops with exit code 130/143 (a second signal stops at once). So a killed
run resumes from its last checkpoint, and a plain rerun of an interrupted run either says how to
resume it or, with no checkpoint yet, starts it afresh (nothing would be lost).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from omnisearchsage.atomic import atomic_path, sweep_stale, write_json
from omnisearchsage.contract import FEATURE_PINS, FEATURE_PRODUCTS, RunLayout, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.towers import ModelSpec, TransformerQueryTower, TwoTowerModel
from omnisearchsage.progress import progress_bar
from omnisearchsage.split import TimeSplit
from omnisearchsage.trainer.anchor import resolve_query_encoder
from omnisearchsage.trainer.config import TrainConfig, scored_shares
from omnisearchsage.trainer.data import StepBatch, TrainingData, encoder_texts, load_training_data
from omnisearchsage.trainer.field_dropout import presence_patterns, resolve_field_dropout
from omnisearchsage.trainer.fine_tune import resolve_fine_tuning
from omnisearchsage.trainer.hard_negatives import mine
from omnisearchsage.trainer.lamb import Lamb
from omnisearchsage.trainer.loss import MultiTaskLoss, PairBatch
from omnisearchsage.trainer.siamese import fine_tune_siamese
from omnisearchsage.validate import validate_workspace

log = logging.getLogger(__name__)

CONFIG, METRICS, SUMMARY, CHECKPOINTS = RunLayout.CONFIG, RunLayout.METRICS, RunLayout.SUMMARY, RunLayout.CHECKPOINTS


class Objective(nn.Module):
    """Towers and loss as one module, so DDP synchronises the gradients of both (the loss owns the
    learned temperatures)."""

    def __init__(self, model: TwoTowerModel, criterion: MultiTaskLoss) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        queries, compat = self.model.query.forward_with_compat(**batch.query_inputs)
        entities = self.model.entity(**batch.entity_inputs) if batch.entity_inputs is not None else None
        pairs = {}
        for name, rows in batch.tasks.items():
            source, query = {"query": queries, "entity": entities}.get(rows.source), queries
            if source is None:  # a compat task: its own query output (when the tower has one)
                source, query = batch.legacy[name], queries if compat is None else compat
            pos, neg = source[rows.pos], source[rows.neg]
            hard = None if rows.hard is None else source[rows.hard].view(len(pos), -1, pos.shape[1])
            pairs[name] = PairBatch(query[rows.query], pos, rows.query_ids, rows.pos_ids,
                                    gather(pos), gather(rows.query_ids), gather(rows.pos_ids),
                                    gather(neg), gather(rows.neg_ids), hard, rows.hard_valid)
        return self.criterion(pairs)


def gather(x: torch.Tensor) -> torch.Tensor:
    """``x`` from every process, concatenated in rank order; gradients flow back to each process's
    own rows. The identity with one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.is_floating_point():
        return torch.cat(dist_fn.all_gather(x))
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``cfg.lr``, then a cosine down to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(ws: Workspace, cfg: TrainConfig, name: str, resume: bool = False, overwrite: bool = False) -> Path:
    """Train the towers on every task in ``cfg.tasks`` with data; returns ``runs/NAME``.

    With ``resume`` the run's saved config is used and training continues from its newest
    checkpoint; with ``overwrite`` an existing run of that name is deleted first. Raises OmniError
    for bad options, missing inputs, a task named without data, an existing run without either
    flag, or a non-finite loss (with the step it happened at).
    """
    run = ws.run_dir(name)
    sweep_stale(run / CHECKPOINTS)
    cfg, overwrite = _run_config(run, cfg, resume, overwrite)
    if resume and not checkpoints(run):
        log.warning("%s: interrupted before its first checkpoint; training it from step 0 with its saved config", run)
        resume, overwrite = False, True
    loop_threads, all_threads = None if torch.cuda.is_available() else cfg.cpu_threads, torch.get_num_threads()
    with cpu_threads(loop_threads):
        return _train(ws, cfg, name, run, resume, overwrite, all_threads if loop_threads else None)


def _train(ws: Workspace, cfg: TrainConfig, name: str, run: Path, resume: bool, overwrite: bool,
           stage_threads: int | None) -> Path:
    """The loop itself (see the module docstring), under the thread setting :func:`train` chose."""
    gpu = torch.cuda.is_available()
    # cpu=True on a CPU-only machine also makes `torchrun --nproc_per_node N` run N CPU processes (gloo).
    accelerator = Accelerator(cpu=not gpu, mixed_precision="bf16" if gpu else "no",
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    rank, world = accelerator.process_index, accelerator.num_processes
    # The raw inputs in full (both catalogues deleted must not train on stale features), then the features;
    # before --overwrite deletes anything, so bad input never costs the previous run.
    validate_workspace(ws)
    validate_workspace(ws, [t for t in (FEATURE_PINS, FEATURE_PRODUCTS) if ws.has(t)])
    if overwrite and not resume and accelerator.is_main_process:
        shutil.rmtree(run, ignore_errors=True)
    accelerator.wait_for_everyone()

    # ---- data: catalogues of token bags, pairs per task, the time split
    featurizer = Featurizer.load(ws.features)
    cfg = resolve_query_encoder(ws, cfg)  # "auto" -> ngram, or anchored on the legacy embeddings' encoder
    data = load_training_data(ws, cfg, featurizer)
    if not resume:
        cfg = resolve_field_dropout(resolve_fine_tuning(limit_steps(cfg, data), data), data)
    spec = model_spec(featurizer, data, cfg.model)

    # ---- model, loss, optimizer
    torch.manual_seed(cfg.seed)
    idf = data.lexical_idf(cfg.model.lexical_fields, cfg.model.lexical_idf_offset) if cfg.model.lexical_buckets and not resume else None
    model = TwoTowerModel(cfg.model, spec, idf)
    if cfg.model.presence_dropout and model.entity.bag is not None:
        model.entity.set_presence_patterns(presence_patterns(data))
    criterion = MultiTaskLoss(cfg.loss, task_prefixes(cfg, data, model.out_dim), loss_shares(cfg, data))
    objective = Objective(model, criterion)
    text_vectors, siamese = None, None
    if cfg.model.entity_text and not resume:  # the body learns here, on both sides, then freezes
        kind = cfg.model.anchor_kind
        cat = data.catalogues[kind]
        with cpu_threads(stage_threads):  # large matrix products, unlike a loop step: every core helps
            siamese = fine_tune_siamese(model.query, data, kind, encoder_texts(ws, kind, cat.keys), cfg,
                                        accelerator.device)
        text_vectors = siamese.vectors
    if isinstance(model.query, TransformerQueryTower):
        model.query.transformer.requires_grad_(False)  # the loop never trains the body
    optimizer = make_optimizer(objective, cfg)
    log.debug("%s", objective)

    start = 0
    if resume:
        start = load_checkpoint(run, objective, optimizer)
        replay_sketches(criterion, data, start, world, cfg.compat_shared_pairs)
        if cfg.model.entity_text:
            text_vectors = read_text_vectors(ws.run(name), data.catalogues[cfg.model.anchor_kind].keys)
        log.info("resuming %s from step %d", run, start)
    elif accelerator.is_main_process:
        write_json(run_config(ws, cfg, spec, data), run / CONFIG)
        (run / METRICS).unlink(missing_ok=True)
        if text_vectors is not None:
            write_text_vectors(ws.run(name), data.catalogues[cfg.model.anchor_kind].keys, text_vectors)
    if text_vectors is not None:
        data.catalogues[cfg.model.anchor_kind].text_vectors = text_vectors
    if isinstance(model.query, TransformerQueryTower):  # after a resume loaded the body it ran with
        pool_query_body(model.query, data, cfg.export_batch_size)
    _truncate_metrics(run / METRICS, start)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    tokenize = getattr(model.query, "tokenize", None)

    # ---- the loop
    done, started, seen, sums, count = start, time.perf_counter(), 0, {}, 0
    last_saved = time.monotonic()
    with progress_bar(cfg.steps, f"train {name}", "step") as bar, stop_signals() as stop:
        bar.advance(start)
        for step in range(start, cfg.steps):
            if cfg.hard.per_pair and (step == start or step % cfg.hard.refresh_every == 0):
                mine(model, data, cfg.hard, tokenize, cfg.export_batch_size, step)
            torch.manual_seed(_step_seed(cfg.seed, step))  # dropout depends on (seed, step) only
            batch = data.batch(data.sample(step, rank, world, cfg.compat_shared_pairs), tokenize).to(accelerator.device)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

            with accelerator.autocast():
                loss, parts = objective(batch)
            if not torch.isfinite(loss):
                raise OmniError(f"training loss became {loss.item()} at step {step + 1}; nothing of this "
                                f"step was saved. Lower --lr (now {cfg.lr:g}) or resume from the last checkpoint")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done, seen, count = step + 1, seen + batch.pairs * world, count + 1
            for key, value in {"loss": loss.detach(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            if done % cfg.log_every == 0 or done == cfg.steps:
                rate = seen / (time.perf_counter() - started)
                means = accelerator.reduce(torch.stack(list(sums.values())) / count, "mean")  # over processes
                record = {"step": done, "lr": lr, "pairs_per_s": round(rate, 1),
                          **{k: round(float(v), 5) for k, v in zip(sums, means)}}
                sums, count = {}, 0
                if accelerator.is_main_process:
                    with (run / METRICS).open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                bar.advance(0, status=f"loss {record['loss']:.3f} · {rate:,.0f} pairs/s")
            bar.advance(1)
            if done == cfg.steps:
                break
            due = (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or (
                cfg.checkpoint_minutes and time.monotonic() - last_saved >= cfg.checkpoint_minutes * 60)
            save, halt = _agree(accelerator, bool(due), stop.signum is not None)
            if save or halt:
                save_checkpoint(run, accelerator, objective, optimizer, done, cfg.keep_checkpoints)
                last_saved = time.monotonic()
            if halt:
                raise TrainingInterrupted(run, done, stop.signum or signal.SIGTERM)
    save_checkpoint(run, accelerator, objective, optimizer, done, cfg.keep_checkpoints)

    if accelerator.is_main_process:
        summary = _summary(run, name, data, criterion, time.perf_counter() - started, seen)
        write_json(summary | ({"siamese": siamese.timings} if siamese else {}), run / SUMMARY)
    accelerator.wait_for_everyone()
    return run


# ---------------------------------------------------------------------------- pieces of the loop
class TrainingInterrupted(OmniError):
    """SIGINT or SIGTERM stopped a run after a checkpoint; exit code 128 + the signal number."""

    def __init__(self, run: Path, step: int, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{run}: stopped by {name} after step {step}; checkpoint saved, continue with "
                         f"`omni train --name {run.name} --resume`", exit_code=128 + signum)


class _Stop:
    """The first stop signal received (None: none yet)."""

    signum: int | None = None


@contextlib.contextmanager
def stop_signals() -> Iterator[_Stop]:
    """Turn the first SIGINT/SIGTERM into a request the loop honours after the step in flight (a step
    cut in half would checkpoint half-updated weights); a second one raises KeyboardInterrupt at once.
    Outside the main thread (signals cannot be caught there) nothing is installed."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.signum is not None:
            raise KeyboardInterrupt
        stop.signum = signum
        log.warning("%s received: stopping after this step with a checkpoint (again to stop at once)",
                    signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _agree(accelerator: Accelerator, save: bool, halt: bool) -> tuple[bool, bool]:
    """Whether any process wants a checkpoint / to stop: clocks and signals differ between
    processes, and a checkpoint is a collective step, so all must decide alike."""
    if accelerator.num_processes == 1:
        return save, halt
    flags = accelerator.reduce(torch.tensor([save, halt], dtype=torch.float32, device=accelerator.device), "sum")
    return bool(flags[0] > 0), bool(flags[1] > 0)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: unchanged), then restore the caller's setting."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pool_query_body(tower: TransformerQueryTower, data: TrainingData, batch_size: int) -> None:
    """Pool every training query through the frozen body once, in eval mode (its outputs never change
    in the loop, so each step then runs only the head)."""
    tower.transformer.eval()
    data.pool_queries(lambda texts: tower.pool(**tower.tokenize(texts)), batch_size)


def write_text_vectors(run: RunLayout, keys: pl.Series, vectors: np.ndarray) -> None:
    """The siamese stage's entity vectors, saved once: ``--resume`` and the export read them back."""
    with atomic_path(run.text_vectors) as tmp, tmp.open("wb") as f:
        np.savez(f, ids=keys.cast(pl.Utf8).to_numpy().astype(str), vectors=vectors)


def read_text_vectors(run: RunLayout, keys: pl.Series) -> np.ndarray:
    """:func:`write_text_vectors`' vectors aligned to ``keys``; OmniError if any key has none."""
    if not run.text_vectors.is_file():
        raise OmniError(f"{run.text_vectors}: missing; the run's siamese stage did not finish: retrain "
                        f"without --resume")
    with np.load(run.text_vectors) as saved:
        ids, vectors = saved["ids"], saved["vectors"]
    index = pl.DataFrame({"id": ids, "row": np.arange(len(ids))})
    rows = pl.DataFrame({"id": keys.cast(pl.Utf8)}).join(index, on="id", how="left", maintain_order="left")["row"]
    if rows.null_count():
        missing = rows.is_null().arg_true().head(3).to_list()
        raise OmniError(f"{run.text_vectors}: no vector for {rows.null_count()} entities (e.g. "
                        f"{keys.gather(missing).to_list()}); the catalogue changed after training: retrain")
    return vectors[rows.to_numpy()]


def lexical_ranges(featurizer: Featurizer, tokens: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """The id ranges of the lexical channel's token kinds, each with its out-of-vocabulary hashes."""
    unknown = [t for t in tokens if t not in featurizer.id_space or f"oov_{t}" not in featurizer.id_space]
    if unknown:
        raise OmniError(f"lexical tokens {unknown}: the features have "
                        f"{sorted(k for k in featurizer.id_space if not k.startswith('oov_'))}")
    kinds = [k for t in tokens for k in (t, f"oov_{t}")]
    return tuple((int(a), int(b)) for a, b in (featurizer.id_space[k] for k in kinds))


def model_spec(featurizer: Featurizer, data: TrainingData, cfg: ModelConfig) -> ModelSpec:
    """What the features and the data decide about the model: the lexical channel's id ranges, and the
    compat head's width when ``cfg.compat_head`` and a compat task has data (its widest legacy embedding)."""
    legacy = [data.catalogues[t.candidate].legacy_dim for t in data.tasks.values() if t.frozen]
    return ModelSpec(featurizer.num_ids, data.fields, data.dense_layout, lexical_ranges(featurizer, cfg.lexical_tokens),
                     max(legacy) if cfg.compat_head and legacy else 0)


def limit_steps(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with ``steps`` cut to ``max_epochs`` of the slowest task (warmup cut to a tenth of them)."""
    if cfg.max_epochs is None:
        return cfg
    steps = min(cfg.steps, data.steps_for_epochs(cfg.max_epochs))
    if steps < cfg.steps:
        log.info("training %d steps instead of %d: %g epochs of every task's pairs (max_epochs)",
                 steps, cfg.steps, cfg.max_epochs)
    return dataclasses.replace(cfg, steps=steps, warmup_steps=min(cfg.warmup_steps, max(1, steps // 10)))


def task_prefixes(cfg: TrainConfig, data: TrainingData, width: int) -> dict[str, dict[int, float]]:
    """Matryoshka ``{dim: weight}`` per task; the full dimension means the whole ``width``-wide output
    (the dense part and the lexical channel), a shorter prefix the dense part's first dimensions. A compat
    task scores the legacy-width prefix of its query output (the compat head's, else the main one's)."""
    full = {(width if d == cfg.model.dim else d): w for d, w in zip(cfg.loss.matryoshka_dims, cfg.loss.matryoshka_weights)}
    return {name: ({data.catalogues[t.candidate].legacy_dim: 1.0} if t.frozen else full)
            for name, t in data.tasks.items()}


def make_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused) or LAMB; matrices decay, vectors and scalars (norms, biases, temperatures) do not.
    An anchored model's residuals, heads and lexical weights learn at ``anchor_lr_scale`` times the rate (each
    group's ``lr_scale``). A pretrained transformer body is frozen here: only the siamese stage trains it."""
    def rate(name: str) -> float:
        anchored = cfg.model.anchor_kind is not None and (".residual." in name or ".head." in name
                                                          or ".compat." in name or ".lexical." in name)
        return cfg.anchor_lr_scale if anchored else 1.0

    scales = {id(p): rate(name) for name, p in module.named_parameters()}
    groups = []
    for scale in sorted(set(scales.values()), reverse=True):
        params = [p for p in module.parameters() if p.requires_grad and scales[id(p)] == scale]
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": scale},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "lamb":
        return Lamb(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def loss_shares(cfg: TrainConfig, data: TrainingData) -> dict[str, float]:
    """Each task's weight in the step's loss: its share of the pairs the step scores (so the loss is the
    mean per scored pair; :func:`scored_shares`)."""
    return scored_shares(cfg, data.tasks)


def replay_sketches(criterion: MultiTaskLoss, data: TrainingData, steps: int, world: int,
                    compat_shared: bool) -> None:
    """Rebuild every task's count-min sketches by re-drawing the ids of steps ``[0, steps)``."""
    device = next(criterion.parameters()).device
    for step in range(steps):
        per_rank = [data.sample(step, r, world, compat_shared) for r in range(world)]
        for name, loss in criterion.tasks.items():
            ids = {f: torch.from_numpy(np.concatenate([getattr(s[name], f) for s in per_rank])).to(device)
                   for f in ("query_rows", "pos_rows", "neg_rows")}
            loss.observe(ids["query_rows"], ids["pos_rows"], ids["neg_rows"])


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence((seed, step)).generate_state(1)[0])


# ---------------------------------------------------------------------------- run files
def run_config(ws: Workspace, cfg: TrainConfig, spec: ModelSpec, data: TrainingData) -> dict[str, Any]:
    """``runs/NAME/config.json``: enough to rebuild the model without the training data."""
    return {
        "config": cfg.to_json(),
        "spec": spec.to_json(),
        "tasks": {name: {"candidate": t.candidate, "frozen": t.frozen, "pairs": t.pairs, "batch_size": t.batch_size}
                  for name, t in data.tasks.items()},
        "legacy_dims": {k: c.legacy_dim for k, c in data.catalogues.items() if c.legacy is not None},
        "visual_model": data.visual_model,
        "split": TimeSplit.for_workspace(ws).to_json(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_run_config(run: Path) -> dict[str, Any]:
    path = run / CONFIG
    if not path.exists():
        raise OmniError(f"{path}: missing; train the run first with `omni train --name {run.name}`")
    return json.loads(path.read_text(encoding="utf-8"))


def _run_config(run: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> tuple[TrainConfig, bool]:
    """The config to train with and whether to start the run folder afresh.

    A plain rerun of a run that was interrupted before its first checkpoint starts afresh (nothing
    is lost); one with a checkpoint, or a finished run, is refused with what to do instead.
    """
    if resume:
        saved_json = read_run_config(run)["config"]
        # A run started before an option continues as it started (the configs' ``LEGACY`` values).
        saved = TrainConfig.from_json(saved_json)
        saved.validate()
        return saved, False
    cfg.validate()
    if (run / CONFIG).exists() and not overwrite:
        found = checkpoints(run)
        if not found and not (run / SUMMARY).exists():
            log.warning("%s: interrupted before its first checkpoint; starting it afresh", run)
            return cfg, True
        state = "finished" if (run / SUMMARY).exists() else f"interrupted, last checkpoint at {found[-1].name}"
        raise OmniError(f"{run}: a run named {run.name!r} exists ({state}); continue it with --resume, replace it "
                        "with --overwrite, or choose another --name")
    return cfg, overwrite


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (logged after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if json.loads(ln)["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def _summary(run: Path, name: str, data: TrainingData, criterion: MultiTaskLoss, seconds: float,
             pairs: int) -> dict[str, Any]:
    last = {}
    if (run / METRICS).exists():
        lines = (run / METRICS).read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1]) if lines else {}
    return {
        "run": name,
        "steps": last.get("step"),
        "pairs": data.summary(),
        "final_loss": {t: last.get(f"{t}/loss") for t in data.tasks} | {"total": last.get("loss")},
        "seconds": round(seconds, 1),
        "pairs_per_s": round(pairs / max(seconds, 1e-9), 1),
        "sketch_mib": round(criterion.sketch_bytes / 2**20, 1),
    }


def read_summary(run: Path) -> dict[str, Any]:
    return json.loads((run / SUMMARY).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- checkpoints
def checkpoints(run: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    return sorted((run / CHECKPOINTS).glob("step-*"))


def save_checkpoint(run: Path, accelerator: Accelerator, objective: nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, keep: int) -> Path:
    """``checkpoints/step-NNNNNNN/``: weights (model.safetensors), optimizer moments
    (optimizer.safetensors) and state.json; written atomically, older ones pruned to ``keep``."""
    path = run / CHECKPOINTS / f"step-{step:07d}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = optimizer.state_dict()
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in state["state"].items() for k, v in s.items()}
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            save_model(accelerator.unwrap_model(objective), str(tmp / RunLayout.CHECKPOINT_WEIGHTS))
            save_file(tensors, str(tmp / RunLayout.CHECKPOINT_OPTIMIZER))
            (tmp / RunLayout.CHECKPOINT_STATE).write_text(json.dumps({"step": step, "param_groups": state["param_groups"]}),
                                            encoding="utf-8")
        for old in checkpoints(run)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(run: Path, objective: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Load the newest checkpoint into ``objective`` (and ``optimizer``); returns its step."""
    found = checkpoints(run)
    if not found:
        raise OmniError(f"{run / CHECKPOINTS}: no checkpoint to resume from; train the run first")
    path = found[-1]
    load_model(objective, str(path / RunLayout.CHECKPOINT_WEIGHTS))
    state = json.loads((path / RunLayout.CHECKPOINT_STATE).read_text(encoding="utf-8"))
    if optimizer is not None:
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in load_file(str(path / RunLayout.CHECKPOINT_OPTIMIZER)).items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return int(state["step"])
