"""BLIP captions for every pin and product image, resumable and multi-device.

``caption_workspace`` runs in four steps:

1. **Plan** (main process): every entity's ``image_path`` is hashed (SHA-256 of
   the bytes), so an image shared by several pins or products — or stored twice
   under different names — is captioned once. Unreadable paths become errors here.
2. **Caption** (every process): the unique images not captioned yet are split
   between processes (``accelerate launch`` on several GPUs, or one CPU process);
   a torch ``DataLoader`` decodes them in worker processes while the model runs
   batched ``generate``. Results are written in shards of ``shard_size`` images.
3. **Merge** (main process): finished shards are joined back to the entities and
   written atomically as ``enrich/captions.parquet`` and
   ``enrich/caption_errors.parquet``.
4. **Stats**: coverage (share of pins and products with a caption) and speed.

Resumption. Results are keyed by image hash, not by position, under
``enrich/.captions_work/`` (see :class:`CaptionWork`): a rerun reads every
finished shard and captions only the images none of them holds, so after a
``kill -9`` at most the shard in flight is redone, and each image is captioned
exactly once across the runs. The work folder is also a cache: a later run with
new images captions only those. It is cleared when the model or the generation
settings change, because captions made under other settings must not be mixed in.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import PartialState
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipProcessor
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from omnisearchsage.atomic import write_json, write_parquet
from omnisearchsage.contract import CAPTION_ERRORS, CAPTIONS, PINS, PRODUCTS, TableSchema, Workspace
from omnisearchsage.enrich.config import CaptionConfig
from omnisearchsage.enrich.images import UnreadableImage, load_rgb, sha256_file
from omnisearchsage.errors import OmniError
from omnisearchsage.progress import progress_bar
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)

#: (entity type, raw table) pairs that carry images.
_ENTITY_TABLES: tuple[tuple[str, TableSchema], ...] = (("pin", PINS), ("product", PRODUCTS))
_PLAN_SCHEMA = {
    "entity_type": pl.Utf8,
    "entity_id": pl.Utf8,
    "image_path": pl.Utf8,
    "sha256": pl.Utf8,
    "error": pl.Utf8,
}
_RESULT_SCHEMA = {"sha256": pl.Utf8, "caption": pl.Utf8, "error": pl.Utf8}
_EMPTY_CAPTION = "the model generated an empty caption"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------- model
def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it, else fp16 on a GPU; fp32 on CPU (fp16 is slow there)."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_processor(ref: str | os.PathLike[str]) -> BlipProcessor:
    """The BLIP processor with the PIL image processor and the model's own tokenizer.

    Built from its parts rather than ``BlipProcessor.from_pretrained`` because in
    transformers 5 that picks the torchvision image processor whenever torchvision
    is installed; the PIL one needs no extra dependency and is picklable into
    DataLoader workers.
    """
    return BlipProcessor(
        image_processor=BlipImageProcessorPil.from_pretrained(ref),
        tokenizer=AutoTokenizer.from_pretrained(ref),
    )


def load_captioner(
    ref: str | os.PathLike[str], device: torch.device, dtype: torch.dtype
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Load a BLIP captioner (local directory or hub name) in eval mode on ``device``."""
    try:
        processor = load_processor(ref)
        model = BlipForConditionalGeneration.from_pretrained(ref, dtype=dtype)
    except (OSError, ValueError) as e:
        raise OmniError(f"cannot load the captioner {str(ref)!r}: {e}".splitlines()[0]) from e
    return model.to(device).eval(), processor


def process_state() -> PartialState:
    """accelerate's view of the launched processes (one, or several under `accelerate launch`/torchrun).

    Without CUDA, ``cpu=True`` lets several launched CPU processes form a gloo group
    (accelerate's MULTI_CPU); otherwise each would believe it is alone and caption everything.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def resolve_model(ws: Workspace, model: str | None) -> str:
    """The model to use: ``model`` as given, else the workspace's fine-tuned captioner."""
    if model is not None:
        return model
    default = ws.model_dir("captioner")
    if not (default / "config.json").exists():
        raise OmniError(
            f"no captioner at {default}: pass --model PATH_OR_HUB_NAME "
            "or run `omni enrich finetune-captioner`"
        )
    return str(default)


