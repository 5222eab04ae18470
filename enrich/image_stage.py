"""Machinery shared by the per-image enrichment stages (captions, visual embeddings).

Both stages run a model once per *distinct* image of the catalogue and must survive
bad files, kills and several devices. What they share lives here, so a fix to one is
a fix to both:

* **Plan** (:func:`plan_images`): every pin's and product's ``image_path`` is hashed
  (SHA-256 of the bytes), so an image shared by several entities, or stored twice
  under different names, is processed once. Unreadable paths become errors here.
* **Work folder** (:class:`ShardedResults`): finished per-image results are keyed by
  hash, in shards written atomically every ``shard_size`` images, so after a
  ``kill -9`` a rerun redoes at most the shard in flight. A manifest of the settings
  the results were made with clears the folder when they change.
* **Decoding** (:func:`decode_batches`): a torch ``DataLoader`` decodes images with
  the safe loader (:func:`~omnisearchsage.enrich.images.load_rgb`) and preprocesses
  them in worker processes, so only tensors cross processes; a bad image yields its
  reason instead of stopping the batch.
* **Driver** (:func:`run_image_stage`): plan on the main process, split the images
  not done yet between the processes ``accelerate launch``/torchrun started, let each
  write shards, then merge on the main process.

The stage-specific parts (the model, the per-image value, how results join back to
entities) are passed in as callables.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import PartialState
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from omnisearchsage.atomic import write_json, write_parquet
from omnisearchsage.contract import PINS, PRODUCTS, TableSchema, Workspace
from omnisearchsage.enrich.config import ImageRunConfig
from omnisearchsage.enrich.images import UnreadableImage, load_rgb, sha256_file
from omnisearchsage.errors import OmniError
from omnisearchsage.progress import progress_bar
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)

#: (entity type, raw table) pairs that carry images.
ENTITY_TABLES: tuple[tuple[str, TableSchema], ...] = (("pin", PINS), ("product", PRODUCTS))
PLAN_SCHEMA = {
    "entity_type": pl.Utf8,
    "entity_id": pl.Utf8,
    "image_path": pl.Utf8,
    "sha256": pl.Utf8,
    "error": pl.Utf8,
}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: A batch's preprocessing: RGB images in, one ``pixel_values`` tensor out. Runs in
#: DataLoader workers, so it must be picklable (an object, not a lambda).
Preprocess = Callable[[list[Image.Image]], torch.Tensor]


# ---------------------------------------------------------------- devices and models
def process_state() -> PartialState:
    """accelerate's view of the launched processes (one, or several under `accelerate launch`/torchrun).

    Without CUDA, ``cpu=True`` lets several launched CPU processes form a gloo group
    (accelerate's MULTI_CPU); otherwise each would believe it is alone and do everything.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it, else fp16 on a GPU; fp32 on CPU (fp16 is slow there)."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_fingerprint(ref: str) -> str:
    """Identity of a model for the resume cache: a local directory's file names, sizes and
    mtimes (so re-training into the same folder invalidates old results), else the name."""
    path = Path(ref)
    if not path.is_dir():
        return ref
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps([str(path.resolve()), entries]).encode()).hexdigest()


def model_name(ws: Workspace, ref: str) -> str:
    """The ``model`` column: a path inside the workspace relative to it (portable), else as given."""
    path = Path(ref)
    if path.is_dir():
        try:
            return str(path.resolve().relative_to(ws.root.resolve()))
        except ValueError:
            return str(path.resolve())
    return ref


def image_side(image_processor: Any) -> int | None:
    """The side a Hugging Face image processor resizes to, so JPEGs can be decoded at a
    reduced scale (None: unknown)."""
    size = image_processor.size
    if isinstance(size, dict):
        sides = [size.get(name) for name in ("height", "width", "shortest_edge")]
    else:
        sides = [getattr(size, name, None) for name in ("height", "width", "shortest_edge")]
    return max((s for s in sides if s), default=None)


# ---------------------------------------------------------------- plan
def require_images(ws: Workspace) -> None:
    """Fail unless the workspace has a valid pins or products table to read images from."""
    present = [schema for _, schema in ENTITY_TABLES if ws.has(schema)]
    if not present:
        raise OmniError(f"no {PINS.relpath} or {PRODUCTS.relpath} in {ws.root}: no images to process")
    validate_workspace(ws, tables=[schema.name for schema in present])


