"""Every size and knob of the trainer, in plain dataclasses.

``ModelConfig`` (in :mod:`omnisearchsage.model.config`) shapes the two towers, ``LossConfig`` the
per-task sampled softmax, and ``TrainConfig`` (which holds both) the data, the task mix and the
optimisation. The time split is not a training knob: it is the workspace's (``split.py``).
The defaults train the *small* sample world well in a few minutes on two CPU cores; the
paper's production values are given beside each one where they differ.

A run's config is written to ``runs/NAME/config.json`` and read back by ``--resume``
and by the export, so every field must survive a JSON round trip (:meth:`TrainConfig.to_json`,
:meth:`TrainConfig.from_json`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from omnisearchsage.contract import TASKS
from omnisearchsage.errors import OmniError
from omnisearchsage.model.config import ENTITY_FIELDS, ModelConfig, config_from_json

#: ``TrainConfig.engaged_queries_as_of`` values (``positive_queries.py``).
AS_OF_VIEWS = ("pair", "leave_one_out", "cutoff")


@dataclass
class LossConfig:
    """The per-task sampled softmax with logQ correction (see ``loss.py``)."""

    #: Random negatives drawn from the catalogue per pair (paper: 4).
    num_negatives: int = 4
    #: Count-min sketch width and depth for the logQ frequency estimates (paper: 2**26 x 2,
    #: 1 GiB per sketch; here 4 MiB, four per task). The sketches are rebuilt on resume, never
    #: checkpointed.
    sketch_width: int = 2**18
    sketch_depth: int = 2
    #: The learned logit scale (= 1 / temperature) starts here and is clamped below max_scale
    #: (paper: 1/0.07 and 100, as in CLIP).
    init_scale: float = 1 / 0.07
    max_scale: float = 100.0
    #: Matryoshka prefixes trained beside the full embedding, and their loss weights
    #: (the paper's code: 0.05 for each short prefix, 1.0 for the full dimension).
    matryoshka_dims: tuple[int, ...] = (32, 64, 128, 256)
    matryoshka_weights: tuple[float, ...] = (0.05, 0.05, 0.05, 1.0)


@dataclass
class HardNegativeConfig:
    """Hard negatives mined from the model's own index of the catalogue (``hard_negatives.py``)."""

    #: Hard negatives per training pair of a pin / product task (0: none). They join the row's
    #: in-batch candidates of the sampled softmax.
    per_pair: int = 0
    #: Catalogue entities retrieved per training query to choose them from (its nearest ones).
    candidates: int = 32
    #: Steps between two minings (the first is at step 0, from the model as it starts).
    refresh_every: int = 100
    #: False-negative guard (NV-Retriever's "TopK-PercPos", sentence-transformers'
    #: ``mine_hard_negatives(relative_margin=...)``): a candidate scoring above
    #: ``pos - relative_margin * |pos|`` against the query is never a negative of that pair.
    relative_margin: float = 0.05


