"""Captions: a tiny BLIP built from a config captions the tiny world; bad images; resume; fine-tuning."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import CAPTION_ERRORS, CAPTIONS, PINS, PRODUCTS, Workspace
from omnisearchsage.enrich import captions as captions_mod
from omnisearchsage.enrich.captions import CaptionWork, caption_workspace, load_captioner
from omnisearchsage.enrich.config import CaptionConfig, FinetuneConfig
from omnisearchsage.enrich.finetune import METRICS_FILE, build_small_blip
from omnisearchsage.enrich.image_stage import Collate
from omnisearchsage.enrich.images import load_rgb
from omnisearchsage.errors import OmniError

runner = CliRunner()
TINY = FinetuneConfig(
    image_size=16,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=32,
    text_layers=1,
    attention_heads=2,
    mlp_ratio=2,
    vocab_size=200,
    text_max_positions=16,
)


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised BLIP small enough to caption hundreds of images in a second."""
    model, processor = build_small_blip(["a red star on a white background", "two blue rings, coffee"], TINY)
    out = tmp_path_factory.mktemp("tiny_blip")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images passed to the model, per generate call."""
    calls: list[int] = []
    real = captions_mod.generate_captions

    def counting(model, processor, pixel_values, *args, **kwargs):
        calls.append(len(pixel_values))
        return real(model, processor, pixel_values, *args, **kwargs)

    monkeypatch.setattr(captions_mod, "generate_captions", counting)
    return calls


def _with_image(ws: Workspace) -> int:
    return sum(
        pl.read_parquet(ws.path(t)).get_column("image_path").is_not_null().sum() for t in (PINS, PRODUCTS)
    )


def test_cli_captions_every_entity_and_each_distinct_image_once(
    tiny_ws_copy: Workspace, tiny_blip: str, generated: list[int]
) -> None:
    ws = tiny_ws_copy
    # The same bytes under a second name must not be captioned twice.
    products = pl.read_parquet(ws.path(PRODUCTS))
    original = products.get_column("image_path")[0]
    shutil.copy(ws.root / original, ws.root / "raw/images/copy-of-first.png")
    products.with_columns(
        pl.when(pl.col("product_id") == products["product_id"][1])
        .then(pl.lit("raw/images/copy-of-first.png"))
        .otherwise("image_path")
        .alias("image_path")
    ).write_parquet(ws.path(PRODUCTS))

    args = [
        "enrich",
        "captions",
        "-w",
        str(ws.root),
        "--model",
        tiny_blip,
        "--workers",
        "1",
        "--batch-size",
        "16",
        "--shard-size",
        "40",
        "--max-new-tokens",
        "4",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "coverage: pins 800/800 (100.0%), products 200/200 (100.0%)" in result.output

    caps = pl.read_parquet(ws.path(CAPTIONS))
    assert caps.height == _with_image(ws) == 1000
    assert caps.select("entity_type", "entity_id").is_unique().all()
    assert not pl.read_parquet(ws.path(CAPTION_ERRORS)).height
    distinct = caps.get_column("image_sha256").n_unique()
    assert sum(generated) == distinct < caps.height  # pins and products share images
    by_id = dict(
        caps.filter(pl.col("entity_type") == "product").select("entity_id", "image_sha256").iter_rows()
    )
    assert by_id[products["product_id"][1]] == by_id[products["product_id"][0]]

    generated.clear()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sum(generated) == 0  # everything was finished: nothing is captioned twice
    assert pl.read_parquet(ws.path(CAPTIONS)).equals(caps)


def test_bad_images_become_error_rows_and_the_rest_is_captioned(
    bad_images: tuple[Workspace, dict[str, str | None]], tiny_blip: str
) -> None:
    ws, expected = bad_images
    stats = caption_workspace(
        ws,
        CaptionConfig(
            model=tiny_blip, num_workers=1, batch_size=4, max_new_tokens=3, max_image_pixels=4_000_000
        ),
    )
    errors = dict(pl.read_parquet(ws.path(CAPTION_ERRORS)).select("entity_id", "error").iter_rows())
    captioned = set(pl.read_parquet(ws.path(CAPTIONS)).get_column("entity_id"))
    for pin, reason in expected.items():
        if reason is None:
            assert pin in captioned and pin not in errors
        else:
            assert errors[pin].startswith(reason), (pin, errors[pin])
    assert stats["coverage"]["pin"] == pytest.approx(6 / 12, abs=1e-4)


def test_unusual_images_are_normalised_to_upright_rgb(bad_images: tuple[Workspace, dict[str, str | None]]) -> None:
    img = bad_images[0].root / "raw" / "images"

    def load(name: str) -> Image.Image:
        loaded = load_rgb(img / name, max_pixels=4_000_000)
        assert loaded.ok and loaded.image.mode == "RGB", loaded.error
        return loaded.image

    assert load("rotated.jpg").size == (30, 60)  # EXIF orientation applied
    assert load("palette.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert load("grey16.png").getpixel((0, 0)) == (155, 155, 155)  # 40000/65535 scaled, not clipped to 255
    assert load("animated.gif").getpixel((5, 5)) == (255, 0, 0)  # the first frame
    r, g, b = load("cmyk.jpg").getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    assert load_rgb(img / "bomb.png", max_pixels=4_000_000).error.startswith("decompression bomb guard")


def test_resume_after_a_crash_captions_each_image_exactly_once(
    tiny_ws_copy: Workspace, tiny_blip: str, generated: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tiny_ws_copy
    cfg = CaptionConfig(model=tiny_blip, num_workers=0, batch_size=25, shard_size=50, max_new_tokens=3)
    real_write = CaptionWork.write_shard
    written: list[int] = []

    def crash_on_third_shard(self: CaptionWork, rows: dict, tag: str) -> Path:
        if len(written) == 2:
            raise RuntimeError("killed")
        written.append(len(rows["sha256"]))
        return real_write(self, rows, tag)

    monkeypatch.setattr(CaptionWork, "write_shard", crash_on_third_shard)
    with pytest.raises(RuntimeError, match="killed"):
        caption_workspace(ws, cfg)
    assert not ws.has(CAPTIONS) and not ws.has(CAPTION_ERRORS)  # nothing half-written
    assert len(CaptionWork(ws.captions_work).shard_files()) == 2
    first_run = sum(generated)
    monkeypatch.setattr(CaptionWork, "write_shard", real_write)

    generated.clear()
    stats = caption_workspace(ws, cfg)
    distinct = stats["unique_images"]
    assert sum(generated) == distinct - 100  # only what no finished shard holds
    assert first_run == 150  # the crashed shard's 50 images are the only repeated work
    done = pl.read_parquet(ws.captions_work / "done.parquet")
    assert done.height == done.get_column("sha256").n_unique() == distinct
    assert pl.read_parquet(ws.path(CAPTIONS)).height == 1000

    generated.clear()
    caption_workspace(ws, CaptionConfig(model=tiny_blip, num_workers=0, max_new_tokens=4))
    assert sum(generated) == distinct  # other generation settings: old captions are not reused


def test_finetune_cli_writes_a_captioner_that_captions_by_default(tiny_ws_copy: Workspace) -> None:
    ws = tiny_ws_copy
    result = runner.invoke(app, ["enrich", "captions", "-w", str(ws.root)])
    assert isinstance(result.exception, OmniError) and "finetune-captioner" in str(result.exception)

    result = runner.invoke(
        app,
        [
            "enrich",
            "finetune-captioner",
            "-w",
            str(ws.root),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--image-size",
            "16",
            "--hidden",
            "32",
            "--layers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out quality" in result.output and "topic named in" in result.output
    model_dir = ws.model_dir("captioner")
    metrics = pl.read_json(model_dir / METRICS_FILE)
    assert metrics["steps"][0] == 3 and metrics["heldout_images"][0] >= 1
    from transformers import AutoTokenizer, BlipProcessor

    assert AutoTokenizer.from_pretrained(model_dir).cls_token == "[CLS]"  # the offline-built tokenizer loads
    BlipProcessor.from_pretrained(model_dir)
    model, _ = load_captioner(model_dir, torch.device("cpu"), torch.float32)
    assert model.config.vision_config.image_size == 16

    result = runner.invoke(
        app, ["enrich", "captions", "-w", str(ws.root), "--workers", "0", "--max-new-tokens", "4"]
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(ws.path(CAPTIONS)).get_column("model").unique().to_list() == ["models/captioner"]


def test_an_image_the_processor_rejects_costs_only_itself() -> None:
    def picky(images: list[Image.Image]) -> torch.Tensor:
        if any(im.size == (13, 13) for im in images):
            raise ValueError("unsupported size")
        return torch.zeros(len(images), 3, 4, 4)

    batch = Collate(picky)(
        [
            ("a", Image.new("RGB", (20, 20)), None),
            ("b", Image.new("RGB", (13, 13)), None),
            ("c", Image.new("RGB", (30, 10)), None),
            ("d", None, "missing file"),
        ]
    )
    assert batch.shas == ["a", "c"] and batch.pixel_values.shape[0] == 2
    assert dict(batch.failed) == {
        "b": "preprocessing failed: ValueError: unsupported size",
        "d": "missing file",
    }
