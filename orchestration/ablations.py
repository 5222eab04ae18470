"""``omni eval --ablations``: the paper's Tables 3-6 re-run on the workspace.

Each table compares model variants that differ in one thing: entity text fields and the
visual embedding (Tables 3 and 4), training tasks (Tables 5 and 6). Every variant is trained from the
run's own config with one budget (:class:`AblationConfig`;
by default the run's own, and the run itself is the unified reference; with a shorter
budget the unified reference is retrained with it too), exported and evaluated on the
same held-out pairs with the paper's protocol (Recall@10 against the random index), so
differences come from the ablated thing and not from training length.

=========  =========================================================================
Table 3    pins with no title and no description: without captions → with captions
           → with captions + visual embeddings
Table 4    continuous features only → + title, description, captions → + board
           titles → + engaged queries → + visual embeddings
Table 5    one single-task model per task (with the run's whole batch) vs the unified model
Table 6    compatibility (the query's compat output vs frozen legacy embeddings): trained
           jointly with the unified model vs a query encoder trained only on the compat tasks
           (the whole batch, split between pins and products as the joint run scores them)
=========  =========================================================================

With ``created_at`` on the pins, each Table 4 step is also taken on new pins (created after the
training cutoff) and on settled ones (:func:`table4_by_age`): engaged queries exist only for the
settled, so a step can lift one group and cost the other, and the whole-set figure is their mix.

Variant runs are ``runs/<run>--abl-<variant>`` (``...--seed<k>`` for the k-th extra training seed
with ``AblationConfig.seeds``; every figure is then the mean over the seeds, and the unified
reference's extra seeds are trained too); an existing export is reused unless
``AblationConfig.retrain``. ``AblationConfig.jobs`` trains that many variants at once. The paper's
"relevance" column (human-judged pairs) is our ``relevance`` set, the ground-truth-relevant test pairs (see ``evaluate.relevance_pairs``);
on data without ground truth it stays empty.

Where "+ visual" sits. The paper's entity tower reads its visual embedding in every row of
Table 4 (it is one of the "continuous features"), so none of its rows is a without-visual
model and no placement of ours reproduces a paper row exactly. We add it last: rows one to four
stay the same without-visual models as before (comparable with earlier measurements), and the
last step measures what the visual stage adds on top of every text feature, which is what a
user deciding whether to run ``omni enrich visual`` wants to know; Table 3 measures it where
text is scarcest (pins without title or description). Every variant but "+ visual" (and the
Table 5-6 variants, which follow the run) trains without the visual embedding. When the run
has no visual slot (no ``enrich/visual_embeddings.parquet``, or ``--no-visual``) the "+ visual"
cells stay empty and no extra variant is trained.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing import get_context
from typing import Any

import polars as pl

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import PINS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import MODEL, EmbeddingModel, Evaluation, evaluate
from omnisearchsage.evaluation.metrics import paired_bootstrap_diff
from omnisearchsage.evaluation.paper import PAPER_SETS, TABLE3, TABLE4, TABLE5, TABLE6
from omnisearchsage.evaluation.report import fmt
from omnisearchsage.model.inputs import VISUAL
from omnisearchsage.orchestration.config import AblationConfig
from omnisearchsage.trainer.config import TrainConfig, scored_shares
from omnisearchsage.trainer.data import existed_before, steps_for_epochs
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.loop import read_run_config, train
from omnisearchsage.validate import read_table

log = logging.getLogger(__name__)

#: Entity text fields by Table 4 stage (products' brand counts as their title-like text).
TEXT_FIELDS = ("title", "description", "brand", "caption")
BOARD_FIELDS = ("board_titles",)
QUERY_FIELDS = ("engaged_queries",)
#: The Recall@K the paper's tables report.
K = 10
METRIC = f"recall@{K}"



@dataclass(frozen=True)
class Variant:
    """A model variant: ``None`` keeps the run's own value; ``drop_fields`` removes fields from it;
    ``visual`` False turns the visual embedding off; ``scored_split`` splits the batch between the
    variant's tasks by the shares of the pairs the run scored for them (``trainer.config.scored_shares``:
    a compat task's own share plus the retrieval pairs it also scores), not by their own shares alone."""

    name: str
    entity_fields: tuple[str, ...] | None = None
    drop_fields: tuple[str, ...] = ()
    tasks: tuple[str, ...] | None = None
    visual: bool | None = None
    scored_split: bool = False