def image_entities(ws: Workspace) -> pl.DataFrame:
    """``(entity_type, entity_id, image_path)`` of every pin and product that has an image.

    One row per (entity, image): a stage that can use several images per entity
    (visual embeddings average them) gets them all as separate rows.
    """
    frames = [
        read_table(ws, schema)
        .select(pl.lit(kind).alias("entity_type"), pl.col(schema.key[0]).alias("entity_id"), "image_path")
        .filter(pl.col("image_path").is_not_null() & (pl.col("image_path").str.strip_chars() != ""))
        for kind, schema in ENTITY_TABLES
        if ws.has(schema)
    ]
    return pl.concat(frames).collect()


def plan_images(ws: Workspace, hash_threads: int, max_bytes: int) -> pl.DataFrame:
    """Entities joined to the SHA-256 of their image file (hashed once per distinct path)."""
    entities = image_entities(ws)
    paths = entities.get_column("image_path").unique().sort().to_list()

    def digest(rel: str) -> tuple[str, str | None, str | None]:
        try:
            return rel, sha256_file(ws.root / rel, max_bytes), None
        except FileNotFoundError:
            return rel, None, "missing file"
        except UnreadableImage as e:  # a directory, a FIFO, a device, too large
            return rel, None, f"unreadable file: {e}"
        except OSError as e:  # no permission, an I/O error
            return rel, None, f"unreadable file: {type(e).__name__}: {e.strerror or e}"

    rows: list[tuple[str, str | None, str | None]] = []
    with (
        progress_bar(len(paths), "hashing images", "file") as bar,
        concurrent.futures.ThreadPoolExecutor(hash_threads) as pool,
    ):
        for row in pool.map(digest, paths):
            rows.append(row)
            bar.advance()
    hashes = pl.DataFrame(
        rows, schema={"image_path": pl.Utf8, "sha256": pl.Utf8, "error": pl.Utf8}, orient="row"
    )
    return entities.join(hashes, on="image_path", how="left").select(list(PLAN_SCHEMA)).cast(PLAN_SCHEMA)


def images_todo(plan: pl.DataFrame, done: pl.DataFrame) -> list[tuple[str, str]]:
    """Distinct image hashes with no finished result, with one path each, in a stable order."""
    todo = (
        plan.filter(pl.col("sha256").is_not_null())
        .group_by("sha256")
        .agg(pl.col("image_path").min())
        .join(done.select("sha256"), on="sha256", how="anti")
        .sort("sha256")
    )
    return list(zip(todo.get_column("sha256").to_list(), todo.get_column("image_path").to_list()))


# ---------------------------------------------------------------- resumable work folder
class ShardedResults:
    """Shards of finished per-image results plus a manifest, under one work folder.

    * ``manifest.json`` – the settings (model fingerprint, precision, ...) the results
      were made with; a mismatch clears the folder.
    * ``plan.parquet`` – this run's entity → image hash table (main process writes,
      all processes read).
    * ``shards/*.parquet`` – one row per image (``sha256``, the stage's value column,
      ``error``), each written atomically as soon as ``shard_size`` images are done.
    * ``done.parquet`` – earlier shards compacted at the end of a run.
    """

    def __init__(self, root: Path, schema: dict[str, pl.DataType]) -> None:
        self.root, self.schema = root, schema
        self.manifest = root / "manifest.json"
        self.plan = root / "plan.parquet"
        self.shards = root / "shards"
        self.done = root / "done.parquet"

    def prepare(self, settings: dict[str, Any]) -> bool:
        """Keep finished results made with ``settings``; clear them otherwise. Returns True if kept."""
        kept = self.manifest.exists() and json.loads(self.manifest.read_text()).get("settings") == settings
        stale = [*self.shards.glob(".*.tmp-*")]  # temporaries of shards a kill interrupted
        if not kept:
            stale += [*self.shards.glob("*.parquet"), self.done]
        for p in stale:
            p.unlink(missing_ok=True)
        self.shards.mkdir(parents=True, exist_ok=True)
        write_json({"settings": settings}, self.manifest)
        return kept

    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("*.parquet"))

    def results(self, shard_files: Sequence[Path] | None = None) -> pl.DataFrame:
        """Every finished result (one row per image hash; a duplicate left by a kill during compaction
        is dropped)."""
        files = [
            *([self.done] if self.done.exists() else []),
            *(self.shard_files() if shard_files is None else shard_files),
        ]
        if not files:
            return pl.DataFrame(schema=self.schema)
        return pl.concat([pl.read_parquet(f) for f in files]).unique(
            "sha256", keep="first", maintain_order=True
        )

    def write_shard(self, rows: dict[str, list[Any]], tag: str) -> Path:
        return write_parquet(pl.DataFrame(rows, schema=self.schema), self.shards / f"{tag}.parquet")

    def compact(self) -> None:
        """Fold shards into ``done.parquet`` (written before the shards are removed, so a kill in
        between only leaves duplicates, which :meth:`results` drops)."""
        shards = self.shard_files()
        if shards:
            write_parquet(self.results(shards), self.done)
            for p in shards:
                p.unlink()


