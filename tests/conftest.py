"""Shared fixtures: a generated tiny sample world every stage's tests run on.

``tiny_ws`` is generated once per test session (seed 0, about a second) and must not be
modified; tests that write into a workspace or break a table use ``tiny_ws_copy``.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

# No test may reach the network: transformers/hub lookups must fail fast, not download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Spinning OpenMP waits make torch 5-40x slower when the cores are shared (CI, busy laptops).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from omnisearchsage.contract import PINS, Workspace
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.sample_data.generate import generate_world
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.loop import train


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world (seed 0): 800 pins, 200 products, 20k engagements. Read-only."""
    root = tmp_path_factory.mktemp("tiny_world")
    generate_world(root, "tiny", seed=0, overwrite=True)
    return Workspace(root)


@pytest.fixture(scope="module")
def two_step_run(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A copy of the tiny world with features and a real two-step run ``r``, exported (one per test module)."""
    ws = Workspace(tmp_path_factory.mktemp("two_step_run") / "ws")
    shutil.copytree(tiny_ws.root, ws.root)
    build_features(ws, FeatureConfig())
    train(ws, TrainConfig(steps=2, batch_size=32, checkpoint_every=2, warmup_steps=1), "r")
    export_run(ws, "r")
    return ws


@pytest.fixture
def tiny_ws_copy(tiny_ws: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the tiny world, for tests that write into it or break it."""
    dst = tmp_path / "ws"
    shutil.copytree(tiny_ws.root, dst)
    return Workspace(dst)


@pytest.fixture
def bad_images(tmp_path: Path) -> tuple[Workspace, dict[str, str | None]]:
    """A pins-only workspace of broken and unusual images, for the per-image stages (captions,
    visual embeddings): pin id -> the start of the error it must get (None: must be processed)."""
    root = tmp_path / "bad_images"
    img = root / "raw" / "images"
    img.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 20, 20)).save(img / "ok.jpg")
    (img / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (img / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (img / "text.jpg").write_text("this is not a photo\n")
    Image.new("1", (3000, 3000)).save(img / "bomb.png")  # 9 MP canvas in a few kB
    (img / "a_directory.jpg").mkdir()
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(img / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)).save(img / "grey16.png")
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.save(img / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    Image.new("RGB", (60, 30), (0, 0, 255)).save(img / "rotated.jpg", exif=exif)
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(img / "animated.gif", save_all=True, append_images=frames[1:])
    expected = {
        "ok": None,
        "zero": "empty file",
        "truncated": "corrupt image",
        "text": "not an image",
        "bomb": "decompression bomb guard",
        "a_directory": "unreadable file",
        "missing": "missing file",
        "cmyk": None,
        "grey16": None,
        "palette": None,
        "rotated": None,
        "animated": None,
    }
    names = {p.stem: f"raw/images/{p.name}" for p in img.iterdir()} | {"missing": "raw/images/missing.jpg"}
    pl.DataFrame({"pin_id": list(expected), "image_path": [names[k] for k in expected]}).write_parquet(
        root / PINS.relpath
    )
    return Workspace(root), expected