UNIFIED = Variant("unified")
#: Every feature but the visual embedding: Table 3's "with captions", Table 4's "+ engaged queries".
NO_VISUAL = Variant("no-visual", visual=False)
NO_CAPTIONS = Variant("no-captions", drop_fields=("caption",), visual=False)
TABLE4_VARIANTS = (
    ("continuous features only", Variant("continuous-only", entity_fields=(), visual=False)),
    ("+ title, description, captions", Variant("text", entity_fields=TEXT_FIELDS, visual=False)),
    ("+ board titles", Variant("text+boards", entity_fields=TEXT_FIELDS + BOARD_FIELDS, visual=False)),
    ("+ engaged queries", NO_VISUAL),
    # The last stage reads every field and the visual embedding: the unified reference itself.
    ("+ visual", UNIFIED),
)
#: Table 5: the single-task variant that owns each task's eval sets. Like Table 6's reference it
#: trains with the run's whole batch, as a user who wanted that task alone would: the unified model
#: must match each task trained alone at its best budget, not at the share of the batch the task gets
#: in the unified run (with that share, a single-task model saw a fifth to a third of the pairs per
#: step and fell behind by more than the table's differences; README, *Ablations*).
SINGLE_TASK = {t: Variant(f"only-{t}", tasks=(t,)) for t in ("query-pin", "query-product", "query-query")}
#: Table 6's query encoder trained only against the legacy embeddings keeps the whole batch too (the
#: stronger reference: the joint model must match compat alone at its best budget), split between pins
#: and products as the joint run's compat tasks split what they score. By their own shares alone it
#: would follow whatever the run's mix gives the shared pairs: the default compat-product share, which
#: balances pins and products once query-pin's pairs are added, would leave compat alone a third of its
#: batch for pins (README, *Ablations*, Table 6).
COMPAT_ONLY = Variant("compat-only", tasks=("compat-pin", "compat-product"), scored_split=True)


def variants_for(tables: tuple[int, ...], visual: bool = True) -> list[Variant]:
    """Every variant the requested tables need, each once, the unified reference first (``visual``
    False: the run has no visual slot, so the no-visual variant would be the run itself)."""
    need = [UNIFIED]
    if 3 in tables:
        need += [NO_CAPTIONS, NO_VISUAL]
    if 4 in tables:
        need.extend(v for _, v in TABLE4_VARIANTS)
    if 5 in tables:
        need.extend(SINGLE_TASK.values())
    if 6 in tables:
        need.append(COMPAT_ONLY)
    return [v for v in dict.fromkeys(need) if visual or v is not NO_VISUAL]


def variant_config(base: TrainConfig, variant: Variant, budget_cfg: AblationConfig,
                   run_tasks: tuple[str, ...] = (), seed: int = 0) -> TrainConfig:
    """The run's TrainConfig with the variant's fields/tasks and the ablation budget; ``run_tasks``
    (the tasks the run trained) give a ``scored_split`` variant its shares; ``seed`` (0, 1, ...) is
    added to the run's training seed."""
    budget: dict[str, Any] = {k: v for k, v in (("steps", budget_cfg.steps), ("batch_size", budget_cfg.batch_size))
                              if v is not None}
    if variant.scored_split and variant.tasks and run_tasks:
        scored = scored_shares(base, run_tasks)
        budget["task_shares"] = base.task_shares | {t: scored[t] for t in variant.tasks if t in scored}
    fields = base.model.entity_fields if variant.entity_fields is None else variant.entity_fields
    fields = tuple(f for f in fields if f not in variant.drop_fields)
    use_visual = base.model.use_visual if variant.visual is None else variant.visual
    dropout = base.model.field_dropout
    if dropout is not None:  # the run's decided rates, for the fields the variant still reads
        dropout = tuple((f, p) for f, p in dropout if f in fields)
    model = replace(base.model, entity_fields=fields, use_visual=use_visual, field_dropout=dropout)
    tasks = base.tasks if variant.tasks is None else variant.tasks
    return replace(base, model=model, tasks=tasks, seed=base.seed + seed, **budget)


def base_config(ws: Workspace, run: str) -> TrainConfig:
    """The TrainConfig run ``run`` was trained with (its ``config.json``)."""
    return TrainConfig.from_json(read_run_config(ws.run_dir(run))["config"])