class ShardWriter:
    """Buffers per-image results and writes a shard each time ``shard_size`` are done."""

    def __init__(self, work: ShardedResults, tag: str, shard_size: int) -> None:
        self.work, self.tag, self.shard_size = work, tag, shard_size
        self.rows: dict[str, list[Any]] = {name: [] for name in work.schema}
        self.written = 0

    def add(self, sha: str, value: Any, error: str | None) -> None:
        for name, item in zip(self.work.schema, (sha, value, error)):
            self.rows[name].append(item)
        if len(self.rows["sha256"]) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.rows["sha256"]:
            self.work.write_shard(self.rows, f"{self.tag}-{self.written:05d}")
            self.written += 1
            self.rows = {name: [] for name in self.work.schema}


# ---------------------------------------------------------------- decoding in DataLoader workers
class _ImageFiles(Dataset):
    """Decodes one image per item; a bad file yields its error instead of raising."""

    def __init__(self, items: Sequence[tuple[str, str]], max_pixels: int, draft_size: int | None,
                 max_bytes: int) -> None:
        self.items, self.max_pixels, self.draft_size, self.max_bytes = list(items), max_pixels, draft_size, max_bytes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Image.Image | None, str | None]:
        sha, path = self.items[i]
        loaded = load_rgb(path, self.max_pixels, self.draft_size, self.max_bytes)
        return sha, loaded.image, loaded.error


@dataclass
class Batch:
    shas: list[str]  # images in pixel_values, in order
    pixel_values: torch.Tensor | None
    failed: list[tuple[str, str]]  # (sha256, reason)


class Collate:
    """Runs the preprocessing inside the worker, so only tensors cross processes."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, items: list[tuple[str, Image.Image | None, str | None]]) -> Batch:
        ok = [(sha, im) for sha, im, _ in items if im is not None]
        failed = [(sha, err) for sha, im, err in items if im is None]
        if not ok:
            return Batch([], None, failed)
        shas = [sha for sha, _ in ok]
        try:
            pixels = self.preprocess([im for _, im in ok])
        except Exception:  # noqa: BLE001 - find the image that broke the batch; keep the rest
            shas, tensors = [], []
            for sha, im in ok:
                try:
                    tensors.append(self.preprocess([im]))
                    shas.append(sha)
                except Exception as e:  # noqa: BLE001
                    failed.append((sha, f"preprocessing failed: {type(e).__name__}: {e}"))
            pixels = torch.cat(tensors) if tensors else None
        return Batch(shas, pixels, failed)


def decode_batches(
    items: list[tuple[str, str]],
    root: Path,
    preprocess: Preprocess,
    draft_size: int | None,
    cfg: ImageRunConfig,
) -> Iterator[Batch]:
    """Batches of preprocessed images for ``items`` (sha256, path relative to ``root``)."""
    files = _ImageFiles([(sha, str(root / rel)) for sha, rel in items], cfg.max_image_pixels, draft_size,
                         cfg.max_image_bytes)
    yield from DataLoader(
        files,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=Collate(preprocess),
        prefetch_factor=cfg.prefetch_batches if cfg.num_workers else None,
    )


def process_images(
    items: list[tuple[str, str]],
    root: Path,
    preprocess: Preprocess,
    draft_size: int | None,
    cfg: ImageRunConfig,
    run_model: Callable[[torch.Tensor], list[tuple[Any, str | None]]],
    writer: ShardWriter,
    label: str,
) -> None:
    """Decode ``items`` in batches, run ``run_model`` on each batch's pixels and send every
    image's ``(value, error)`` (or its decoding error) to ``writer``."""
    if not items:
        return
    with progress_bar(len(items), label, "img") as bar:
        for batch in decode_batches(items, root, preprocess, draft_size, cfg):
            for sha, reason in batch.failed:
                writer.add(sha, None, reason)
            if batch.pixel_values is not None:
                for sha, (value, error) in zip(batch.shas, run_model(batch.pixel_values)):
                    writer.add(sha, value, error)
            bar.advance(len(batch.shas) + len(batch.failed))
    writer.flush()


