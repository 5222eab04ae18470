"""Training data: catalogues of token bags, (query, entity) pairs per task, and step batches.

What a step sees is a pure function of ``(seed, step, rank)``: each task walks a fresh
permutation of its pairs every epoch and draws random negatives from a generator seeded by the
step. So a resumed run, or a sketch replay, sees exactly the batches the original run saw,
without saving any sampler state.

Catalogues and token bags (the towers' inputs) are the model's, in :mod:`omnisearchsage.model.inputs`.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import (
    CREATED_AT,
    ENGAGEMENTS,
    FEATURE_PINS,
    FEATURE_PRODUCTS,
    PINS,
    PRODUCTS,
    TASKS,
    TableSchema,
    Workspace,
)
from omnisearchsage.errors import OmniError
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import has_words_expr, normalize_expr
from omnisearchsage.model.inputs import VISUAL, Catalogue, TokenBags, entity_inputs, query_catalogue
from omnisearchsage.split import TimeSplit
from omnisearchsage.text_encoders import encoder_text
from omnisearchsage.trainer.config import TrainConfig, shared_task
from omnisearchsage.trainer.positive_queries import positive_queries
from omnisearchsage.trainer.visual import load_visual, visual_model
from omnisearchsage.validate import read_table

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- catalogues
#: The features table and the raw table (legacy embeddings) of each entity kind.
ENTITY_TABLES: dict[str, tuple[TableSchema, TableSchema]] = {
    "pin": (FEATURE_PINS, PINS),
    "product": (FEATURE_PRODUCTS, PRODUCTS),
}
#: Entity kinds in a fixed order: a step batch's ``kinds`` tensor indexes it (presence dropout).
ENTITY_KINDS = tuple(ENTITY_TABLES)


def load_entity_catalogue(ws: Workspace, kind: str, fields: Sequence[str],
                          visual: bool = False) -> Catalogue | None:
    """Pins or products from ``features/<kind>s.parquet`` (None if the workspace has none) with
    their legacy embeddings from the raw table, and with ``visual`` their visual embeddings."""
    feature_table, raw_table = ENTITY_TABLES[kind]
    path = ws.path(feature_table)
    if not path.exists():
        return None
    key = feature_table.columns[0].name
    present = set(pl.read_parquet_schema(path))
    if key not in present:
        raise OmniError(f"{path}: column {key!r} missing; rebuild with `omni features build`")
    wanted = [f for f in fields if f in present]
    frame = pl.read_parquet(path, columns=[key, *wanted])
    if frame.height == 0:  # a products-only catalogue has an empty pins table, and vice versa
        return None
    bags = TokenBags.from_lists([frame.get_column(f).to_arrow() if f in wanted else None for f in fields],
                                frame.height)
    legacy, has = _legacy(ws, raw_table, frame.select(key))
    cat = Catalogue(kind, frame.get_column(key), bags, legacy, has)
    if visual:
        cat.visual, cat.has_visual = load_visual(ws, kind, cat.keys)
    return cat


def encoder_texts(ws: Workspace, kind: str, keys: pl.Series) -> list[str]:
    """The text a sentence encoder reads for each of ``keys`` (``text_encoders.encoder_text``, the
    importer's recipe), from the raw table; empty where a key has no row."""
    table = ENTITY_TABLES[kind][1]
    key = table.columns[0].name
    raw = read_table(ws, table)
    texts = raw.select(pl.col(key), encoder_text(raw.collect_schema().names()).alias("text"))
    wanted = pl.LazyFrame({key: keys}, schema={key: pl.Utf8})
    return wanted.join(texts, on=key, how="left", maintain_order="left").collect()["text"].fill_null("").to_list()


def _legacy(ws: Workspace, table: TableSchema, keys: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Legacy embeddings aligned to ``keys`` (zeros + False where missing); None if there are none."""
    if not ws.has(table):
        return None, None
    key = table.columns[0].name
    raw = (read_table(ws, table).select(key, "legacy_embedding")
           .filter(pl.col("legacy_embedding").is_not_null()).collect())
    if raw.height == 0:
        return None, None
    lengths = raw.get_column("legacy_embedding").list.len()
    dim = int(lengths[0])
    if (lengths != dim).any():
        bad = raw.filter(lengths != dim).get_column(key).head(3).to_list()
        raise OmniError(f"{ws.path(table)}: column legacy_embedding has lengths other than {dim} "
                        f"(rows {', '.join(bad)})")
    aligned = keys.join(raw, on=key, how="left", maintain_order="left").get_column("legacy_embedding")
    has = aligned.is_not_null().to_numpy()
    dense = np.zeros((keys.height, dim), dtype=np.float32)
    dense[has] = aligned.filter(aligned.is_not_null()).list.to_array(dim).to_numpy()
    return dense, has


def existed_before(ws: Workspace, kind: str, keys: pl.Series, cutoff: datetime) -> np.ndarray:
    """bool per catalogue row: the entity was in the catalogue before ``cutoff`` (its ``created_at``
    is earlier, or unknown). Only these can be a training pair's negatives (``contract.CREATED_AT``)."""
    table = ENTITY_TABLES[kind][1]
    key = table.columns[0].name
    if not ws.has(table) or CREATED_AT not in pl.read_parquet_schema(ws.path(table)):
        return np.ones(len(keys), dtype=bool)
    late = read_table(ws, table).filter(pl.col(CREATED_AT) >= cutoff).select(key).collect().get_column(key)
    return ~keys.is_in(late.implode()).to_numpy()


# ---------------------------------------------------------------------------- pairs
def engagement_pairs(ws: Workspace, split: TimeSplit, entity_type: str, actions: Sequence[str],
                     cap: int) -> pl.DataFrame:
    """Distinct (normalised query, entity) pairs of the training window with their event counts;
    each entity keeps its ``cap`` most engaged queries (ties: alphabetical), as the paper caps
    pairs per pin (50) and per product (200). Sorted, so row order is deterministic."""
    events = (
        read_table(ws, ENGAGEMENTS)
        .filter((pl.col("entity_type") == entity_type) & pl.col("action").is_in(list(actions))
                & (pl.col("ts") >= split.train_start) & (pl.col("ts") < split.train_end))
        .select(query=normalize_expr(pl.col("query")), entity_id=pl.col("entity_id"))
    )
    if entity_type == "query":  # a related query is text too; a query is not its own relative
        events = events.with_columns(entity_id=normalize_expr(pl.col("entity_id")))
        events = events.filter(pl.col("query") != pl.col("entity_id"))
        usable = has_words_expr(pl.col("query")) & has_words_expr(pl.col("entity_id"))
    else:
        usable = has_words_expr(pl.col("query"))
    grouped = events.group_by("query", "entity_id", usable=usable).agg(events=pl.len()).collect()
    empty = grouped.filter(~pl.col("usable")).get_column("events").sum()
    if empty:
        log.warning("%s: column query: %d training-window entity_type=%r engagements whose query has no word "
                    "(empty, whitespace, NUL, zero-width or punctuation only) left out of the training pairs",
                    ENGAGEMENTS.relpath, empty, entity_type)
    return (
        grouped.lazy().filter("usable").drop("usable")
        .sort(["entity_id", "events", "query"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("entity_id") < cap)
        .sort("entity_id", "query")
        .collect()
    )


def _report_unknown_actions(ws: Workspace, split: TimeSplit, actions: dict[str, Sequence[str]]) -> None:
    """Warn, with counts per action, about training-window engagements whose action no task uses
    (``purchase``, ``like``): they make no pair, and a user should hear so. An action some task uses
    (a click on a pin, used for products and queries) is a choice of the config, not reported."""
    known = sorted({a for used in actions.values() for a in used})
    counts = (read_table(ws, ENGAGEMENTS)
              .filter((pl.col("ts") >= split.train_start) & (pl.col("ts") < split.train_end)
                      & ~pl.col("action").is_in(known))
              .group_by("action").agg(n=pl.len())
              .sort(["n", "action"], descending=[True, False]).collect())
    if counts.height:
        listed = ", ".join(f"{a}: {n}" for a, n in counts.iter_rows())
        log.warning("%s: column action: %d training-window engagements have actions the trainer does not know "
                    "(%s); left out of the training pairs (known: %s)", ENGAGEMENTS.relpath,
                    counts.get_column("n").sum(), listed, ", ".join(known))


# ---------------------------------------------------------------------------- tasks
@dataclass
class TaskPairs:
    """One task's training pairs (as catalogue rows) and where its candidates come from."""

    name: str
    candidate: str  # the candidate catalogue: pin, product or query
    frozen: bool  # compat task: candidates are frozen legacy embeddings
    query_rows: np.ndarray  # int64 [pairs]
    cand_rows: np.ndarray  # int64 [pairs]
    #: int64: catalogue rows random and mined negatives are drawn from: the entities that existed
    #: before the cutoff (and, for a compat task, have a legacy embedding).
    negative_pool: np.ndarray
    batch_size: int = 0
    #: int64 [pairs]: the bag each pair's positive reads for its engaged queries, an extra bag of the
    #: catalogue's (``positive_queries.py``; -1: the entity's own); None: the run reads the field as it is.
    positive_bags: np.ndarray | None = None
    #: int64 [pairs]: the snapshot day each pair is read as of (``TrainingData.snapshots``); None: the
    #: negatives read the field as it is.
    as_of: np.ndarray | None = None

    @property
    def pairs(self) -> int:
        return len(self.query_rows)


@dataclass
class TaskSample:
    """Catalogue rows one task uses in one step on one process."""

    query_rows: np.ndarray
    pos_rows: np.ndarray
    neg_rows: np.ndarray
    #: int64 [pairs, k] mined hard negatives (-1: none), or None when the task has none.
    hard_rows: np.ndarray | None = None
    #: int64 [positives + negatives + hard negatives], in that order: the engaged-queries bag each
    #: candidate row reads (-1: its own; ``positive_queries.py``), or None: every row reads its own.
    cand_bags: np.ndarray | None = None


def steps_for_epochs(tasks: Sequence[tuple[int, int]], epochs: float) -> int:
    """Steps after which every task, given as (pairs, pairs per step), has walked its pairs ``epochs``
    times: what ``max_epochs`` cuts a run to (``runs/NAME/config.json`` records both numbers per task)."""
    return max(math.ceil(epochs * pairs / batch) for pairs, batch in tasks)


@dataclass
class TrainingData:
    """Everything the loop samples from: catalogues, tasks, the id space, the dense layout."""

    catalogues: dict[str, Catalogue]
    tasks: dict[str, TaskPairs]
    num_ids: int
    fields: tuple[str, ...]
    #: Where each kind's legacy embedding (and its presence flag) sits in the entity tower's
    #: dense input: ``{kind: (offset, dim)}``; empty when legacy embeddings are not used.
    dense_layout: dict[str, tuple[int, int]] = field(default_factory=dict)
    seed: int = 0
    num_negatives: int = 4
    #: The image model of the visual slot's embeddings (None: no visual slot).
    visual_model: str | None = None
    #: A frozen transformer query tower's pooled output for every query row, computed once
    #: (:meth:`pool_queries`); then batches carry these instead of tokens.
    query_pooled: torch.Tensor | None = None
    #: Per task, the mined hard negatives of every pair, int64 [pairs, k] (-1: none); refreshed by the
    #: loop from the model (``hard_negatives.mine``), so unlike the rest of a step they depend on it.
    hard_rows: dict[str, np.ndarray] = field(default_factory=dict)
    #: Index in ``fields`` of the engaged queries the positives read as of their pair
    #: (``positive_queries.py``); None: they read the features table's.
    as_of_field: int | None = None
    #: Per entity kind, int64 [snapshot days, rows]: the engaged-queries bag each entity reads on each
    #: snapshot day (-1: its own); the negatives of a pair read them as of its day. Empty: not used.
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {name: t.pairs for name, t in self.tasks.items()}

    def pool_queries(self, pool: Callable[[Sequence[str]], torch.Tensor], batch_size: int) -> None:
        """Run a frozen query body once over every query row (its outputs never change in training)."""
        keys = self.catalogues["query"].keys
        with torch.no_grad():
            self.query_pooled = torch.cat([pool(keys.slice(i, batch_size).to_list())
                                           for i in range(0, len(keys), batch_size)])

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps after which every task has walked its pairs ``epochs`` times (per process)."""
        return steps_for_epochs([(t.pairs, t.batch_size) for t in self.tasks.values()], epochs)

    def lexical_idf(self, fields: Sequence[str], offset: float = 0.0) -> torch.Tensor:
        """Inverse document frequency ``log((N + 1) / (df + 1)) + offset`` of every token id over the pin
        and product rows' ``fields`` (the lexical channel's initial weights; unseen ids get the maximum)."""
        chosen = [i for i, f in enumerate(self.fields) if f in fields]
        df, docs = np.zeros(self.num_ids, dtype=np.int64), 0
        for cat in (self.catalogues[k] for k in ENTITY_KINDS if k in self.catalogues):
            b, n = cat.bags, cat.bags.rows
            sizes = b.sizes()
            rows = np.repeat(np.tile(np.arange(n, dtype=np.int64), b.fields), sizes)
            field_of = np.repeat(np.repeat(np.arange(b.fields), n), sizes)
            keep = np.isin(field_of, chosen)
            distinct = np.unique(rows[keep] * self.num_ids + b.values[: len(keep)][keep])  # once per (row, id)
            df += np.bincount(distinct % self.num_ids, minlength=self.num_ids)
            docs += n
        return torch.from_numpy((np.log((docs + 1) / (df + 1)) + offset).astype(np.float32))

    # -------------------------------------------------------------- sampling
    def sample(self, step: int, rank: int = 0, world: int = 1, compat_shared: bool = False) -> dict[str, TaskSample]:
        """The rows every task uses at ``step`` on process ``rank`` of ``world`` (deterministic); with
        ``compat_shared`` each compat task also scores the pairs the retrieval task of its kind drew
        (``TrainConfig.compat_shared_pairs``).

        Only entities with a legacy embedding can be a compat positive: the shared pairs whose entity has
        none are replaced by shared pairs that have one (cycled), so every step of every process scores
        the same number of pairs (the gathers of a multi-process step need equal sizes)."""
        out = {}
        for i, task in enumerate(self.tasks.values()):
            idx = _epoch_positions(task.pairs, task.batch_size, step * world + rank, (self.seed, i))
            rng = np.random.default_rng((self.seed, i, step, rank, 1))
            neg = task.negative_pool[rng.integers(0, len(task.negative_pool), task.batch_size * self.num_negatives)]
            hard = self.hard_rows.get(task.name)
            hard = None if hard is None else hard[idx]
            out[task.name] = TaskSample(task.query_rows[idx], task.cand_rows[idx], neg, hard,
                                        self._cand_bags(task, idx, neg, hard, (self.seed, i, step, rank, 2)))
        if not compat_shared:
            return out
        own_samples = dict(out)
        for name, task in self.tasks.items():
            main = self.shared_task(name)
            if main is None:
                continue
            own, shared = own_samples[name], own_samples[main]
            keep, n = np.flatnonzero(self.catalogues[task.candidate].has_legacy[shared.pos_rows]), len(shared.pos_rows)
            if len(keep):
                query_rows, pos_rows = shared.query_rows[np.resize(keep, n)], shared.pos_rows[np.resize(keep, n)]
            else:  # not one has: the task's own pairs again, so the size stays
                query_rows, pos_rows = np.resize(own.query_rows, n), np.resize(own.pos_rows, n)
            out[name] = TaskSample(np.concatenate([own.query_rows, query_rows]),
                                   np.concatenate([own.pos_rows, pos_rows]), own.neg_rows)
        return out

    def _cand_bags(self, task: TaskPairs, idx: np.ndarray, neg: np.ndarray, hard: np.ndarray | None,
                   seed: tuple[int, ...]) -> np.ndarray | None:
        """:attr:`TaskSample.cand_bags` of the pairs ``idx``: positives read ``positive_bags``; with
        snapshots, each random negative reads its entity as of one of these pairs, drawn at random, and
        a pair's hard negatives as of the pair (a missing one is the pair's positive)."""
        if task.positive_bags is None:
            return None
        pos = task.positive_bags[idx]
        snaps = self.snapshots.get(task.candidate)
        if task.as_of is None or snaps is None:
            rest = len(neg) + (0 if hard is None else hard.size)
            return np.concatenate([pos, np.full(rest, -1, dtype=np.int64)])
        when = task.as_of[idx]
        parts = [pos, snaps[when[np.random.default_rng(seed).integers(0, len(idx), len(neg))], neg]]
        if hard is not None:
            parts.append(np.where(hard >= 0, snaps[np.repeat(when[:, None], hard.shape[1], 1), np.maximum(hard, 0)],
                                  pos[:, None]).ravel())
        return np.concatenate(parts)

    def shared_task(self, name: str) -> str | None:
        """The retrieval task whose pairs compat task ``name`` also scores (None: not a compat task, or
        its kind has no retrieval task in this run)."""
        return shared_task(name, self.tasks)

    def batch(self, samples: dict[str, TaskSample],
              tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None = None) -> StepBatch:
        """Tower inputs for one step's samples (``tokenize``: a transformer query tower's tokenizer).

        Each tower runs once per step. The query tower reads every task's queries, then the
        candidate queries of query-query; the entity tower reads the positives and negatives of
        every pin and product task, task after task. ``StepBatch.tasks`` says which rows are whose.
        """
        queries: list[np.ndarray] = [s.query_rows for s in samples.values()]
        entities: list[tuple[str, np.ndarray]] = []
        overrides: list[np.ndarray | None] = []
        legacy: dict[str, torch.Tensor] = {}
        layout: dict[str, TaskRows] = {}
        q0, q_cand, e0 = 0, sum(len(q) for q in queries), 0
        for name, s in samples.items():
            task, b = self.tasks[name], len(s.pos_rows)
            cands = np.concatenate([s.pos_rows, s.neg_rows])
            hard_valid = None
            if s.hard_rows is not None:  # a missing one is the row's positive, masked by hard_valid
                hard_valid = torch.from_numpy(s.hard_rows >= 0)
                hard = np.where(s.hard_rows >= 0, s.hard_rows, s.pos_rows[:, None])
                cands = np.concatenate([cands, hard.ravel()])
            n_neg = len(s.neg_rows)
            if task.frozen:
                legacy[name] = torch.from_numpy(self.catalogues[task.candidate].legacy[cands])
                source, start = "legacy", 0
            elif task.candidate == "query":
                queries.append(cands)
                source, start, q_cand = "query", q_cand, q_cand + len(cands)
            else:
                entities.append((task.candidate, cands))
                overrides.append(self._override(s, len(cands)))
                source, start, e0 = "entity", e0, e0 + len(cands)
            layout[name] = TaskRows(source, slice(q0, q0 + b), slice(start, start + b),
                                    slice(start + b, start + b + n_neg), torch.from_numpy(s.query_rows),
                                    torch.from_numpy(s.pos_rows), torch.from_numpy(s.neg_rows),
                                    slice(start + b + n_neg, start + len(cands)) if hard_valid is not None else None,
                                    hard_valid)
            q0 += b
        return StepBatch(
            query_inputs=self.query_inputs(np.concatenate(queries), tokenize),
            entity_inputs=self.entity_inputs(entities, overrides) if entities else None,
            legacy=legacy,
            tasks=layout,
        )

    def query_inputs(self, rows: np.ndarray,
                     tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
        """The features' token ids of the queries at ``rows`` (the n-gram tower and the lexical
        channel read them), plus a transformer tower's own tokens when ``tokenize`` is given."""
        queries = self.catalogues["query"]
        ids, offsets = queries.bags.gather(rows)
        out = {"ids": torch.from_numpy(ids), "offsets": torch.from_numpy(offsets)}
        if self.query_pooled is not None:
            out["pooled"] = self.query_pooled[torch.from_numpy(rows)]
        elif tokenize is not None:
            out |= tokenize(queries.keys.gather(rows).to_list())
        return out

    def entity_inputs(self, parts: Sequence[tuple[str, np.ndarray]],
                      overrides: Sequence[np.ndarray | None] | None = None) -> dict[str, torch.Tensor]:
        """The entity tower's inputs, plus each row's kind (an :data:`ENTITY_KINDS` index) for
        presence dropout; ``overrides``: per part, bags to read instead (:meth:`TokenBags.gather`)."""
        kinds = np.concatenate([np.full(len(rows), ENTITY_KINDS.index(kind), np.int64) for kind, rows in parts])
        return entity_inputs(self.catalogues, self.dense_layout, parts, overrides) | {"kinds": torch.from_numpy(kinds)}

    def _override(self, sample: TaskSample, rows: int) -> np.ndarray | None:
        """The bag override of one task's ``rows`` candidate rows: each reads its engaged queries as
        ``sample.cand_bags`` says; None when every row reads its own."""
        if self.as_of_field is None or sample.cand_bags is None or not (sample.cand_bags >= 0).any():
            return None
        override = np.full((rows, len(self.fields)), -1, dtype=np.int64)
        override[:, self.as_of_field] = sample.cand_bags
        return override


