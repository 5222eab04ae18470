"""The workspace data contract: every table's path and schema, in one place.

A workspace is one folder; each stage reads Parquet from it and writes Parquet
into it (see ``../shared/DESIGN.md``). The names below are a contract that scripts,
docs and tests rely on: change them here or nowhere.

A :class:`Column` marked ``nullable`` may hold nulls (missing optional text is
null, never the string "None") and may be absent from a raw table altogether, in
which case readers see it as all null. Non-nullable columns must be present.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from omnisearchsage.errors import OmniError

ENV_WORKSPACE = "OMNI_WORKSPACE"

ENTITY_TYPES = ("pin", "product", "query")


@dataclass(frozen=True)
class Task:
    """A training and evaluation task: the query tower against one kind of candidate.

    ``frozen``: the candidates are the frozen legacy embeddings (the paper's compatibility tasks).
    """

    name: str
    entity_type: str
    frozen: bool = False


#: Every task the trainer knows and evaluation measures: the query tower against pins, products,
#: related queries, and against the frozen legacy pin / product embeddings (compatibility).
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("query-pin", "pin"),
    Task("query-product", "product"),
    Task("query-query", "query"),
    Task("compat-pin", "pin", frozen=True),
    Task("compat-product", "product", frozen=True),
)}
#: Actions the toolkit knows; other action strings are allowed and get weight 0
#: in engaged-query scoring unless configured.
ACTIONS = ("save", "long_click", "click", "add_to_cart", "checkout")


@dataclass(frozen=True)
class Column:
    """One column of a table: name, Polars dtype, whether nulls are allowed."""

    name: str
    dtype: pl.DataType
    nullable: bool = False


@dataclass(frozen=True)
class TableSchema:
    """A table's columns, its key (unique, non-null) and where it lives."""

    name: str
    relpath: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


Str = pl.Utf8()
F32List = pl.List(pl.Float32())
I32List = pl.List(pl.Int32())
StrList = pl.List(pl.Utf8())
Ts = pl.Datetime("us")
Bool = pl.Boolean()

# ---------------------------------------------------------------- raw inputs
#: When an entity entered the catalogue (null: unknown, taken as always there). The catalogue is
#: read as it is at evaluation time, but a training pair happened before the cutoff: an entity
#: created after it did not exist then and is never a training negative (a point-in-time
#: catalogue). Without this, every entity created after the cutoff is a training negative and
#: never a positive, and the towers learn that what marks it (no engaged queries) means "never
#: engaged": a leak from the future that makes new entities unretrievable.
CREATED_AT = "created_at"
PINS = TableSchema(
    "pins",
    "raw/pins.parquet",
    (
        Column("pin_id", Str),
        Column("title", Str, True),
        Column("description", Str, True),
        Column("image_path", Str, True),  # relative to the workspace
        Column("lang", Str, True),
        Column("legacy_embedding", F32List, True),
        # Human-written description of the image where the catalogue has one (alt text);
        # the captioner is fine-tuned on these pairs when no pretrained weights are given.
        Column("alt_text", Str, True),
        Column("created_at", Ts, True),  # see CREATED_AT
    ),
    key=("pin_id",),
)
PRODUCTS = TableSchema(
    "products",
    "raw/products.parquet",
    (
        Column("product_id", Str),
        Column("title", Str, True),
        Column("description", Str, True),
        Column("brand", Str, True),
        Column("image_path", Str, True),
        Column("legacy_embedding", F32List, True),
        Column("created_at", Ts, True),  # see CREATED_AT
    ),
    key=("product_id",),
)
BOARDS = TableSchema("boards", "raw/boards.parquet", (Column("board_id", Str), Column("title", Str)), key=("board_id",))
BOARD_PINS = TableSchema("board_pins", "raw/board_pins.parquet", (Column("board_id", Str), Column("pin_id", Str)))
ENGAGEMENTS = TableSchema(
    "engagements",
    "raw/engagements.parquet",
    (
        Column("ts", Ts),
        Column("query", Str),
        Column("entity_type", Str),  # one of ENTITY_TYPES
        Column("entity_id", Str),  # pin_id, product_id, or the related query's text
        Column("action", Str),
        Column("lang", Str, True),
    ),
)
RAW_TABLES = (PINS, PRODUCTS, BOARDS, BOARD_PINS, ENGAGEMENTS)
#: Graded labels of an imported relevance set (``omni import relevance``), both splits: the
#: positives (``label >= --positive-min``) also became engagements; the grades feed nDCG.
RELEVANCE_LABELS = TableSchema(
    "relevance_labels",
    "raw/relevance_labels.parquet",
    (
        Column("query", Str),
        Column("product_id", Str),
        Column("label", pl.Float64()),
        Column("split", Str),  # train or test
        Column("positive", pl.Boolean()),
    ),
    key=("query", "product_id"),
)

#: A workspace needs engagements and at least one of pins/products; boards are optional
#: (a products-only catalogue has none) but board_pins needs boards and pins.
REQUIRED_RAW = ("engagements",)

# ---------------------------------------------------------------- generator ground truth
# What the synthetic world generator knows (WS/truth/); for measuring, never read by training.
# ``image_words``: the colour/pattern/shape/background/topic/concept words drawn in the entity's
# image; ``attributes``: the entity's attribute values (a query's: those it asks for) as
# ``kind=value``, e.g. ``material=wood``.
def _truth_table(kind: str, id_col: str) -> TableSchema:
    return TableSchema(
        f"truth_{kind}",
        f"truth/{kind}.parquet",
        (Column(id_col, Str), Column("topic", Str), Column("concept", Str),
         Column("image_words", StrList), Column("image_description", Str), Column("attributes", StrList, True),
         Column("fresh", Bool)),
        key=(id_col,),
    )


TRUTH_PINS = _truth_table("pins", "pin_id")
TRUTH_PRODUCTS = _truth_table("products", "product_id")
TRUTH_QUERIES = TableSchema(
    "truth_queries",
    "truth/queries.parquet",
    (Column("query", Str), Column("topic", Str), Column("concept", Str), Column("lang", Str),
     Column("attributes", StrList, True)),
    key=("query",),
)

# ---------------------------------------------------------------- enrich outputs
CAPTIONS = TableSchema(
    "captions",
    "enrich/captions.parquet",
    (
        Column("entity_type", Str),
        Column("entity_id", Str),
        Column("image_sha256", Str),
        Column("caption", Str),
        Column("model", Str),
    ),
    key=("entity_type", "entity_id"),
)
CAPTION_ERRORS = TableSchema(
    "caption_errors",
    "enrich/caption_errors.parquet",
    (Column("entity_type", Str), Column("entity_id", Str), Column("image_path", Str, True), Column("error", Str)),
    key=("entity_type", "entity_id"),
)
#: One visual embedding per pin/product (``omni enrich visual``): each distinct image is
#: embedded once and L2-normalised; an entity with several images gets their mean, and
#: ``image_sha256`` then lists the averaged images' hashes, sorted and joined by ``,``.
VISUAL_EMBEDDINGS = TableSchema(
    "visual_embeddings",
    "enrich/visual_embeddings.parquet",
    (
        Column("entity_type", Str),
        Column("entity_id", Str),
        Column("image_sha256", Str),
        Column("embedding", F32List),
        Column("model", Str),  # the backbone, e.g. efficientnet-lite0 or a model folder
    ),
    key=("entity_type", "entity_id"),
)
#: One row per image that could not be embedded (an entity may have several images).
VISUAL_ERRORS = TableSchema(
    "visual_errors",
    "enrich/visual_errors.parquet",
    (Column("entity_type", Str), Column("entity_id", Str), Column("image_path", Str, True), Column("error", Str)),
    key=("entity_type", "entity_id", "image_path"),
)
BOARD_TITLES = TableSchema(
    "board_titles",
    "enrich/board_titles.parquet",
    (Column("pin_id", Str), Column("titles", StrList)),  # ranked best first, at most 10
    key=("pin_id",),
)
ENGAGED_QUERIES = TableSchema(
    "engaged_queries",
    "enrich/engaged_queries.parquet",
    (
        Column("entity_type", Str),  # pin or product
        Column("entity_id", Str),
        Column("queries", StrList),  # ranked best first, at most 20
        Column("scores", pl.List(pl.Float64())),
    ),
    key=("entity_type", "entity_id"),
)
#: The counts engaged_queries is ranked from, kept so an incremental run (``--previous``)
#: slides the window and merges new logs exactly. Per day, so whole days leave the window;
#: the Parquet key-value metadata records the [window_start, cutoff) dates it covers.
ENGAGED_QUERY_COUNTS = TableSchema(
    "engaged_query_counts",
    "enrich/engaged_query_counts.parquet",
    (
        Column("entity_type", Str),
        Column("entity_id", Str),
        Column("query", Str),  # normalised
        Column("action", Str),
        Column("day", pl.Date()),
        Column("n", pl.Int64()),
    ),
    key=("entity_type", "entity_id", "query", "action", "day"),
)

# ---------------------------------------------------------------- features outputs
#: Text fields per entity kind, in this order, as columns of the features tables.
PIN_FIELDS = ("title", "description", "caption", "board_titles", "engaged_queries")
PRODUCT_FIELDS = ("title", "description", "brand", "caption", "engaged_queries")
QUERY_FIELDS = ("text",)
#: Fields that hold several texts per entity (board titles, engaged queries); the others hold one.
LIST_FIELDS = ("board_titles", "engaged_queries")
#: Vocabulary kinds and their tables: features/vocab/<kind>.parquet (token, id, count).
VOCAB_KINDS = ("unigram", "bigram", "char_trigram")
VOCAB_SCHEMA = (Column("token", Str), Column("id", pl.Int32()), Column("count", pl.Int64()))


def _token_table(kind: str, id_col: str, fields: tuple[str, ...]) -> TableSchema:
    # Each field holds *global* token ids (all three tokenizers and the OOV buckets
    # share one id space; offsets are in features/manifest.json), so a field loads
    # straight into one EmbeddingBag as flat ids + offsets.
    # Named ``features_<kind>``: table names are unique keys (validation looks tables up by
    # name), and ``pins`` is the raw table.
    return TableSchema(
        f"features_{kind}",
        f"features/{kind}.parquet",
        (Column(id_col, Str), *(Column(f, I32List) for f in fields)),
        key=(id_col,),
    )


FEATURE_PINS = _token_table("pins", "pin_id", PIN_FIELDS)
FEATURE_PRODUCTS = _token_table("products", "product_id", PRODUCT_FIELDS)
FEATURE_QUERIES = _token_table("queries", "query", QUERY_FIELDS)


class Workspace:
    """Paths of one workspace folder. Construction does not touch the disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None) -> Workspace:
        """``root`` if given, else ``$OMNI_WORKSPACE``, else the current directory."""
        return cls(root or os.environ.get(ENV_WORKSPACE) or Path.cwd())

    def path(self, table: TableSchema) -> Path:
        return self.root / table.relpath

    def has(self, table: TableSchema) -> bool:
        return self.path(table).exists()

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def relevance_meta(self) -> Path:
        """How a relevance set was imported (dataset, positive threshold, label range, embedder)."""
        return self.root / "raw" / "relevance.json"

    @property
    def legacy_encoder(self) -> Path:
        """Which text encoder computed the legacy embeddings, if one did (see ``trainer/anchor.py``)."""
        return self.root / "raw" / "legacy_encoder.json"

    @property
    def images(self) -> Path:
        return self.root / "raw" / "images"

    @property
    def enrich(self) -> Path:
        return self.root / "enrich"

    @property
    def captions_work(self) -> Path:
        """Resumable captioning state: result shards + manifest (``omni enrich captions``)."""
        return self.root / "enrich" / ".captions_work"

    @property
    def visual_work(self) -> Path:
        """Resumable visual-embedding state: result shards + manifest (``omni enrich visual``)."""
        return self.root / "enrich" / ".visual_work"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def vocab(self) -> Path:
        return self.root / "features" / "vocab"

    def vocab_path(self, kind: str) -> Path:
        return self.vocab / f"{kind}.parquet"

    @property
    def features_manifest(self) -> Path:
        return self.root / "features" / "manifest.json"

    def model_dir(self, name: str) -> Path:
        """Models a stage produced for later stages, e.g. ``models/captioner`` (fine-tuned BLIP)."""
        return self.root / "models" / name

    @property
    def truth(self) -> Path:
        """Ground truth the synthetic generator knows (topics); never read by training."""
        return self.root / "truth"

    @property
    def split_file(self) -> Path:
        """The time split, decided once per workspace and read by every stage (``split.py``)."""
        return self.root / "raw" / "split.json"

    def run(self, name: str) -> RunLayout:
        return RunLayout(self.root / "runs" / name)

    def run_dir(self, name: str) -> Path:
        return self.run(name).root

    def export_dir(self, name: str) -> Path:
        return self.run(name).export.root

    def eval_dir(self, name: str) -> Path:
        return self.run(name).eval

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"


# ---------------------------------------------------------------- run and export layouts
class ExportLayout:
    """Files of an exported model (``runs/NAME/export/``, or any folder ``omni serve`` is given)::

        manifest.json                         model_version, dim, split, tasks, entity_types, ...
        query_encoder/  config.json, model.safetensors, featurizer/, hf/ (transformer tower)
        entity_encoder/ config.json, model.safetensors, featurizer/
        embeddings/{pins,products,queries}.parquet     id str, embedding list[float32]
    """

    #: Inside each encoder folder.
    ENCODER_CONFIG = "config.json"
    WEIGHTS = "model.safetensors"
    FEATURIZER = "featurizer"
    HF = "hf"
    #: ``omni export --onnx``: the query encoder as ONNX, inside ``query_encoder/``.
    QUERY_ONNX = "query_encoder.onnx"
    #: Embedding files per entity type, under ``embeddings/``.
    EMBEDDING_FILES = {"pin": "pins.parquet", "product": "products.parquet", "query": "queries.parquet"}

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def query_encoder(self) -> Path:
        return self.root / "query_encoder"

    @property
    def entity_encoder(self) -> Path:
        return self.root / "entity_encoder"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    def embeddings(self, entity_type: str) -> Path:
        if entity_type not in self.EMBEDDING_FILES:
            raise OmniError(f"unknown entity type {entity_type!r}; choose one of {', '.join(self.EMBEDDING_FILES)}")
        return self.embeddings_dir / self.EMBEDDING_FILES[entity_type]

    def embedding_part(self, entity_type: str, shard: int, num_shards: int) -> Path:
        """One shard of a sharded embedding job (``omni embed``): the entity type's embeddings are then a
        folder of ``part-I-of-N.parquet`` files, read as one dataset in shard order."""
        return self.embeddings(entity_type) / f"part-{shard:05d}-of-{num_shards:05d}.parquet"

    def read_manifest(self) -> dict[str, Any]:
        """The export's manifest; the one reader every stage uses."""
        if not self.manifest.is_file():
            raise OmniError(f"{self.manifest}: missing; export the run first with `omni export RUN`")
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OmniError(f"{self.manifest}: unreadable ({e}); re-export the run") from None


class RunLayout:
    """Files of one training run (``runs/NAME/``); the names are also class constants for code that
    joins them onto a run folder itself."""

    CONFIG = "config.json"  # the TrainConfig, model spec and data facts (--resume and export read it)
    METRICS = "metrics.jsonl"  # one JSON line per logged step
    SUMMARY = "summary.json"  # written when training finishes
    CHECKPOINTS = "checkpoints"  # step-NNNNNNN/ folders
    #: The fine-tuned text encoder's vectors of the anchored kind's catalogue (``trainer/siamese.py``):
    #: ``ids`` + ``vectors``, written once after the siamese stage, read by ``--resume`` and the export.
    TEXT_VECTORS = "text_vectors.npz"
    #: Inside a checkpoint folder.
    CHECKPOINT_WEIGHTS = "model.safetensors"
    CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
    CHECKPOINT_STATE = "state.json"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def summary(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def text_vectors(self) -> Path:
        return self.root / self.TEXT_VECTORS

    @property
    def export(self) -> ExportLayout:
        return ExportLayout(self.root / "export")

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def results(self) -> Path:
        return self.eval / "results.json"

    @property
    def report(self) -> Path:
        return self.eval / "report.html"

    @property
    def ablations(self) -> Path:
        return self.eval / "ablations.md"
