"""``omni eval``: the paper's Recall@K protocol on a run's export, beside baselines.

Held-out pairs are the distinct (query, engaged entity, action) of the *test window* of
the workspace's time split (``TimeSplit.for_workspace``); training, vocabularies and
engaged-query features only saw events before the cutoff. Evaluation sets are
task × action (query→pin save, query→product click, ...), each capped at
``max_pairs_per_set`` pairs, and broken down by language.

Each pair is ranked under two protocols (see :mod:`~omnisearchsage.evaluation.scoring`):
(a) against N random entities of its type (the paper: 1.5M, capped here at the
catalogue) plus itself, and (b) against the full catalogue without the query's other
test-window positives. Tasks:

=============== ==================================================================
query-pin       query embedding vs pin embeddings of the export
query-product   query embedding vs product embeddings
query-query     query embedding vs embeddings of related queries (the export's
                query index, plus test-window related queries it lacks, encoded)
compat-pin      the query's compat vector (the compat head's output; the main embedding
                for a model without one), first ``legacy_dim`` dims, vs the frozen legacy
                pin embeddings of ``raw/pins.parquet`` (pins that have one)
compat-product  the same against legacy product embeddings
=============== ==================================================================

Baselines (BM25, random) are ranked on the same pairs and candidates. On a workspace
imported with ``omni import relevance``, the graded-relevance metrics of that data set
are added (:mod:`~omnisearchsage.evaluation.relevance`) by the evaluators that
:mod:`~omnisearchsage.evaluation.run` passes to :func:`evaluate`; it writes ``runs/NAME/eval/results.json``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import polars as pl

from omnisearchsage.contract import (
    ENGAGEMENTS,
    PINS,
    PRODUCTS,
    TASKS,
    TRUTH_PINS,
    TRUTH_QUERIES,
    ExportLayout,
    Workspace,
)
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.baselines import BaselineScorers
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.metrics import rank_metric_exprs
from omnisearchsage.evaluation.paper import PAPER_SETS, TABLE2, TABLE6
from omnisearchsage.evaluation.scoring import EmbeddingScorer, Scorer, l2_normalize, rank_pairs
from omnisearchsage.features.text import normalize
from omnisearchsage.model.io import load_embeddings, load_query_encoder
from omnisearchsage.progress import progress_bar
from omnisearchsage.split import TimeSplit
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)

MODEL = "model"

#: Distinct test-window pairs; a pair engaged in several languages keeps the smallest code
#: so every pair has exactly one language.
HELDOUT_SQL = """
SELECT query, entity_type, entity_id, action, min(lang) AS lang
FROM read_parquet($path)
WHERE ts >= $start AND ts < $end
GROUP BY query, entity_type, entity_id, action
"""


@dataclass
class EmbeddingModel:
    """What evaluation needs of a trained model: a query encoder and entity embeddings.

    ``entities`` maps an entity type to ``(ids, embeddings)`` with ids sorted ascending
    (the catalogue order ties are broken by). ``encode_compat`` gives the query vectors the compat
    tasks trained (``None``: ``encode_queries``' own, the arrangement before the compat head);
    ``legacy_dims`` maps pin / product to the prefix of that vector that scores against that type's
    legacy embeddings; ``tasks`` are the tasks the model was trained on (``None``: unknown, assume
    all), so a compatibility prefix is only evaluated where it was trained.
    """

    version: str
    encode_queries: Callable[[Sequence[str]], np.ndarray]
    entities: dict[str, tuple[np.ndarray, np.ndarray]]
    legacy_dims: dict[str, int] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    encode_compat: Callable[[Sequence[str]], np.ndarray] | None = None

    def compat_dim(self, entity_type: str) -> int | None:
        """Query prefix scored against ``entity_type``'s legacy embeddings, if that compat task was trained."""
        if self.tasks is not None and f"compat-{entity_type}" not in self.tasks:
            return None
        return self.legacy_dims.get(entity_type)

    @classmethod
    def from_export(cls, export_dir: Path) -> EmbeddingModel:
        """Load an export written by ``omni export`` (``runs/NAME/export``)."""
        manifest = ExportLayout(export_dir).read_manifest()
        encoder = load_query_encoder(export_dir)
        entities = {}
        for entity_type in manifest.get("entity_types", []):
            ids, emb = load_embeddings(export_dir, entity_type)
            entities[entity_type] = sort_by_id(np.asarray(ids, dtype=object), emb)
        legacy_dims = manifest.get("legacy_dims") or {
            k: manifest["legacy_dim"] for k in ("pin", "product") if manifest.get("legacy_dim")}
        tasks = manifest.get("tasks")
        return cls(str(manifest.get("model_version", encoder.version)), encoder.encode, entities,
                   {k: int(v) for k, v in legacy_dims.items() if v}, None if tasks is None else tuple(tasks),
                   encoder.encode_compat)


def _cached(cache: dict[str, np.ndarray], encode: Callable[[Sequence[str]], np.ndarray],
            texts: Sequence[str]) -> np.ndarray:
    """``encode(texts)`` stacked, each distinct text encoded once over the cache's lifetime."""
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        cache.update(zip(missing, np.asarray(encode(missing), dtype=np.float32)))
    return np.stack([cache[t] for t in texts]) if texts else np.empty((0, 0), np.float32)


def sort_by_id(ids: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids ascending with their embedding rows (the tie-break order of every ranking)."""
    order = np.argsort(ids.astype(str), kind="stable")
    return ids[order], np.asarray(emb, dtype=np.float32)[order]


def load_heldout(ws: Workspace, split: TimeSplit) -> pl.DataFrame:
    """Distinct (query, entity_type, entity_id, action, lang) of the test window.

    Queries (and related queries, the entity ids of query→query pairs) are normalised,
    so two spellings that the encoder cannot tell apart are one query.
    """
    with duckdb.connect() as con:
        frame = con.sql(
            HELDOUT_SQL, params={"path": str(ws.path(ENGAGEMENTS)), "start": split.test_start, "end": split.test_end}
        ).pl()
    if frame.is_empty():
        return frame
    texts = pl.concat([frame["query"], frame.filter(pl.col("entity_type") == "query")["entity_id"]]).unique()
    mapping = pl.DataFrame({"raw": texts, "norm": [normalize(t) for t in texts]})
    frame = (
        frame.join(mapping, left_on="query", right_on="raw", how="left")
        .with_columns(query=pl.col("norm"))
        .drop("norm")
        .join(mapping, left_on="entity_id", right_on="raw", how="left")
        .with_columns(
            entity_id=pl.when(pl.col("entity_type") == "query").then(pl.col("norm")).otherwise(pl.col("entity_id"))
        )
        .drop("norm")
        .filter(pl.col("query") != "")
    )
    return frame.group_by("query", "entity_type", "entity_id", "action").agg(pl.col("lang").min()).sort(
        "query", "entity_type", "entity_id", "action"
    )


#: Action name of the ground-truth relevance set (the paper's human-judged "relevance" column).
RELEVANCE_ACTION = "relevance"


def relevance_pairs(ws: Workspace, heldout: pl.DataFrame) -> pl.DataFrame:
    """Held-out query→pin pairs a rater would judge relevant, as extra rows with action ``relevance``.

    The paper's relevance sets are human-labelled (query, pin) pairs. The synthetic world
    knows each query's and pin's topic and concept (``truth/``, never read by training), so
    a test-window pair whose pin has the query's topic and concept stands in for a pair
    raters judged relevant; engagements with off-topic pins (the world's noise) are left
    out. Empty when the workspace has no ground truth (real data).
    """
    if not (ws.has(TRUTH_QUERIES) and ws.has(TRUTH_PINS)) or heldout.is_empty():
        return heldout.clear()
    queries = pl.read_parquet(ws.path(TRUTH_QUERIES), columns=["query", "topic", "concept"])
    queries = queries.with_columns(query=pl.Series([normalize(q) for q in queries["query"]])).unique("query")
    pins = pl.read_parquet(ws.path(TRUTH_PINS), columns=["pin_id", "topic", "concept"])
    pairs = heldout.filter(pl.col("entity_type") == "pin").group_by("query", "entity_type", "entity_id").agg(
        pl.col("lang").min())
    return (
        pairs.join(queries, on="query", how="inner")
        .join(pins, left_on=["entity_id", "topic", "concept"], right_on=["pin_id", "topic", "concept"], how="inner")
        .select("query", "entity_type", "entity_id", pl.lit(RELEVANCE_ACTION).alias("action"), "lang")
    )


def sample_per_set(frame: pl.DataFrame, max_pairs: int, seed: int) -> pl.DataFrame:
    """At most ``max_pairs`` rows per action, drawn with ``seed`` (the paper: 80k pairs per set)."""
    rank = pl.int_range(pl.len()).shuffle(seed=seed).over("action")
    return frame.filter(rank < max_pairs)


def legacy_candidates(ws: Workspace, entity_type: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Ids (ascending) and L2-normalised legacy embeddings of the entities that have one."""
    schema, id_col = (PINS, "pin_id") if entity_type == "pin" else (PRODUCTS, "product_id")
    if not ws.has(schema):
        return None
    frame = (
        read_table(ws, schema)
        .select(id_col, "legacy_embedding")
        .filter(pl.col("legacy_embedding").is_not_null() & (pl.col("legacy_embedding").list.len() > 0))
        .sort(id_col)
        .collect()
    )
    if frame.is_empty():
        return None
    return frame[id_col].to_numpy().astype(object), l2_normalize(np.vstack(frame["legacy_embedding"].to_list()))


@dataclass
class TaskData:
    """One task's candidates and pairs, with row/column numbers into the scorers."""

    task: str
    entity_type: str
    ids: np.ndarray  # candidate ids, ascending
    queries: list[str]  # distinct test queries of the sampled pairs (scorer rows)
    pairs: pl.DataFrame  # query, entity_id, action, lang, qrow, col
    filter_qrow: np.ndarray  # the queries' positives (all actions), left out in protocol (b)
    filter_col: np.ndarray
    index_cols: np.ndarray | None  # the random index of protocol (a); None = every candidate
    dropped: int  # test pairs whose entity is not among the candidates


def task_data(task: str, heldout: pl.DataFrame, ids: np.ndarray, cfg: EvalConfig, seed: int) -> TaskData:
    """Pairs of ``task`` joined to candidate columns, sampled, with filter set and random index."""
    entity_type = TASKS[task].entity_type
    cand = pl.DataFrame({"entity_id": ids.astype(str), "col": np.arange(len(ids), dtype=np.int64)})
    mine = heldout.filter(pl.col("entity_type") == entity_type)
    known = mine.join(cand, on="entity_id", how="inner")
    pairs = sample_per_set(known, cfg.max_pairs_per_set, seed)
    queries = pairs["query"].unique().sort()
    qmap = pl.DataFrame({"query": queries, "qrow": np.arange(len(queries), dtype=np.int64)})
    pairs = pairs.join(qmap, on="query", how="inner")
    positives = known.join(qmap, on="query", how="inner").select("qrow", "col").unique()
    n_index = min(cfg.index_size, len(ids))
    rng = np.random.default_rng([cfg.seed, seed])
    index_cols = None if n_index >= len(ids) else np.sort(rng.choice(len(ids), n_index, replace=False))
    return TaskData(
        task, entity_type, ids, queries.to_list(), pairs.select("query", "entity_id", "action", "lang", "qrow", "col"),
        positives["qrow"].to_numpy(), positives["col"].to_numpy(), index_cols, len(mine) - len(known),
    )


def rank_task(data: TaskData, scorer: Scorer, cfg: EvalConfig) -> pl.DataFrame:
    """The task's pairs with ``rank_random`` and ``rank_full``; each distinct pair is ranked once."""
    distinct = data.pairs.select("qrow", "col").unique().sort("qrow", "col")
    r_a, r_b = rank_pairs(
        scorer, distinct["qrow"].to_numpy(), distinct["col"].to_numpy(), data.filter_qrow, data.filter_col,
        data.index_cols, cfg.chunk_size, cfg.max_block_scores,
    )
    ranked = distinct.with_columns(rank_random=pl.Series(r_a), rank_full=pl.Series(r_b))
    return data.pairs.join(ranked, on=["qrow", "col"], how="left")


def summarise(ranked: pl.DataFrame, cfg: EvalConfig) -> list[dict[str, Any]]:
    """Metric rows per action and per (action, language), plus ``all`` actions when several.

    A language gets a row when it is in ``cfg.languages``, or, when that is empty, when it
    has at least ``cfg.min_lang_pairs`` pairs.
    """
    aggs = [
        pl.len().alias("pairs"),
        pl.col("query").n_unique().alias("queries"),
        *rank_metric_exprs("rank_random", cfg.ks, "random/"),
        *rank_metric_exprs("rank_full", cfg.ks, "full/"),
    ]
    parts = [ranked.group_by("action").agg(aggs).with_columns(lang=pl.lit("all"))]
    by_lang = ranked.filter(pl.col("lang").is_not_null()).group_by("action", "lang").agg(aggs)
    if cfg.languages:
        by_lang = by_lang.filter(pl.col("lang").is_in(list(cfg.languages)))
    else:
        by_lang = by_lang.filter(pl.col("pairs") >= cfg.min_lang_pairs)
    parts.append(by_lang)
    if ranked["action"].n_unique() > 1:
        distinct = ranked.unique(["qrow", "col"], keep="first").with_columns(action=pl.lit("all"))
        parts.append(distinct.group_by("action").agg(aggs).with_columns(lang=pl.lit("all")))
    table = pl.concat([p.select(parts[0].columns) for p in parts]).sort("action", "lang")
    rows = []
    for rec in table.to_dicts():
        row = {k: rec[k] for k in ("action", "lang", "pairs", "queries")}
        for proto in ("random", "full"):
            row[proto] = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith(f"{proto}/")}
        rows.append(row)
    return rows


def recall_curve(ranked: pl.DataFrame, ks: Sequence[int]) -> dict[str, list[float]]:
    """Recall@K over ``ks`` of the distinct pairs (random-index protocol), for the report's curves."""
    ranks = ranked.unique(["qrow", "col"])["rank_random"].to_numpy()
    return {"k": list(ks), "recall": [float(np.mean(ranks <= k)) for k in ks]}


class Evaluation:
    """Runs every task × system of one workspace and model; :meth:`run` returns the results dict."""

    def __init__(self, ws: Workspace, model: EmbeddingModel, cfg: EvalConfig) -> None:
        self.ws, self.model, self.cfg = ws, model, cfg
        validate_workspace(ws)  # the raw tables evaluation reads: one line per problem, not a reader's exception
        self.split = TimeSplit.for_workspace(ws)
        heldout = load_heldout(ws, self.split)
        self.heldout = pl.concat([heldout, relevance_pairs(ws, heldout)])
        self._query_emb: dict[str, np.ndarray] = {}
        self._compat_emb: dict[str, np.ndarray] = {}
        self.ranked: dict[tuple[str, str], pl.DataFrame] = {}  # (system, task) -> ranked pairs
        self.tasks: dict[str, TaskData] = {}
        self.candidate_emb: dict[str, np.ndarray] = {}  # task -> the model's candidate embeddings

    def query_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Query-encoder output for ``texts``, encoded once per distinct text."""
        return _cached(self._query_emb, self.model.encode_queries, texts)

    def compat_embeddings(self, texts: Sequence[str], entity_type: str) -> np.ndarray:
        """L2-normalised query vectors for ``entity_type``'s legacy index: the first ``compat_dim`` dims of
        the model's compat vectors (its main embedding when it has no compat output)."""
        if self.model.encode_compat is None:
            q = self.query_embeddings(texts)
        else:
            q = _cached(self._compat_emb, self.model.encode_compat, texts)
        return l2_normalize(q[:, : self.model.compat_dim(entity_type)])

    def candidates(self, task: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidate ids (ascending) and the model's embeddings for them; ``None``: task not evaluable."""
        entity_type = TASKS[task].entity_type
        if task.startswith("compat-"):
            return legacy_candidates(self.ws, entity_type) if self.model.compat_dim(entity_type) else None
        if entity_type != "query":
            return self.model.entities.get(entity_type)
        # Related queries: the export's query index plus test-window targets it lacks.
        ids, emb = self.model.entities.get("query", (np.empty(0, dtype=object), None))
        targets = self.heldout.filter(pl.col("entity_type") == "query")["entity_id"].unique().sort().to_list()
        extra = sorted(set(targets) - set(ids.tolist()))
        if not extra and not len(ids):
            return None
        embs = ([emb] if len(ids) else []) + ([self.query_embeddings(extra)] if extra else [])
        return sort_by_id(np.concatenate([ids, np.asarray(extra, dtype=object)]), np.vstack(embs))

    def model_scorer(self, data: TaskData, cand_emb: np.ndarray) -> EmbeddingScorer:
        if data.task.startswith("compat-"):
            return EmbeddingScorer(self.compat_embeddings(data.queries, data.entity_type), cand_emb)
        return EmbeddingScorer(self.query_embeddings(data.queries), cand_emb)

    def run(self) -> dict[str, Any]:
        """Rank every task's pairs for the model and each baseline; the results dict (see module doc)."""
        cfg = self.cfg
        rows: list[dict[str, Any]] = []
        curves: dict[str, dict[str, Any]] = {}
        sets: dict[str, Any] = {}
        work = []
        for i, task in enumerate(TASKS):
            cand = self.candidates(task)
            if cand is None or self.heldout.is_empty():
                continue
            data = task_data(task, self.heldout, cand[0], cfg, i)
            if data.pairs.is_empty():
                continue
            self.tasks[task] = data
            self.candidate_emb[task] = cand[1]
            sets[task] = {"candidates": len(data.ids), "index_size": len(data.ids) if data.index_cols is None
                          else len(data.index_cols), "pairs": len(data.pairs), "queries": len(data.queries),
                          "dropped_unknown_entity": data.dropped}
            work.append((task, MODEL))
            if not task.startswith("compat-"):
                work.extend((task, b) for b in cfg.baselines)
        baselines = {task: BaselineScorers(self.ws, data.entity_type, data.queries, data.ids, cfg.seed)
                     for task, data in self.tasks.items()}
        # BM25 variants over the same text share a scorer: rank it once (the scorer is kept with its
        # ranking, so its id cannot be reused by a later object while the loop runs).
        ranked_by_scorer: dict[int, tuple[Any, Any]] = {}
        with progress_bar(len(work), "eval", "set") as bar:
            for task, system in work:
                data = self.tasks[task]
                t0 = time.perf_counter()
                scorer = (self.model_scorer(data, self.candidate_emb[task]) if system == MODEL else
                          baselines[task].get(system))
                if scorer is not None:
                    if id(scorer) not in ranked_by_scorer:
                        ranked_by_scorer[id(scorer)] = (scorer, rank_task(data, scorer, cfg))
                    ranked = ranked_by_scorer[id(scorer)][1]
                    self.ranked[(system, task)] = ranked
                    rows.extend({"system": system, "task": task, **r} for r in summarise(ranked, cfg))
                    curves.setdefault(system, {})[task] = recall_curve(ranked, cfg.curve_ks)
                    log.info("%s %s: %d pairs in %.1fs", system, task, len(data.pairs), time.perf_counter() - t0)
                bar.advance(1, status=f"{system} {task}")
        results: dict[str, Any] = {
            "model_version": self.model.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "split": self.split.to_json(),
            "config": asdict(cfg),
            "heldout_pairs": len(self.heldout),
            "sets": sets,
            "rows": rows,
            "headline": headline(rows, cfg),
            "curves": curves,
        }
        return results


def metric(rows: list[dict[str, Any]], system: str, task: str, action: str, protocol: str, name: str,
           lang: str = "all") -> float | None:
    """One figure from result rows, ``None`` where that row does not exist."""
    for r in rows:
        if (r["system"], r["task"], r["action"], r["lang"]) == (system, task, action, lang):
            return r[protocol].get(name)
    return None


def headline(rows: list[dict[str, Any]], cfg: EvalConfig) -> list[dict[str, Any]]:
    """Recall@10 per evaluation set of the model beside BM25 and the paper.

    Query tasks stand beside Table 2 (SearchSage → OmniSearchSage); compatibility tasks
    beside Table 6 (SearchSage trained alone → compatibility towers trained jointly), both
    against the legacy index.
    """
    k = "recall@10" if 10 in cfg.ks else f"recall@{max(cfg.ks)}"
    out = []
    for r in rows:
        if r["system"] != MODEL or r["lang"] != "all":
            continue
        paper_set = PAPER_SETS.get((r["task"], r["action"]))
        if r["task"].startswith("compat-"):  # Table 6: (jointly, alone) against the legacy index
            joint, alone = TABLE6.get(paper_set or "", (None, None))
            paper = (alone, joint)
        else:
            paper = TABLE2.get(paper_set or "", (None, None))
        bm25s = (metric(rows, b, r["task"], r["action"], "random", k) for b in ("bm25-text+queries", "bm25-text"))
        bm25 = next((v for v in bm25s if v is not None), None)
        out.append({
            "task": r["task"], "action": r["action"], "pairs": r["pairs"], "metric": k,
            "model_random": r["random"][k], "model_full": r["full"][k], "bm25_random": bm25,
            "paper_set": paper_set, "paper_searchsage": paper[0], "paper_omnisearchsage": paper[1],
        })
    return out


class Evaluator(Protocol):
    """An add-on measurement run after the core protocol on the same :class:`Evaluation` (ANN recall,
    relevance metrics, top-k lists, ablations). Returns its part of the results, or None when it
    does not apply to this workspace; it lands in ``results[name]``."""

    name: str

    def __call__(self, ev: Evaluation) -> Any: ...


def evaluate(ws: Workspace, model: EmbeddingModel, cfg: EvalConfig,
             evaluators: Sequence[Evaluator] = ()) -> tuple[dict[str, Any], Evaluation]:
    """All metrics of ``model`` on ``ws`` (no files written); also the :class:`Evaluation` state."""
    ev = Evaluation(ws, model, cfg)
    if ev.heldout.is_empty():
        raise OmniError(f"{ws.path(ENGAGEMENTS)}: no engagements in the test window "
                        f"[{ev.split.test_start}, {ev.split.test_end}); nothing to evaluate")
    results = ev.run()
    for evaluator in evaluators:
        part = evaluator(ev)
        if part is not None:
            results[evaluator.name] = part
    return results, ev