@dataclass
class TaskRows:
    """Where one task's embeddings sit in a step's tower outputs, and their catalogue ids."""

    source: str  # "entity", "query" (query tower) or "legacy" (StepBatch.legacy[task])
    query: slice  # rows of the query-tower output
    pos: slice  # rows of the source
    neg: slice
    query_ids: torch.Tensor
    pos_ids: torch.Tensor
    neg_ids: torch.Tensor
    hard: slice | None = None  # [pairs * k] rows of mined hard negatives, k per pair
    hard_valid: torch.Tensor | None = None  # bool [pairs, k]: False where a pair had fewer


@dataclass
class StepBatch:
    """One step's tower inputs and, per task, where its pairs and negatives are."""

    query_inputs: dict[str, torch.Tensor]
    entity_inputs: dict[str, torch.Tensor] | None
    legacy: dict[str, torch.Tensor]
    tasks: dict[str, TaskRows]

    @property
    def pairs(self) -> int:
        return sum(r.query.stop - r.query.start for r in self.tasks.values())

    def to(self, device: torch.device) -> StepBatch:
        def move(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}

        tasks = {k: TaskRows(r.source, r.query, r.pos, r.neg, r.query_ids.to(device), r.pos_ids.to(device),
                             r.neg_ids.to(device), r.hard,
                             None if r.hard_valid is None else r.hard_valid.to(device))
                 for k, r in self.tasks.items()}
        return StepBatch(move(self.query_inputs), move(self.entity_inputs) if self.entity_inputs else None,
                         move(self.legacy), tasks)