def run_uses_visual(ws: Workspace, run: str) -> bool:
    """Whether run ``run``'s entity tower has a visual slot (its ``config.json`` spec)."""
    return VISUAL in read_run_config(ws.run_dir(run))["spec"]["dense_layout"]


def _as_stored(cfg: TrainConfig) -> Any:
    """``cfg`` as ``config.json`` stores it (lists, not tuples). A stored config goes through
    ``TrainConfig.from_json`` first, so a key added since it was written compares at what that version
    did (the default, or the class's ``LEGACY`` value where the default changed behaviour): an upgrade
    alone does not retrain every variant, and a variant trained the old way is not taken for a new one."""
    return json.loads(json.dumps(cfg.to_json()))


def variant_run(run: str, variant: Variant, seed: int = 0) -> str:
    """Run name of ``variant`` trained with the run's seed + ``seed`` (``runs/<run>--abl-<variant>``,
    then ``...--seed<seed>``)."""
    return f"{run}--abl-{variant.name}" + (f"--seed{seed}" if seed else "")


def _pending(ws: Workspace, run: str, variant: Variant, base: TrainConfig, budget_cfg: AblationConfig,
             seed: int) -> tuple[str, TrainConfig] | None:
    """(run name, config) when the variant must be trained; None when an export trained with the same
    config exists (and ``retrain`` is off)."""
    name = variant_run(run, variant, seed)
    run_tasks = tuple(read_run_config(ws.run_dir(run))["tasks"])
    export, train_cfg = ws.run(name).export, variant_config(base, variant, budget_cfg, run_tasks, seed)
    try:
        same = export.manifest.exists() and _same_training(read_run_config(ws.run_dir(name)), train_cfg)
    except OmniError:  # a config of another version (a key since removed): train afresh
        same = False
    return None if same and not budget_cfg.retrain else (name, train_cfg)


def _same_training(record: dict[str, Any], wanted: TrainConfig) -> bool:
    """Whether the run whose ``config.json`` is ``record`` is what training ``wanted`` gives. The trainer
    stores the steps it ran, and ``max_epochs`` cuts them (and the warmup) when a task cycles through its
    pairs sooner (the single-task and compat-only variants): a stored run that stopped exactly at that
    cut, which its task record gives, is the asked-for training when everything else matches."""
    stored = TrainConfig.from_json(record["config"])
    if wanted.max_epochs is not None and stored.steps < wanted.steps:
        cut = steps_for_epochs([(t["pairs"], t["batch_size"]) for t in record["tasks"].values()], wanted.max_epochs)
        if stored.steps == cut:
            stored = replace(stored, steps=wanted.steps, warmup_steps=wanted.warmup_steps)
    return _as_stored(stored) == _as_stored(wanted)


def _train_and_export(root: str, cfg: TrainConfig, name: str) -> None:
    """Train and export one variant (a module-level function: run in a spawned process)."""
    ws = Workspace(root)
    log.info("ablation: training %s", name)
    train(ws, cfg, name, overwrite=True)
    export_run(ws, name)


def train_variant(ws: Workspace, run: str, variant: Variant, base: TrainConfig,
                  budget_cfg: AblationConfig, seed: int = 0) -> EmbeddingModel:
    """Train and export the variant (with the run's seed + ``seed``) and load it; an export trained
    with the same config is reused."""
    todo = _pending(ws, run, variant, base, budget_cfg, seed)
    if todo is not None:
        _train_and_export(str(ws.root), todo[1], todo[0])
    return EmbeddingModel.from_export(ws.run(variant_run(run, variant, seed)).export.root)


def _worker_logging(level: int) -> None:
    """A spawned process starts without the CLI's logging: log to stderr at the parent's level."""
    logging.basicConfig(level=level, format="%(levelname)s [%(processName)s] %(name)s: %(message)s")


