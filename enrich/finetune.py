"""Fine-tune a BLIP captioner on (image, alt text) pairs, offline.

No pretrained BLIP weights can be downloaded on an air-gapped machine, yet the
captions stage needs a captioner. :func:`finetune_captioner` trains one on the
pins that carry a human description of their image (``pins.alt_text``):

* with ``base_model`` (a local directory or hub name) the pretrained BLIP and its
  processor are fine-tuned;
* without, :func:`build_small_blip` builds a small BLIP from a ``BlipConfig`` with
  a WordPiece tokenizer trained on the alt texts (``tokenizers``), small enough to
  learn the sample world's images in minutes on 2 CPU cores.

A fraction of the *images* (not pairs: an image with several descriptions stays
on one side) is held apart. After training, the model captions them and the
quality is measured two ways: **word overlap** (unigram F1 of the caption against
the best-matching reference description, averaged over images) and, on the
synthetic world, the **topic hit rate** (share of captions that name the image's
true topic, from ``WS/truth/pins.parquet``, which training never reads). Both
are reported next to a baseline that ignores the image: the most frequent
training description used as every caption.

The model, processor and tokenizer are saved atomically to
``ws.model_dir("captioner")`` with the metrics in ``finetune.json``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipProcessor,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from omnisearchsage.atomic import atomic_path, write_json
from omnisearchsage.contract import PINS, Workspace
from omnisearchsage.enrich.captions import generate_captions, load_captioner
from omnisearchsage.enrich.config import FinetuneConfig
from omnisearchsage.enrich.image_stage import image_side, process_state
from omnisearchsage.enrich.images import load_rgb
from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import normalize
from omnisearchsage.progress import progress_bar
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)

METRICS_FILE = "finetune.json"
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Fewest usable (image, text) pairs: one to hold out, the rest to train on.
_MIN_PAIRS = 2


def build_small_blip(
    texts: Sequence[str], cfg: FinetuneConfig
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A randomly initialised BLIP of ``cfg``'s sizes, with a WordPiece tokenizer trained on ``texts``.

    The decoder starts a caption with ``[CLS]`` and ends it with ``[SEP]`` (BLIP's
    pretrained checkpoints use a separate ``[DEC]`` token; one token fewer changes
    nothing for a model trained from scratch), and ``[PAD]`` pads.
    """
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        list(texts),
        vocab_size=cfg.vocab_size,
        min_frequency=1,
        special_tokens=list(_SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,  # the wrapped `tokenizers.Tokenizer`; no public accessor
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=cfg.text_max_positions,
    )
    image_processor = BlipImageProcessorPil(size={"height": cfg.image_size, "width": cfg.image_size})
    config = BlipConfig(
        vision_config={
            "hidden_size": cfg.vision_hidden,
            "intermediate_size": cfg.mlp_ratio * cfg.vision_hidden,
            "num_hidden_layers": cfg.vision_layers,
            "num_attention_heads": cfg.attention_heads,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.text_hidden,
            "intermediate_size": cfg.mlp_ratio * cfg.text_hidden,
            "num_hidden_layers": cfg.text_layers,
            "num_attention_heads": cfg.attention_heads,
            "max_position_embeddings": cfg.text_max_positions,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    torch.manual_seed(cfg.seed)
    model = BlipForConditionalGeneration(config)
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def finetune_captioner(ws: Workspace, cfg: FinetuneConfig, out: Path | None = None) -> Path:
    """Train a captioner on ``ws``'s (image, alt text) pairs; save it to ``out`` (default models/captioner).

    Returns the model directory; its ``finetune.json`` holds the training and
    held-out quality figures (see the module docstring).
    """
    validate_workspace(ws, tables=[PINS.name])
    out = out or ws.model_dir("captioner")
    pairs = _pairs(ws, cfg)
    if pairs.get_column("image").n_unique() < _MIN_PAIRS:
        raise OmniError(
            f"{ws.path(PINS)}: need pins with an alt_text and an image_path for at least {_MIN_PAIRS} "
            f"distinct images to fine-tune a captioner, found {pairs.get_column('image').n_unique()}"
        )
    train, held = _split(pairs, cfg)
    if cfg.base_model is None:
        model, processor = build_small_blip(train.get_column("alt_text").to_list(), cfg)
    else:
        model, processor = load_captioner(cfg.base_model, torch.device("cpu"), torch.float32)
    model.to(process_state().device)
    pixels, readable = _pixels(ws, pairs, processor, cfg)
    train, held = train.filter(pl.col("image").is_in(readable)), held.filter(pl.col("image").is_in(readable))
    if train.is_empty() or held.is_empty():
        raise OmniError(
            f"{ws.path(PINS)}: too few readable images (column image_path) to fine-tune and evaluate"
        )

    fit = _train(model, processor, pixels, train, cfg)
    quality = _evaluate(ws, model, processor, pixels, train, held, cfg)
    images = pairs.get_column("image").n_unique()
    metrics = {
        "pairs": train.height + held.height,
        "images": len(readable),
        "unreadable_images": images - len(readable),
        "train_pairs": train.height,
        "heldout_images": held.get_column("image").n_unique(),
        "base_model": cfg.base_model,
        "parameters": sum(p.numel() for p in model.parameters()),
        **fit,
        **quality,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(metrics, tmp / METRICS_FILE)
    log.info("captioner saved to %s", out)
    return out


def _pairs(ws: Workspace, cfg: FinetuneConfig) -> pl.DataFrame:
    """``(pin_id, image_path, alt_text, image)`` of pins with both; ``image`` numbers the distinct
    images, of which at most ``max_images`` (a seeded sample) are kept."""
    pairs = (
        read_table(ws, PINS)
        .select("pin_id", "image_path", pl.col("alt_text").str.replace_all(r"\s+", " ").str.strip_chars())
        .filter(pl.col("image_path").is_not_null() & (pl.col("alt_text").fill_null("") != ""))
        .sort("pin_id")
        .collect()
    )
    paths = pairs.get_column("image_path").unique().sort()
    if len(paths) > cfg.max_images:
        paths = paths.sample(cfg.max_images, seed=cfg.seed).sort()
    index = pl.DataFrame({"image_path": paths, "image": np.arange(len(paths), dtype=np.int64)})
    return pairs.join(index, on="image_path", how="inner")


def _pixels(
    ws: Workspace, pairs: pl.DataFrame, processor: BlipProcessor, cfg: FinetuneConfig
) -> tuple[torch.Tensor, list[int]]:
    """Every image decoded and preprocessed once (the model sees each many times), in chunks into
    one fp16 tensor indexed by ``image``; also the ids of the readable images."""
    images = pairs.select("image", "image_path").unique().sort("image")
    pixels: torch.Tensor | None = None
    readable: list[int] = []
    side = image_side(processor.image_processor)
    with progress_bar(images.height, "loading images", "img") as bar:
        for chunk in images.iter_slices(cfg.batch_size):
            loaded = [
                (i, load_rgb(ws.root / rel, cfg.max_image_pixels, side)) for i, rel in chunk.iter_rows()
            ]
            ok = [(i, r.image) for i, r in loaded if r.ok]
            if ok:
                batch = processor.image_processor(images=[im for _, im in ok], return_tensors="pt")
                values = batch["pixel_values"]
                if pixels is None:
                    pixels = torch.zeros((images.height, *values.shape[1:]), dtype=torch.float16)
                pixels[[i for i, _ in ok]] = values.to(torch.float16)
                readable += [i for i, _ in ok]
            bar.advance(chunk.height)
    if pixels is None:
        raise OmniError(
            f"{ws.path(PINS)}: no image of a pin with an alt_text is readable (column image_path)"
        )
    return pixels, readable


def _split(pairs: pl.DataFrame, cfg: FinetuneConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out ``holdout_fraction`` of the images (at least one, at most ``max_holdout``)."""
    image_ids = pairs.get_column("image").unique().sort().to_numpy()
    rng = np.random.default_rng(cfg.seed)
    n_held = min(max(1, round(cfg.holdout_fraction * len(image_ids))), cfg.max_holdout, len(image_ids) - 1)
    held_ids = rng.permutation(image_ids)[:n_held]
    is_held = pl.col("image").is_in(held_ids.tolist())
    return pairs.filter(~is_held), pairs.filter(is_held)


def _epochs(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Batches of row indices, reshuffled every epoch, forever."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def _augment(pixels: torch.Tensor, hflip_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random share of the batch left-right: a mirrored photo has the same description,
    and with few images per description it keeps the model from memorising pixels."""
    flip = torch.rand(len(pixels), generator=generator) < hflip_prob
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def _set_lr(optimizer: torch.optim.Optimizer, cfg: FinetuneConfig, step: int, elapsed: float) -> None:
    """Linear warm-up, then cosine decay to 0 over whichever ends first: ``steps`` or the time budget.

    Hand-written because the schedulers in torch and transformers count steps only,
    and under a time budget the number of steps is unknown in advance: decaying over
    ``steps`` would leave the learning rate high when time runs out.
    """
    progress = min(1.0, max(step / cfg.steps, elapsed / cfg.time_budget_s))
    scale = min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1.0 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * scale


def _train(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    pixels: torch.Tensor,
    train: pl.DataFrame,
    cfg: FinetuneConfig,
) -> dict[str, Any]:
    """AdamW with warm-up + cosine decay until ``steps`` or ``time_budget_s``; returns loss and timing."""
    tokenizer = processor.tokenizer
    enc = tokenizer(
        train.get_column("alt_text").to_list(),
        padding="longest",
        truncation=True,
        max_length=cfg.max_text_tokens,
        return_tensors="pt",
    )
    input_ids, attention = enc["input_ids"], enc["attention_mask"]
    # generate() starts every caption with the decoder's BOS; train on the same first token.
    input_ids[:, 0] = model.config.text_config.bos_token_id
    image_of_row = torch.from_numpy(train.get_column("image").to_numpy(writable=True))
    device = model.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    with progress_bar(cfg.steps, "fine-tuning captioner", "step") as bar:
        for rows in _epochs(train.height, cfg.batch_size, cfg.seed):
            _set_lr(optimizer, cfg, step, time.perf_counter() - start)
            mask = attention[rows]
            width = int(mask.sum(1).max())
            ids = input_ids[rows, :width]
            mask = mask[:, :width]
            loss = model(
                pixel_values=_augment(pixels[image_of_row[rows]], cfg.hflip_prob, generator).to(
                    device, model.dtype
                ),
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                labels=ids.masked_fill(mask == 0, -100).to(device),
            ).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.advance(1, status=f"loss {loss.item():.3f}")
            if step >= cfg.steps or time.perf_counter() - start > cfg.time_budget_s:
                break
    model.eval()
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": step,
        "train_seconds": round(seconds, 2),
        "steps_per_s": round(step / seconds, 2),
        "first_loss": round(losses[0], 4),
        "final_loss": round(float(np.mean(tail)), 4),
        "stopped_by": "steps" if step >= cfg.steps else "time budget",
    }


def _words(text: str) -> set[str]:
    return set(normalize(text).replace(".", " ").replace(",", " ").split())


def _f1(caption: str, reference: str) -> float:
    got, want = _words(caption), _words(reference)
    hit = len(got & want)
    return 0.0 if not hit else 2 * hit / (len(got) + len(want))


def _evaluate(
    ws: Workspace,
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    pixels: torch.Tensor,
    train: pl.DataFrame,
    held: pl.DataFrame,
    cfg: FinetuneConfig,
) -> dict[str, Any]:
    """Caption the held-out images; score against their references and, if known, their true topics."""
    refs = held.group_by("image").agg("alt_text", pl.col("pin_id").first()).sort("image")
    image_ids = refs.get_column("image").to_list()
    captions: list[str] = []
    batches = math.ceil(len(image_ids) / cfg.batch_size)
    for i in range(batches):
        chunk = image_ids[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        captions += generate_captions(model, processor, pixels[chunk], cfg.eval_max_new_tokens)
    baseline = train.group_by("alt_text").len().sort(["len", "alt_text"], descending=[True, False]).item(0, 0)
    references = refs.get_column("alt_text").to_list()
    result: dict[str, Any] = {
        "word_overlap_f1": round(
            float(np.mean([max(_f1(c, r) for r in rs) for c, rs in zip(captions, references)])), 4
        ),
        "baseline_caption": baseline,
        "baseline_word_overlap_f1": round(
            float(np.mean([max(_f1(baseline, r) for r in rs) for rs in references])), 4
        ),
        "examples": [{"caption": c, "reference": rs[0]} for c, rs in zip(captions[:5], references[:5])],
    }
    result.update(_topic_hits(ws, refs.get_column("pin_id").to_list(), captions, baseline))
    return result


def _topic_hits(ws: Workspace, pin_ids: list[str], captions: list[str], baseline: str) -> dict[str, Any]:
    """How often the held-out captions name the image's true words (synthetic world only).

    ``WS/truth/pins.parquet`` (written by the sample generator, absent on real data)
    holds each pin's ``topic`` and ``image_words`` (fill colour, pattern, shape, background,
    topic and concept words). Reported: the share of captions naming every word of
    the topic, the mean share of image words named, and the same for the baseline.
    """
    truth_path = ws.truth / f"{PINS.name}.parquet"
    if not truth_path.exists():
        return {}
    truth = pl.DataFrame({"pin_id": pin_ids, "caption": captions}).join(
        pl.read_parquet(truth_path, columns=["pin_id", "topic", "image_words"]), on="pin_id", how="left"
    )
    if truth.get_column("topic").null_count():
        return {}

    def scores(texts: list[str]) -> tuple[float, float]:
        said = [_words(t) for t in texts]
        topic = [set(normalize(t).split()) <= w for t, w in zip(truth.get_column("topic").to_list(), said)]
        recall = [
            len(set(map(normalize, words)) & w) / len(words)
            for words, w in zip(truth.get_column("image_words").to_list(), said)
        ]
        return round(float(np.mean(topic)), 4), round(float(np.mean(recall)), 4)

    topic_rate, word_recall = scores(captions)
    base_topic, base_recall = scores([baseline] * len(captions))
    return {
        "topic_hit_rate": topic_rate,
        "image_word_recall": word_recall,
        "baseline_topic_hit_rate": base_topic,
        "baseline_image_word_recall": base_recall,
    }