def _epoch_positions(n: int, batch: int, slot: int, seed: tuple[int, int]) -> np.ndarray:
    """Pair indices of batch number ``slot``: the pairs are walked in a fresh permutation per epoch."""
    pos = slot * batch + np.arange(batch)
    epoch, within = np.divmod(pos, n)
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epoch):  # one or two epochs per batch (more only when batch > pairs)
        mask = epoch == e
        out[mask] = _permutation(n, (*seed, int(e)))[within[mask]]
    return out


@functools.lru_cache(maxsize=32)
def _permutation(n: int, seed: tuple[int, ...]) -> np.ndarray:
    # Cached: consecutive steps (and a resume's sketch replay) walk the same epoch's permutation.
    return np.random.default_rng(seed).permutation(n)


# ---------------------------------------------------------------------------- loading
def load_training_data(ws: Workspace, cfg: TrainConfig, featurizer: Featurizer) -> TrainingData:
    """Catalogues and per-task pairs for ``cfg.tasks``; raises OmniError for a named task without data."""
    split = TimeSplit.for_workspace(ws)
    fields = tuple(cfg.model.entity_fields)
    images = visual_model(ws) if cfg.model.use_visual else None
    entities = {k: c for k in ENTITY_KINDS
                if (c := load_entity_catalogue(ws, k, fields, images is not None)) is not None}
    for cat in entities.values():
        if cat.bags.max_id >= featurizer.num_ids:
            raise OmniError(f"{ws.path(ENTITY_TABLES[cat.kind][0])}: token id {cat.bags.max_id} >= num_ids "
                            f"{featurizer.num_ids} of features/manifest.json; rebuild with `omni features build`")

    actions = {"pin": cfg.pin_actions, "product": cfg.product_actions, "query": cfg.query_actions}
    caps = {"pin": cfg.max_pairs_per_pin, "product": cfg.max_pairs_per_product, "query": cfg.max_pairs_per_query}
    raw_pairs = {kind: engagement_pairs(ws, split, kind, actions[kind], caps[kind])
                 for kind in ("pin", "product", "query") if kind == "query" or kind in entities}
    _report_unknown_actions(ws, split, actions)
    # The query catalogue: every query of a training pair, and every related query.
    texts = pl.concat([p.get_column("query") for p in raw_pairs.values()]
                      + ([raw_pairs["query"].get_column("entity_id")] if "query" in raw_pairs else []))
    queries = query_catalogue(texts.unique(maintain_order=False).sort(), featurizer)
    catalogues = {**entities, "query": queries}
    existed = {kind: existed_before(ws, kind, cat.keys, split.cutoff) for kind, cat in entities.items()}
    for kind, mask in existed.items():
        if mask.all():
            continue
        log.info("%d of %d %ss were created after the cutoff: never training negatives", int((~mask).sum()),
                 len(mask), kind)
        late = entities[kind].keys.filter(pl.Series(~mask))
        engaged = raw_pairs[kind].filter(pl.col("entity_id").is_in(late.implode()))["entity_id"].unique().sort()
        if len(engaged):  # data quality: kept as positives, but the column is probably not a creation time
            log.warning("%s: column created_at: %d %ss created after the cutoff have training-window engagements "
                        "(e.g. %s); they stay training positives: is created_at an update time?",
                        ws.path(ENTITY_TABLES[kind][1]), len(engaged), kind, ", ".join(engaged.head(3).to_list()))

    wanted = TASKS if "all" in cfg.tasks else tuple(dict.fromkeys(cfg.tasks))
    tasks: dict[str, TaskPairs] = {}
    reasons: dict[str, str] = {}
    for name in wanted:
        kind, frozen = TASKS[name].entity_type, TASKS[name].frozen
        task, reason = _build_task(name, kind, frozen, raw_pairs.get(kind), catalogues, existed.get(kind), cfg)
        if task is None:
            reasons[name] = reason
        else:
            tasks[name] = task
    if "all" not in cfg.tasks and reasons:
        name, reason = next(iter(reasons.items()))
        raise OmniError(f"task {name} has no training data: {reason}")
    if not tasks:
        raise OmniError("no task has training data: " + "; ".join(f"{t}: {r}" for t, r in reasons.items()))
    for name, reason in reasons.items():
        log.info("task %s skipped: %s", name, reason)

    shares = {t: cfg.task_shares.get(t, 1.0) for t in tasks}
    total = sum(shares.values())
    for name, task in tasks.items():
        task.batch_size = max(1, round(cfg.batch_size * shares[name] / total))

    layout: dict[str, tuple[int, int]] = {}
    if cfg.model.use_legacy:
        offset = 0
        for kind, cat in entities.items():
            if cat.legacy is not None:
                layout[kind] = (offset, cat.legacy_dim)
                offset += cat.legacy_dim + 1
    offset = sum(dim + 1 for _, dim in layout.values())
    visual_dims = {cat.visual_dim for cat in entities.values() if cat.visual is not None}
    if visual_dims:  # one slot for pins and products: one image model embedded both
        layout[VISUAL] = (offset, visual_dims.pop())
    elif cfg.model.use_visual:
        log.info("no visual embeddings for these entities (run `omni enrich visual`): the entity tower has "
                 "no visual slot")
    if not fields and not layout:
        raise OmniError("entity_fields is empty and there is no legacy or visual embedding to read (off, or "
                        "not in the workspace): the entity tower would read nothing")
    as_of, snapshots = positive_queries(ws, featurizer, catalogues,
                                        [t for t in tasks.values() if not t.frozen and t.candidate in entities],
                                        fields, cfg.engaged_queries_as_of, cfg.engaged_queries_snapshots)
    return TrainingData(catalogues, tasks, featurizer.num_ids, fields, layout, cfg.seed, cfg.loss.num_negatives,
                        visual_model=images if VISUAL in layout else None, as_of_field=as_of, snapshots=snapshots)