def model_fingerprint(ref: str) -> str:
    """Identity of a model for the resume cache: a local directory's file names, sizes and
    mtimes (so re-training into the same folder invalidates old captions), else the hub name."""
    path = Path(ref)
    if not path.is_dir():
        return ref
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps([str(path.resolve()), entries]).encode()).hexdigest()


def generate_captions(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    pixel_values: torch.Tensor,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    num_beams: int = 1,
) -> list[str]:
    """Captions for one batch of preprocessed images (batched ``generate``)."""
    with torch.inference_mode():
        ids = model.generate(
            pixel_values=pixel_values.to(model.device, model.dtype),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
        )
    return [c.strip() for c in processor.batch_decode(ids, skip_special_tokens=True)]


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
class _Batch:
    shas: list[str]  # images in pixel_values, in order
    pixel_values: torch.Tensor | None
    failed: list[tuple[str, str]]  # (sha256, reason)


class _Collate:
    """Runs the image processor inside the worker, so only tensors cross processes."""

    def __init__(self, image_processor: BlipImageProcessorPil) -> None:
        self.image_processor = image_processor

    def __call__(self, items: list[tuple[str, Image.Image | None, str | None]]) -> _Batch:
        ok = [(sha, im) for sha, im, _ in items if im is not None]
        failed = [(sha, err) for sha, im, err in items if im is None]
        if not ok:
            return _Batch([], None, failed)
        shas = [sha for sha, _ in ok]
        try:
            pixels = self._pixels([im for _, im in ok])
        except Exception:  # noqa: BLE001 - find the image that broke the batch; caption the rest
            shas, tensors = [], []
            for sha, im in ok:
                try:
                    tensors.append(self._pixels([im]))
                    shas.append(sha)
                except Exception as e:  # noqa: BLE001
                    failed.append((sha, f"preprocessing failed: {type(e).__name__}: {e}"))
            pixels = torch.cat(tensors) if tensors else None
        return _Batch(shas, pixels, failed)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


def image_side(image_processor: BlipImageProcessorPil) -> int | None:
    """The side the model resizes to, so JPEGs can be decoded at a reduced scale (None: unknown)."""
    size = image_processor.size
    sides = [getattr(size, name, None) for name in ("height", "width", "shortest_edge")]
    return max((s for s in sides if s), default=None)