@dataclass
class TrainConfig:
    """One training run: which tasks, which data, how long, how fast."""

    #: Tasks to train, or ("all",): every task with data in the workspace.
    tasks: tuple[str, ...] = ("all",)
    #: Share of each step's pairs per task (paper: pin 8 : product 4 : query 2, and the compat tasks
    #: score the pin / product batches too). On the small world query-query 4 instead of 2 lifted its
    #: Recall@10 and left query-pin as it was. Compat-product 8 against compat-pin 4 balances what the
    #: two compat tasks score per step once ``compat_shared_pairs`` adds query-pin's 8 and
    #: query-product's 4 (12 each), as compat trained alone scores both kinds equally; at 4 : 4 the
    #: joint model's product compat scored a third fewer pairs than compat alone and fell behind it
    #: (README, *Ablations*, Table 6).
    task_shares: dict[str, float] = field(default_factory=lambda: {
        "query-pin": 8, "query-product": 4, "query-query": 4, "compat-pin": 4, "compat-product": 8})
    #: Pairs per step over all tasks, per process (paper: 10,240 per GPU); 201 of them query-pin.
    batch_size: int = 704
    #: The compat tasks also score the pairs query-pin / query-product draw each step (against the
    #: engaged entity's frozen legacy embedding, where it has one), as the paper's compat tasks score
    #: the pin / product batches: more compat pairs per step at the cost of query-tower passes only.
    #: None: on, except for an anchored model (as ``ModelConfig.compat_head``).
    compat_shared_pairs: bool | None = None
    #: What a stored config lacking a key was trained with, where today's default differs (see
    #: ``ModelConfig.LEGACY``): runs from before the shared compat pairs did without them.
    LEGACY: ClassVar[dict[str, Any]] = {"compat_shared_pairs": False, "engaged_queries_as_of": "cutoff"}
    #: Steps (paper: 150k). On the small world query->pin Recall@10 levels off after about 1.3 epochs of
    #: its pairs, well before the last step.
    steps: int = 600
    #: Stop earlier once the task that cycles slowest has seen its pairs this many times (None: run
    #: every step). The small world never reaches it (query-pin sees 1.9 epochs in 600 steps); a
    #: relevance set with a few thousand pairs does, and more epochs only memorise its few queries
    #: (CrowdFlower: 206 training queries).
    max_epochs: float | None = 4.0
    #: "adamw", or "lamb" as in the paper.
    optimizer: str = "adamw"
    lr: float = 2e-3
    #: A pretrained transformer query tower's body: 0 frozen; > 0 fine-tuned at ``lr`` times this in the
    #: siamese stage before the loop (``siamese.py``; needs an anchored model). None ("auto"): decided
    #: by the number of training queries (below). A frozen body runs once per distinct training query
    #: instead of once per step (a CPU trains the anchored CrowdFlower model in seconds).
    pretrained_lr_scale: float | None = None
    #: ``pretrained_lr_scale`` None: the body is fine-tuned at this scale when the training pairs hold at
    #: least ``fine_tune_min_queries`` distinct queries, else frozen (``fine_tune.resolve_fine_tuning``).
    #: With ``lr`` 2e-3 it is 1e-4: only the top layers learn, faster than a whole body's usual 2e-5.
    fine_tune_lr_scale: float = 0.05
    #: Distinct training queries from which "auto" fine-tunes the pretrained body (see README,
    #: *Fine-tuning the text encoder*): a few hundred queries teach a 22M-parameter body the training
    #: queries only; thousands move it towards the catalogue's language.
    fine_tune_min_queries: int = 1000
    #: ``model.field_dropout`` None ("auto", ``trainer.field_dropout``): a field's dropout is the share
    #: of the catalogue lacking it minus that of the training positives, kept from this value up ...
    field_dropout_min: float = 0.05
    #: ... and capped here (DropoutNet's usual rate: at least half the rows keep the field).
    field_dropout_max: float = 0.5
    #: The siamese stage trains the body's top this-many layers (None: all of them); the embeddings and
    #: the layers below run once per distinct text.
    fine_tune_layers: int | None = 2
    #: Epochs of the query-entity pairs the siamese stage walks (sentence-transformers' recipe: one).
    fine_tune_epochs: float = 1.0
    #: Pairs per siamese step, none sharing a query or an entity (sentence-transformers' default: 64).
    fine_tune_batch_size: int = 64
    #: The siamese stage's logit scale on cosines (MultipleNegativesRankingLoss's default: 20).
    fine_tune_logit_scale: float = 20.0
    #: Mined hard negatives per siamese pair, drawn one per step (0: in-batch negatives only; the miner's
    #: candidates and false-negative margin are ``hard``'s).
    fine_tune_hard_negatives: int = 0
    #: Run the siamese stage's encoder passes in bf16 autocast where the device has native bf16 (a CPU
    #: with AVX512-BF16 or AMX, a bf16 GPU; ``text_encoders.bf16_autocast``), float32 elsewhere or if False.
    fine_tune_bf16: bool = True
    #: An anchored model's residual maps and lexical weights learn at ``lr`` times this: at the full
    #: rate they drift from the pretrained space faster than a few hundred queries can justify (measured
    #: on CrowdFlower, README *Real data*).
    anchor_lr_scale: float = 0.25
    weight_decay: float = 0.01
    warmup_steps: int = 50
    #: The cosine decays the learning rate to this fraction of ``lr``.
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    #: A checkpoint every this many minutes of training (0: none by time), plus one at the end and one
    #: on SIGINT/SIGTERM: a kill loses at most this much work, whatever a step costs.
    checkpoint_minutes: float = 5.0
    #: A checkpoint every this many steps as well (0: by time only).
    checkpoint_every: int = 0
    #: Checkpoints kept on disk (the newest ones).
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    #: Engagement actions that make a training pair, per candidate kind.
    pin_actions: tuple[str, ...] = ("save", "long_click")
    product_actions: tuple[str, ...] = ("click", "add_to_cart", "checkout")
    query_actions: tuple[str, ...] = ("click",)
    #: What a training pair's entities read for their engaged queries (``positive_queries.py``):
    #: "leave_one_out", the positive reads those of the cutoff without the pair's own query unless it
    #: engaged the entity twice; "pair", positive and negatives read them as they were when the pair
    #: happened (point-in-time; on the sample world new pins lost less than with leave-one-out but
    #: settled ones gained less and the whole model scored lower, README, *Evaluate*, so it is not the
    #: default); "cutoff", the features table's (leaky: every positive finds its own query there, no
    #: future pair does, and the towers learn to bury entities without engaged queries).
    engaged_queries_as_of: str = "leave_one_out"
    #: "pair": the days entities are read as of, quantiles of the days the training pairs happened (each
    #: pair reads the last one on or before its own day): more days are closer to each pair's own, and
    #: each costs a copy of the engaged-queries lists that changed since the one before.
    engaged_queries_snapshots: int = 16
    #: At most this many distinct queries per entity, the most engaged first (paper: 50 / 200).
    max_pairs_per_pin: int = 50
    max_pairs_per_product: int = 200
    max_pairs_per_query: int = 50
    #: Torch intra-op threads while training on CPU (None: leave torch's setting). A step is thousands
    #: of small ops: on an idle 2-core machine a second thread saves a little, but with any other
    #: process running, threads spin-waiting for each other make steps many times slower. One thread
    #: also gives the same floating-point sums, hence the same run, everywhere.
    cpu_threads: int | None = 1
    #: Rows per forward pass when the export embeds the whole catalogue.
    export_batch_size: int = 2048
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    hard: HardNegativeConfig = field(default_factory=HardNegativeConfig)

    def validate(self) -> None:
        """Raise OmniError for values no run could use, before any data is read."""
        unknown = [t for t in self.tasks if t != "all" and t not in TASKS]
        if unknown:
            raise OmniError(f"unknown task(s) {', '.join(unknown)}; choose from all, {', '.join(TASKS)}")
        if self.engaged_queries_as_of not in AS_OF_VIEWS:
            raise OmniError(f"engaged_queries_as_of {self.engaged_queries_as_of!r}: choose from {', '.join(AS_OF_VIEWS)}")
        if self.engaged_queries_snapshots < 1:
            raise OmniError(f"engaged_queries_snapshots {self.engaged_queries_snapshots}: must be >= 1")
        bad_fields = [f for f in (*self.model.entity_fields, *self.model.lexical_fields) if f not in ENTITY_FIELDS]
        if bad_fields:
            raise OmniError(f"entity fields {bad_fields}: choose from {', '.join(ENTITY_FIELDS)}")
        if not self.model.entity_fields and not self.model.use_legacy and not self.model.use_visual:
            raise OmniError("entity_fields is empty and legacy and visual embeddings are off: the entity tower "
                            "would read nothing; keep a text field, the legacy or the visual embedding")
        if not self.model.entity_mlp and self.model.anchor_kind is None:
            raise OmniError("entity_mlp off needs anchor_kind (the entity tower would have no dense output)")
        if (self.pretrained_lr_scale or 0) < 0 or self.anchor_lr_scale < 0 or self.fine_tune_lr_scale < 0:
            raise OmniError("pretrained_lr_scale, fine_tune_lr_scale and anchor_lr_scale must be >= 0")
        if self.fine_tune_hard_negatives < 0:
            raise OmniError(f"fine_tune_hard_negatives {self.fine_tune_hard_negatives}: must be >= 0")
        if self.fine_tune_layers is not None and self.fine_tune_layers < 1:
            raise OmniError(f"fine_tune_layers {self.fine_tune_layers}: must be >= 1 (or None: every layer)")
        if self.fine_tune_epochs <= 0 or self.fine_tune_batch_size < 2 or self.fine_tune_logit_scale <= 0:
            raise OmniError(f"fine_tune_epochs {self.fine_tune_epochs}, fine_tune_batch_size "
                            f"{self.fine_tune_batch_size}, fine_tune_logit_scale {self.fine_tune_logit_scale}: "
                            "need epochs > 0, batch >= 2 (in-batch negatives), scale > 0")
        if self.fine_tune_min_queries < 0:
            raise OmniError(f"fine_tune_min_queries {self.fine_tune_min_queries}: must be >= 0")
        if self.model.query_head not in ("linear", "residual"):
            raise OmniError(f"query_head {self.model.query_head!r}: choose linear or residual")
        if self.model.compat_from not in ("bag", "body"):
            raise OmniError(f"compat_from {self.model.compat_from!r}: choose bag or body")
        if (self.model.lexical_buckets or 0) < 0 or self.model.lexical_beta <= 0:
            raise OmniError("lexical_buckets must be >= 0 and lexical_beta > 0")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise OmniError(f"max_epochs {self.max_epochs}: must be positive (or None: no limit)")
        hard = self.hard
        if hard.per_pair < 0 or hard.candidates < hard.per_pair or hard.refresh_every < 1 or hard.relative_margin < 0:
            raise OmniError("hard negatives: per_pair >= 0, candidates >= per_pair, refresh_every >= 1 and "
                            "relative_margin >= 0")
        loss = self.loss
        if len(loss.matryoshka_dims) != len(loss.matryoshka_weights):
            raise OmniError("loss.matryoshka_dims and loss.matryoshka_weights differ in length")
        if any(d > self.model.dim or d < 1 for d in loss.matryoshka_dims) or self.model.dim not in loss.matryoshka_dims:
            raise OmniError(f"matryoshka_dims {list(loss.matryoshka_dims)} must lie in [1, {self.model.dim}] "
                            f"and include the output dimension {self.model.dim}")
        if self.optimizer not in ("adamw", "lamb"):
            raise OmniError(f"optimizer {self.optimizer!r}: choose adamw or lamb")
        if self.model.pooling not in ("cls", "mean"):
            raise OmniError(f"pooling {self.model.pooling!r}: choose cls or mean")
        if self.steps < 1 or self.batch_size < 1:
            raise OmniError("steps and batch_size must be at least 1")
        if not 0.0 <= self.field_dropout_min <= self.field_dropout_max < 1.0:
            raise OmniError(f"field_dropout_min {self.field_dropout_min} and field_dropout_max "
                            f"{self.field_dropout_max}: need 0 <= min <= max < 1")
        for name, p in self.model.field_dropout or ():
            if name not in self.model.entity_fields or not 0.0 <= p < 1.0:
                raise OmniError(f"field dropout {name}={p}: the field must be one the entity tower reads "
                                f"({', '.join(self.model.entity_fields)}) and 0 <= p < 1")
        if not 0.0 <= self.model.presence_dropout < 1.0:
            raise OmniError(f"presence dropout {self.model.presence_dropout}: need 0 <= p < 1")
        if self.checkpoint_minutes < 0 or self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise OmniError("checkpoint_minutes and checkpoint_every must be >= 0 and keep_checkpoints >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_dim(self, dim: int) -> TrainConfig:
        """This config with output dimension ``dim``: Matryoshka prefixes at or above the old full
        dimension collapse into ``dim`` (keeping the full dimension's weight)."""
        full = dict(zip(self.loss.matryoshka_dims, self.loss.matryoshka_weights))
        weight = full.get(self.model.dim, 1.0)
        prefixes = {d: w for d, w in full.items() if d < min(dim, self.model.dim)} | {dim: weight}
        return replace(self, model=replace(self.model, dim=dim),
                       loss=replace(self.loss, matryoshka_dims=tuple(prefixes), matryoshka_weights=tuple(prefixes.values())))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error (a config from another version). A run
        from before ``engaged_queries_as_of`` recorded the bool it replaced: True is leave_one_out."""
        if "engaged_queries_leave_one_out" in data:
            data = dict(data)
            data["engaged_queries_as_of"] = "leave_one_out" if data.pop("engaged_queries_leave_one_out") else "cutoff"
        return config_from_json(cls, data)


def scored_shares(cfg: TrainConfig, tasks: Iterable[str]) -> dict[str, float]:
    """Each of ``tasks``' share of the pairs a step scores (``cfg.task_shares``; 1 for a task without
    one): with ``compat_shared_pairs`` a compat task also scores the pairs of the retrieval task with the
    same candidate kind, so it holds both shares. The loss weighs tasks by it, and Table 6's compat-alone
    reference splits its batch by it."""
    tasks = tuple(tasks)
    shares = {t: float(cfg.task_shares.get(t, 1.0)) for t in tasks}
    if cfg.compat_shared_pairs:
        for name in tasks:
            main = shared_task(name, tasks)
            if main is not None:
                shares[name] += shares[main]
    return shares


def shared_task(name: str, tasks: Iterable[str]) -> str | None:
    """The retrieval task among ``tasks`` whose pairs compat task ``name`` also scores with
    ``compat_shared_pairs`` (None: not a compat task, or no retrieval task of its kind among them)."""
    task = TASKS[name]
    if not task.frozen:
        return None
    return next((m for m in tasks if not TASKS[m].frozen and TASKS[m].entity_type == task.entity_type), None)