def _build_task(name: str, kind: str, frozen: bool, pairs: pl.DataFrame | None,
                catalogues: dict[str, Catalogue], existed: np.ndarray | None,
                cfg: TrainConfig) -> tuple[TaskPairs | None, str]:
    """A task from its engagement pairs, or (None, why not); ``existed`` (bool per candidate row, None
    for queries) keeps entities created after the cutoff out of the negative pool."""
    actions = {"pin": cfg.pin_actions, "product": cfg.product_actions, "query": cfg.query_actions}[kind]
    cand = catalogues.get(kind)
    if cand is None:
        return None, f"the workspace has no features/{kind}s.parquet"
    if pairs is None or pairs.height == 0:
        return None, (f"engagements.parquet has no entity_type={kind!r} rows with action in "
                      f"{list(actions)} in the training window")
    keyed = (pairs.join(_row_index(catalogues["query"].keys, "query"), on="query", how="inner")
             .join(_row_index(cand.keys, "entity_id"), on="entity_id", how="inner", suffix="_cand")
             .sort("row_cand", "row"))
    dropped = pairs.height - keyed.height
    if dropped:
        log.info("task %s: %d pairs dropped (entity not in the features tables)", name, dropped)
    query_rows = keyed.get_column("row").to_numpy().astype(np.int64)
    cand_rows = keyed.get_column("row_cand").to_numpy().astype(np.int64)
    pool = np.arange(len(cand), dtype=np.int64) if existed is None else np.flatnonzero(existed).astype(np.int64)
    if frozen:
        if cand.legacy is None:
            return None, f"raw/{kind}s.parquet has no legacy_embedding values"
        if cand.legacy_dim > cfg.model.dim:
            return None, f"legacy embeddings have {cand.legacy_dim} dims, more than the model's {cfg.model.dim}"
        keep = cand.has_legacy[cand_rows]
        query_rows, cand_rows = query_rows[keep], cand_rows[keep]
        pool = pool[cand.has_legacy[pool]]
    if len(query_rows) == 0:
        return None, f"no engaged {kind} is in the features tables" + (" with a legacy embedding" if frozen else "")
    if len(pool) == 0:
        with_legacy = " with a legacy embedding" if frozen else ""
        return None, f"every {kind}{with_legacy} was created after the cutoff (raw/{kind}s.parquet created_at)"
    return TaskPairs(name, kind, frozen, query_rows, cand_rows, pool), ""


def _row_index(keys: pl.Series, name: str) -> pl.DataFrame:
    return pl.DataFrame({name: keys, "row": np.arange(len(keys), dtype=np.int64)})