def _train_in_parallel(ws: Workspace, run: str, wanted: list[tuple[Variant, int]], base: TrainConfig,
                       budget_cfg: AblationConfig) -> None:
    """Train the variants that need it, ``budget_cfg.jobs`` at a time in spawned processes. A variant
    the trainer refuses is left untrained here: :func:`train_variant` meets the error again and reports it."""
    if budget_cfg.jobs < 2:
        return
    todo = [t for v, s in wanted if (t := _pending(ws, run, v, base, budget_cfg, s)) is not None]
    if len(todo) < 2:
        return
    with ProcessPoolExecutor(min(budget_cfg.jobs, len(todo)), mp_context=get_context("spawn"),
                             initializer=_worker_logging, initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        futures = {pool.submit(_train_and_export, str(ws.root), cfg, name): name for name, cfg in todo}
        for future in as_completed(futures):
            try:
                future.result()
            except OmniError as e:
                log.warning("ablation %s not trained: %s", futures[future], e)


def _pairs(evs: list[Evaluation] | None, task: str, action: str, ids: set[str] | None = None) -> pl.DataFrame | None:
    """The ranked pairs of one set (optionally on entities ``ids``), sorted, with ``hit``: the share of
    the evaluations (one per training seed) that rank the pair's entity in the top ``K``."""
    if not evs or any((MODEL, task) not in ev.ranked for ev in evs):
        return None
    frames = []
    for ev in evs:
        frame = ev.ranked[(MODEL, task)].filter(pl.col("action") == action)
        if ids is not None:
            frame = frame.filter(pl.col("entity_id").is_in(list(ids)))
        if frame.is_empty():
            return None
        frames.append(frame.select("query", "entity_id", hit=(pl.col("rank_random") <= K).cast(pl.Float64))
                      .sort("query", "entity_id", maintain_order=True))
    if any(not f.select("query", "entity_id").equals(frames[0].select("query", "entity_id")) for f in frames):
        log.warning("ablation: the seeds of one variant were scored on different %s %s pairs", task, action)
        return None
    return frames[0].with_columns(hit=pl.sum_horizontal(f["hit"] for f in frames) / len(frames))


def recall(evs: list[Evaluation] | None, task: str, action: str,
           ids: set[str] | None = None) -> tuple[float | None, int]:
    """Recall@10 (random-index protocol, mean over the seeds' evaluations) on one set, optionally on
    entities ``ids``, and its pairs."""
    frame = _pairs(evs, task, action, ids)
    return (None, 0) if frame is None else (float(frame["hit"].mean()), len(frame))


def difference(a: list[Evaluation] | None, b: list[Evaluation] | None, task: str, action: str, cfg: EvalConfig,
               ids: set[str] | None = None) -> tuple[float, float, float] | None:
    """Recall@10 of ``a`` minus that of ``b`` on one set, with a paired query-bootstrap interval.

    Every variant is scored on the same held-out pairs, so the pairs are resampled by query for both
    models at once (:func:`~omnisearchsage.evaluation.metrics.paired_bootstrap_diff`): the interval says
    whether one step of a table is more than the noise of a few hundred test queries, which two
    separate intervals would overstate. None when either model has no figure on the set, or (with a
    warning) when the two were scored on different pairs (an export reused from another catalogue)."""
    fa, fb = _pairs(a, task, action, ids), _pairs(b, task, action, ids)
    if fa is None or fb is None:
        return None
    if not fa.select("query", "entity_id").equals(fb.select("query", "entity_id")):
        log.warning("ablation: two variants were scored on different %s %s pairs; no difference shown", task, action)
        return None
    per_query = [f.group_by("query").agg(pl.col("hit").sum(), pairs=pl.len()).sort("query") for f in (fa, fb)]
    return paired_bootstrap_diff(per_query[0]["hit"].to_numpy(), per_query[1]["hit"].to_numpy(),
                                 per_query[0]["pairs"].to_numpy(), cfg.bootstrap_samples, cfg.confidence, cfg.seed)


def _sets(task_prefix: str) -> list[tuple[str, str, str]]:
    """(task, action, paper set) of ours whose task starts with ``task_prefix``, in paper order."""
    return [(t, a, p) for (t, a), p in PAPER_SETS.items() if t.startswith(task_prefix)]


def _empty(column: str) -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def no_text_pins(ws: Workspace) -> set[str]:
    """Pins with neither a title nor a description (Table 3's subset)."""
    frame = read_table(ws, PINS).filter(_empty("title") & _empty("description")).select("pin_id").collect()
    return set(frame["pin_id"].to_list())


def pins_by_age(ws: Workspace, cutoff: datetime) -> tuple[set[str], set[str]] | None:
    """(new, settled) pins: created at or after the training cutoff, and the rest, by the rule that keeps
    new entities out of the training negatives (:func:`~omnisearchsage.trainer.data.existed_before`);
    None when every pin is of one age (no ``created_at`` included)."""
    keys = read_table(ws, PINS).select("pin_id").collect()["pin_id"]
    existed = existed_before(ws, "pin", keys, cutoff)
    new, settled = set(keys.filter(~existed).to_list()), set(keys.filter(existed).to_list())
    return (new, settled) if new and settled else None


def table4_models(evals: dict[str, list[Evaluation] | None],
                  plus_visual: list[Evaluation] | None) -> list[tuple[str, list[Evaluation] | None]]:
    """Table 4's rows and the evaluations of each (the last row is the unified run, with visual)."""
    return [(label, plus_visual if variant is UNIFIED else evals[variant.name]) for label, variant in TABLE4_VARIANTS]


def run_ablations(ws: Workspace, run: str, cfg: EvalConfig, main: Evaluation,
                  ablation: AblationConfig = AblationConfig()) -> dict[str, Any]:
    """Train, export and evaluate every needed variant; return the tables (see :func:`ablation_markdown`).

    ``main`` is the evaluation of the run itself; its held-out pairs are the ones every
    variant is scored on (same workspace, same split, same seed).
    """
    sub_cfg = replace(cfg, baselines=(), ann=())
    base, visual = base_config(ws, run), run_uses_visual(ws, run)
    own_budget = ablation.steps is None and ablation.batch_size is None
    # Same config and budget as the run: the run itself is the unified model's first seed.
    wanted = [(v, s) for v in variants_for(ablation.tables, visual) for s in range(ablation.seeds)
              if not (v is UNIFIED and own_budget and s == 0)]
    _train_in_parallel(ws, run, wanted, base, ablation)
    per_seed: dict[str, list[Evaluation]] = {UNIFIED.name: [main]} if own_budget else {}
    errors: dict[str, str] = {}
    for variant, seed in wanted:
        if variant.name in errors:
            continue
        try:
            ev = evaluate(ws, train_variant(ws, run, variant, base, ablation, seed), sub_cfg)[1]
        except OmniError as e:  # a variant the trainer refuses is reported, not fatal
            log.warning("ablation %s not trained: %s", variant.name, e)
            errors[variant.name] = str(e)
            continue
        per_seed.setdefault(variant.name, []).append(ev)
    evals: dict[str, list[Evaluation] | None] = {**per_seed, **dict.fromkeys(errors)}
    unified = evals[UNIFIED.name]
    # Without a visual slot the run is the no-visual model, and the "+ visual" cells stay empty.
    plus_visual = unified if visual else None
    if not visual:
        evals[NO_VISUAL.name] = unified
    tables: dict[str, Any] = {"steps": ablation.steps, "seeds": ablation.seeds, "errors": errors, "tables": {}}
    if 3 in ablation.tables:
        no_text = no_text_pins(ws)
        rows = []
        for task, action, paper in _sets("query-pin"):
            without, n = recall(evals[NO_CAPTIONS.name], task, action, no_text)
            with_, _ = recall(evals[NO_VISUAL.name], task, action, no_text)
            with_visual, _ = recall(plus_visual, task, action, no_text)
            rows.append([paper, *TABLE3.get(paper, (None, None)), without, with_, with_visual, n,
                         difference(evals[NO_VISUAL.name], evals[NO_CAPTIONS.name], task, action, cfg, no_text),
                         difference(plus_visual, evals[NO_VISUAL.name], task, action, cfg, no_text)])
        tables["tables"]["3"] = {
            "title": "Table 3: pins with no title or description, Recall@10 without → with captions "
                     "→ with captions + visual embeddings",
            "columns": ["eval set", "paper without", "paper with", "ours without", "ours with",
                        "ours with + visual", "pairs", "Δ captions [CI]", "Δ visual [CI]"],
            "rows": rows,
        }
    if 4 in ablation.tables:
        sets = _sets("query-pin")
        rows = []
        previous: list[Evaluation] | None = None
        for i, (label, ev) in enumerate(table4_models(evals, plus_visual)):
            cells: list[Any] = [label]
            for task, action, paper in sets:
                cells += [TABLE4.get(label, {}).get(paper), recall(ev, task, action)[0]]
            cells += [difference(ev, previous, task, action, cfg) if i else None for task, action, _ in sets]
            rows.append(cells)
            previous = ev
        tables["tables"]["4"] = {
            "title": "Table 4: entity features added in order, Recall@10 (the paper's rows all include its "
                     "visual embedding; ours add it last)",
            "columns": ["features"] + [f"{c} {p}" for _, _, p in sets for c in ("paper", "ours")]
                       + [f"Δ {p} [CI]" for _, _, p in sets],
            "rows": rows,
        }
        ages = pins_by_age(ws, main.split.train_end)
        if ages is not None:
            tables["tables"]["4-age"] = table4_by_age(evals, plus_visual, sets, ages, cfg)
    if 5 in ablation.tables:
        rows = []
        for task, action, paper in _sets("query-"):
            single_ev = evals[SINGLE_TASK[task].name]
            single, n = recall(single_ev, task, action)
            rows.append([paper, *TABLE5.get(paper, (None, None)), single, recall(unified, task, action)[0], n,
                         difference(unified, single_ev, task, action, cfg)])
        tables["tables"]["5"] = {
            "title": "Table 5: single-task models vs the unified model, Recall@10",
            "columns": ["eval set", "paper single", "paper unified", "ours single", "ours unified", "pairs",
                        "Δ unified [CI]"],
            "rows": rows,
        }
    if 6 in ablation.tables:
        rows = []
        for task, action, paper in _sets("compat-"):
            joint, n = recall(unified, task, action)
            alone = evals[COMPAT_ONLY.name]
            rows.append([paper, *TABLE6.get(paper, (None, None)), joint, recall(alone, task, action)[0], n,
                         difference(unified, alone, task, action, cfg)])
        tables["tables"]["6"] = {
            "title": "Table 6: against frozen legacy embeddings, compatibility towers trained jointly vs "
                     "a query encoder trained only against legacy embeddings, Recall@10",
            "columns": ["eval set", "paper jointly", "paper alone", "ours jointly", "ours alone", "pairs",
                        "Δ jointly [CI]"],
            "rows": rows,
        }
    return tables


def table4_by_age(evals: dict[str, list[Evaluation] | None], plus_visual: list[Evaluation] | None,
                  sets: list[tuple[str, str, str]], ages: tuple[set[str], set[str]], cfg: EvalConfig) -> dict[str, Any]:
    """Each Table 4 step's difference on new pins (created after the training cutoff) and on settled ones.

    A step can help one group and cost the other: engaged queries exist only for pins engaged before
    the cutoff, so they lift settled pins and can push new ones (which have none) out of the top 10;
    the whole-set figure is then the mix of the two, weighted by how many test pairs name new pins."""
    models = table4_models(evals, plus_visual)
    rows: list[list[Any]] = [["pairs", *(recall(evals[NO_VISUAL.name], t, a, ids)[1]
                                         for t, a, _ in sets for ids in ages)]]
    rows += [[label, *(difference(ev, previous, t, a, cfg, ids) for t, a, _ in sets for ids in ages)]
             for (_, previous), (label, ev) in zip(models, models[1:])]
    return {
        "title": "By pin age: each Table 4 step on new pins (created after the training cutoff) and settled ones, "
                 "Δ Recall@10 over the row above",
        "columns": ["features"] + [f"Δ {p} {age} [CI]" for _, _, p in sets for age in ("new", "settled")],
        "rows": rows,
    }


def ablation_markdown(ablations: dict[str, Any]) -> str:
    """One Markdown table per paper table, paper figures beside ours ("–": no figure)."""
    steps = f"{ablations['steps']} steps" if ablations.get("steps") else "the run's own budget"
    seeds = ablations.get("seeds", 1)
    mean = f"; each figure the mean of {seeds} training seeds" if seeds > 1 else ""
    out = [f"# Ablations (each variant trained with {steps}{mean})", ""]
    for table in ablations["tables"].values():
        out += [f"## {table['title']}", "", "| " + " | ".join(table["columns"]) + " |",
                "|" + "---|" * len(table["columns"])]
        out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table["rows"]]
        out.append("")
    for name, err in ablations.get("errors", {}).items():
        out.append(f"- variant `{name}` could not be trained: {err}")
    return "\n".join(out).rstrip() + "\n"


class Ablations:
    """Evaluator (see :mod:`omnisearchsage.evaluation.evaluate`): trains the variants, returns the tables
    and writes them as Markdown to ``runs/RUN/eval/ablations.md``."""

    name = "ablations"

    def __init__(self, run: str, cfg: AblationConfig = AblationConfig()) -> None:
        self.run, self.cfg = run, cfg

    def __call__(self, ev: Evaluation) -> dict[str, Any]:
        tables = run_ablations(ev.ws, self.run, ev.cfg, ev, self.cfg)
        with atomic_path(ev.ws.run(self.run).ablations) as tmp:
            tmp.write_text(ablation_markdown(tables), encoding="utf-8")
        return tables