# ---------------------------------------------------------------- resumable work folder
class CaptionWork:
    """Shards of finished results plus a manifest, under ``enrich/.captions_work/``.

    * ``manifest.json`` – the model fingerprint and generation settings the
      results were made with; a mismatch clears the folder.
    * ``plan.parquet`` – this run's entity → image hash table (main process writes,
      all processes read).
    * ``shards/*.parquet`` – ``(sha256, caption, error)`` per image, each written
      atomically as soon as ``shard_size`` images are done.
    * ``done.parquet`` – earlier shards compacted at the end of a run.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
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
            return pl.DataFrame(schema=_RESULT_SCHEMA)
        return pl.concat([pl.read_parquet(f) for f in files]).unique(
            "sha256", keep="first", maintain_order=True
        )

    def write_shard(self, rows: dict[str, list[str | None]], tag: str) -> Path:
        return write_parquet(pl.DataFrame(rows, schema=_RESULT_SCHEMA), self.shards / f"{tag}.parquet")

    def compact(self) -> None:
        """Fold shards into ``done.parquet`` (written before the shards are removed, so a kill in
        between only leaves duplicates, which :meth:`results` drops)."""
        shards = self.shard_files()
        if shards:
            write_parquet(self.results(shards), self.done)
            for p in shards:
                p.unlink()


# ---------------------------------------------------------------- the stage
def caption_workspace(ws: Workspace, cfg: CaptionConfig) -> dict[str, Any]:
    """Caption every pin and product image of ``ws``; write CAPTIONS and CAPTION_ERRORS.

    Safe to interrupt and rerun (see the module docstring). Under ``accelerate
    launch`` every process calls this; images are split between them and the
    main process merges. Returns stats: counts and coverage per entity type,
    unique images, images captioned in this run, images/s.
    """
    state = process_state()
    present = [schema for _, schema in _ENTITY_TABLES if ws.has(schema)]
    if not present:
        raise OmniError(f"no {PINS.relpath} or {PRODUCTS.relpath} in {ws.root}: nothing to caption")
    validate_workspace(ws, tables=[schema.name for schema in present])
    ref = resolve_model(ws, cfg.model)
    device = state.device
    dtype = resolve_dtype(cfg.precision, device)
    model, processor = load_captioner(ref, device, dtype)
    work = CaptionWork(ws.captions_work)
    settings = {
        "model": model_fingerprint(ref),
        "max_new_tokens": cfg.max_new_tokens,
        "min_new_tokens": cfg.min_new_tokens,
        "num_beams": cfg.num_beams,
        "dtype": str(dtype),
        "max_image_pixels": cfg.max_image_pixels,
    }
    if state.is_main_process:
        if work.prepare(settings):
            log.info("resuming: reusing finished captions in %s", work.root)
        write_parquet(_plan(ws, cfg), work.plan)
    state.wait_for_everyone()

    plan = pl.read_parquet(work.plan)
    todo = _todo(plan, work.results())
    start = time.perf_counter()
    with state.split_between_processes(todo) as mine:
        log.info(
            "process %d of %d: captioning %d of %d images on %s (%s)",
            state.process_index + 1,
            state.num_processes,
            len(mine),
            len(todo),
            device,
            str(dtype).removeprefix("torch."),
        )
        writer = _ShardWriter(work, f"{time.time_ns()}-p{state.process_index}", cfg.shard_size)
        _caption_images(mine, ws.root, model, processor, cfg, writer)
    state.wait_for_everyone()
    seconds = time.perf_counter() - start
    if state.is_main_process:
        _merge(ws, plan, work, _model_name(ws, ref))
    state.wait_for_everyone()
    stats = caption_stats(ws)
    stats.update(
        model=ref,
        captioned_this_run=len(todo),
        seconds=round(seconds, 2),
        images_per_s=round(len(todo) / seconds, 2) if todo and seconds > 0 else None,
    )
    return stats


def _entities(ws: Workspace) -> pl.DataFrame:
    """``(entity_type, entity_id, image_path)`` of every pin and product that has an image."""
    frames = [
        read_table(ws, schema)
        .select(pl.lit(kind).alias("entity_type"), pl.col(schema.key[0]).alias("entity_id"), "image_path")
        .filter(pl.col("image_path").is_not_null() & (pl.col("image_path").str.strip_chars() != ""))
        for kind, schema in _ENTITY_TABLES
        if ws.has(schema)
    ]
    return pl.concat(frames).collect()


def _plan(ws: Workspace, cfg: CaptionConfig) -> pl.DataFrame:
    """Entities joined to the SHA-256 of their image file (hashed once per distinct path)."""
    entities = _entities(ws)
    paths = entities.get_column("image_path").unique().sort().to_list()

    def digest(rel: str) -> tuple[str, str | None, str | None]:
        try:
            return rel, sha256_file(ws.root / rel, cfg.max_image_bytes), None
        except FileNotFoundError:
            return rel, None, "missing file"
        except UnreadableImage as e:  # a directory, a FIFO, a device, too large
            return rel, None, f"unreadable file: {e}"
        except OSError as e:  # no permission, an I/O error
            return rel, None, f"unreadable file: {type(e).__name__}: {e.strerror or e}"

    rows: list[tuple[str, str | None, str | None]] = []
    with (
        progress_bar(len(paths), "hashing images", "file") as bar,
        concurrent.futures.ThreadPoolExecutor(cfg.hash_threads) as pool,
    ):
        for row in pool.map(digest, paths):
            rows.append(row)
            bar.advance()
    hashes = pl.DataFrame(
        rows, schema={"image_path": pl.Utf8, "sha256": pl.Utf8, "error": pl.Utf8}, orient="row"
    )
    return entities.join(hashes, on="image_path", how="left").select(list(_PLAN_SCHEMA)).cast(_PLAN_SCHEMA)


def _todo(plan: pl.DataFrame, done: pl.DataFrame) -> list[tuple[str, str]]:
    """Distinct image hashes with no finished result, with one path each, in a stable order."""
    todo = (
        plan.filter(pl.col("sha256").is_not_null())
        .group_by("sha256")
        .agg(pl.col("image_path").min())
        .join(done.select("sha256"), on="sha256", how="anti")
        .sort("sha256")
    )
    return list(zip(todo.get_column("sha256").to_list(), todo.get_column("image_path").to_list()))


class _ShardWriter:
    """Buffers per-image results and writes a shard each time ``shard_size`` are done."""

    def __init__(self, work: CaptionWork, tag: str, shard_size: int) -> None:
        self.work, self.tag, self.shard_size = work, tag, shard_size
        self.rows: dict[str, list[str | None]] = {name: [] for name in _RESULT_SCHEMA}
        self.written = 0

    def add(self, sha: str, caption: str | None, error: str | None) -> None:
        for name, value in zip(_RESULT_SCHEMA, (sha, caption, error)):
            self.rows[name].append(value)
        if len(self.rows["sha256"]) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.rows["sha256"]:
            self.work.write_shard(self.rows, f"{self.tag}-{self.written:05d}")
            self.written += 1
            self.rows = {name: [] for name in _RESULT_SCHEMA}


def _caption_images(
    items: list[tuple[str, str]],
    root: Path,
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    cfg: CaptionConfig,
    writer: _ShardWriter,
) -> None:
    """Caption ``items`` (sha256, path relative to ``root``); results go to ``writer``."""
    if not items:
        return
    files = _ImageFiles(
        [(sha, str(root / rel)) for sha, rel in items],
        cfg.max_image_pixels,
        image_side(processor.image_processor),
        cfg.max_image_bytes,
    )
    loader = DataLoader(
        files,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=_Collate(processor.image_processor),
        prefetch_factor=cfg.prefetch_batches if cfg.num_workers else None,
    )
    with progress_bar(len(items), "captions", "img") as bar:
        batch: _Batch
        for batch in loader:
            for sha, reason in batch.failed:
                writer.add(sha, None, reason)
            if batch.pixel_values is not None:
                captions = generate_captions(
                    model,
                    processor,
                    batch.pixel_values,
                    cfg.max_new_tokens,
                    cfg.min_new_tokens,
                    cfg.num_beams,
                )
                for sha, caption in zip(batch.shas, captions):
                    writer.add(sha, caption or None, None if caption else _EMPTY_CAPTION)
            bar.advance(len(batch.shas) + len(batch.failed))
    writer.flush()


def _model_name(ws: Workspace, ref: str) -> str:
    """The ``model`` column: a path inside the workspace relative to it (portable), else as given."""
    path = Path(ref)
    if path.is_dir():
        try:
            return str(path.resolve().relative_to(ws.root.resolve()))
        except ValueError:
            return str(path.resolve())
    return ref


def _merge(ws: Workspace, plan: pl.DataFrame, work: CaptionWork, model_name: str) -> None:
    """Join finished results to the entities; write both outputs atomically; compact the shards."""
    joined = plan.join(work.results().rename({"error": "result_error"}), on="sha256", how="left")
    captions = (
        joined.filter(pl.col("caption").is_not_null())
        .select(
            "entity_type",
            "entity_id",
            pl.col("sha256").alias("image_sha256"),
            "caption",
            pl.lit(model_name).alias("model"),
        )
        .sort("entity_type", "entity_id")
    )
    errors = (
        joined.filter(pl.col("caption").is_null())
        .select(
            "entity_type",
            "entity_id",
            "image_path",
            pl.coalesce("error", "result_error", pl.lit("not captioned")).alias("error"),
        )
        .sort("entity_type", "entity_id")
    )
    write_parquet(captions.cast(CAPTIONS.polars_schema), ws.path(CAPTIONS))
    write_parquet(errors.cast(CAPTION_ERRORS.polars_schema), ws.path(CAPTION_ERRORS))
    work.compact()


def caption_stats(ws: Workspace) -> dict[str, Any]:
    """Counts and coverage (share of all pins / products with a caption) from the outputs."""
    captions = pl.read_parquet(ws.path(CAPTIONS))
    errors = pl.read_parquet(ws.path(CAPTION_ERRORS))
    stats: dict[str, Any] = {"entities": {}, "captioned": {}, "errors": {}, "coverage": {}}
    for kind, schema in _ENTITY_TABLES:
        if not ws.has(schema):
            continue
        total = read_table(ws, schema).select(pl.len()).collect().item()
        done = captions.filter(pl.col("entity_type") == kind).height
        stats["entities"][kind] = total
        stats["captioned"][kind] = done
        stats["errors"][kind] = errors.filter(pl.col("entity_type") == kind).height
        stats["coverage"][kind] = round(done / total, 4) if total else 0.0
    stats["unique_images"] = captions.get_column("image_sha256").n_unique()
    stats["error_reasons"] = dict(
        errors.group_by(pl.col("error").str.split(":").list.first().alias("reason"))
        .len()
        .sort("len", descending=True)
        .iter_rows()
    )
    return stats