# ---------------------------------------------------------------- the driver
@dataclass(frozen=True)
class RunResult:
    """What one run of a per-image stage did: images processed now and the time it took."""

    processed: int
    seconds: float

    @property
    def images_per_s(self) -> float | None:
        return round(self.processed / self.seconds, 2) if self.processed and self.seconds > 0 else None


def run_image_stage(
    ws: Workspace,
    work: ShardedResults,
    settings: dict[str, Any],
    cfg: ImageRunConfig,
    process: Callable[[list[tuple[str, str]], ShardWriter], None],
    merge: Callable[[pl.DataFrame, pl.DataFrame], None],
    what: str,
) -> RunResult:
    """Plan, split the images not done yet between processes, run ``process`` on each
    process's share, then ``merge(plan, results)`` on the main process and compact.

    Every launched process calls this (see the module docstring); ``process`` gets
    ``(sha256, relative path)`` items and a writer for their results.
    """
    state = process_state()
    if state.is_main_process:
        if work.prepare(settings):
            log.info("resuming: reusing finished results in %s", work.root)
        write_parquet(plan_images(ws, cfg.hash_threads, cfg.max_image_bytes), work.plan)
    state.wait_for_everyone()

    plan = pl.read_parquet(work.plan)
    todo = images_todo(plan, work.results())
    start = time.perf_counter()
    with state.split_between_processes(todo) as mine:
        log.info(
            "process %d of %d: %s %d of %d images on %s",
            state.process_index + 1,
            state.num_processes,
            what,
            len(mine),
            len(todo),
            state.device,
        )
        process(mine, ShardWriter(work, f"{time.time_ns()}-p{state.process_index}", cfg.shard_size))
    state.wait_for_everyone()
    seconds = time.perf_counter() - start
    if state.is_main_process:
        merge(plan, work.results())
        work.compact()
    state.wait_for_everyone()
    return RunResult(len(todo), round(seconds, 2))


def join_results(plan: pl.DataFrame, results: pl.DataFrame) -> pl.DataFrame:
    """The plan (one row per entity and image) with each image's finished result; the result's
    ``error`` becomes ``result_error`` beside the plan's own (unreadable file) ``error``."""
    return plan.join(results.rename({"error": "result_error"}), on="sha256", how="left")


def error_rows(joined: pl.DataFrame, value: str, fallback: str) -> pl.DataFrame:
    """``(entity_type, entity_id, image_path, error)`` of every entity image with no ``value``:
    the file's error, else the image's (decoding, model), else ``fallback``."""
    return (
        joined.filter(pl.col(value).is_null())
        .select(
            "entity_type",
            "entity_id",
            "image_path",
            pl.coalesce("error", "result_error", pl.lit(fallback)).alias("error"),
        )
        .unique(["entity_type", "entity_id", "image_path"])
        .sort("entity_type", "entity_id", "image_path")
    )


def coverage_stats(
    ws: Workspace, output: TableSchema, errors_table: TableSchema, done_key: str
) -> dict[str, Any]:
    """Counts and coverage (share of all pins / products with a row in ``output``) from the outputs.

    ``errors`` counts error rows (images that failed; an entity with several images may
    have several), ``unique_images`` the distinct images behind the output rows
    (``image_sha256`` holds one hash, or several joined by ``,`` for averaged entities).
    """
    out = pl.read_parquet(ws.path(output))
    errors = pl.read_parquet(ws.path(errors_table))
    stats: dict[str, Any] = {"entities": {}, done_key: {}, "errors": {}, "coverage": {}}
    for kind, schema in ENTITY_TABLES:
        if not ws.has(schema):
            continue
        total = read_table(ws, schema).select(pl.len()).collect().item()
        done = out.filter(pl.col("entity_type") == kind).height
        stats["entities"][kind] = total
        stats[done_key][kind] = done
        stats["errors"][kind] = errors.filter(pl.col("entity_type") == kind).height
        stats["coverage"][kind] = round(done / total, 4) if total else 0.0
    stats["unique_images"] = out.get_column("image_sha256").str.split(",").explode().n_unique()
    stats["error_reasons"] = dict(
        errors.group_by(pl.col("error").str.split(":").list.first().alias("reason"))
        .len()
        .sort("len", descending=True)
        .iter_rows()
    )
    return stats
