"""Visual embeddings: a tiny ViT built from a config embeds the tiny world; resume; bad images;
averaging over several images per entity; the bundled EfficientNet-Lite0; CLI exit codes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnisearchsage.cli.app import app, main
from omnisearchsage.contract import PINS, PRODUCTS, VISUAL_EMBEDDINGS, VISUAL_ERRORS, Workspace
from omnisearchsage.enrich import image_stage
from omnisearchsage.enrich import visual as visual_mod
from omnisearchsage.enrich.config import VisualConfig
from omnisearchsage.enrich.image_stage import ShardedResults
from omnisearchsage.enrich.images import load_rgb
from omnisearchsage.enrich.visual import average_by_entity, embed_images, embed_workspace, load_backbone
from omnisearchsage.errors import OmniError

from .tiny_models import tiny_vit as build_tiny_vit

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 32-d ViT and its PIL image processor, saved as a model folder."""
    return str(build_tiny_vit(tmp_path_factory.mktemp("tiny_vit")))


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images passed to the model, per batch."""
    calls: list[int] = []
    real = visual_mod.embed_pixels

    def counting(backbone, pixel_values):
        calls.append(len(pixel_values))
        return real(backbone, pixel_values)

    monkeypatch.setattr(visual_mod, "embed_pixels", counting)
    return calls


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the console-script entry point (the one that turns errors into exit codes)."""
    monkeypatch.setattr(sys, "argv", ["omni", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0)


def _embeddings(ws: Workspace) -> dict[tuple[str, str], np.ndarray]:
    table = pl.read_parquet(ws.path(VISUAL_EMBEDDINGS))
    return {
        (kind, eid): np.asarray(emb, dtype=np.float32)
        for kind, eid, emb in table.select("entity_type", "entity_id", "embedding").iter_rows()
    }


def test_cli_embeds_every_entity_and_each_distinct_image_once(
    tiny_ws_copy: Workspace, tiny_vit: str, embedded: list[int]
) -> None:
    ws = tiny_ws_copy
    args = ["enrich", "visual", "-w", str(ws.root), "--model", tiny_vit, "--workers", "1",
            "--batch-size", "16", "--shard-size", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "coverage: pins 800/800 (100.0%), products 200/200 (100.0%)" in result.output

    table = pl.read_parquet(ws.path(VISUAL_EMBEDDINGS))
    assert table.schema == VISUAL_EMBEDDINGS.polars_schema
    assert table.height == 1000 and table.select("entity_type", "entity_id").is_unique().all()
    assert not pl.read_parquet(ws.path(VISUAL_ERRORS)).height
    distinct = table.get_column("image_sha256").n_unique()
    assert sum(embedded) == distinct < table.height  # pins and products share images
    assert max(embedded) == 16  # batched
    assert table.get_column("model").unique().to_list() == [str(Path(tiny_vit).resolve())]
    matrix = np.stack(table.get_column("embedding").to_numpy())
    assert matrix.shape == (1000, 32)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    # Entities sharing an image share its embedding; different images differ.
    by_sha = table.group_by("image_sha256").agg(pl.col("embedding").first())
    assert by_sha.height == distinct
    assert np.unique(np.stack(by_sha.get_column("embedding").to_numpy()).round(5), axis=0).shape[0] == distinct

    embedded.clear()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sum(embedded) == 0  # everything was finished: nothing is embedded twice
    assert pl.read_parquet(ws.path(VISUAL_EMBEDDINGS)).equals(table)


def test_resume_after_a_kill_embeds_each_image_once_and_matches_an_uninterrupted_run(
    tiny_ws: Workspace, tiny_ws_copy: Workspace, tiny_vit: str, embedded: list[int],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    ws = tiny_ws_copy
    cfg = VisualConfig(model=tiny_vit, num_workers=0, batch_size=25, shard_size=50)
    real_write = ShardedResults.write_shard
    written: list[int] = []

    def killed_on_third_shard(self: ShardedResults, rows: dict, tag: str) -> Path:
        if len(written) == 2:
            raise RuntimeError("killed")
        written.append(len(rows["sha256"]))
        return real_write(self, rows, tag)

    monkeypatch.setattr(ShardedResults, "write_shard", killed_on_third_shard)
    with pytest.raises(RuntimeError, match="killed"):
        embed_workspace(ws, cfg)
    assert not ws.has(VISUAL_EMBEDDINGS) and not ws.has(VISUAL_ERRORS)  # nothing half-written
    assert sum(embedded) == 150  # two shards written, the third lost with the kill
    monkeypatch.setattr(ShardedResults, "write_shard", real_write)

    embedded.clear()
    stats = embed_workspace(ws, cfg)
    assert sum(embedded) == stats["unique_images"] - 100  # only what no finished shard holds
    assert stats["embedded_this_run"] == stats["unique_images"] - 100
    done = pl.read_parquet(ws.visual_work / "done.parquet")
    assert done.height == done.get_column("sha256").n_unique() == stats["unique_images"]

    clean = Workspace(tmp_path / "clean")
    shutil.copytree(tiny_ws.root, clean.root)
    embed_workspace(clean, cfg)
    resumed, uninterrupted = _embeddings(ws), _embeddings(clean)
    assert resumed.keys() == uninterrupted.keys()
    for key, vector in uninterrupted.items():
        np.testing.assert_allclose(resumed[key], vector, atol=1e-5)

    embedded.clear()
    embed_workspace(ws, VisualConfig(model=tiny_vit, num_workers=0, precision="bf16"))
    assert sum(embedded) == stats["unique_images"]  # another precision: old results are not reused


def test_bad_images_become_error_rows_and_the_rest_is_embedded(
    bad_images: tuple[Workspace, dict[str, str | None]], tiny_vit: str
) -> None:
    ws, expected = bad_images
    stats = embed_workspace(
        ws, VisualConfig(model=tiny_vit, num_workers=1, batch_size=4, max_image_pixels=4_000_000)
    )
    errors = dict(pl.read_parquet(ws.path(VISUAL_ERRORS)).select("entity_id", "error").iter_rows())
    done = set(pl.read_parquet(ws.path(VISUAL_EMBEDDINGS)).get_column("entity_id"))
    for pin, reason in expected.items():
        if reason is None:
            assert pin in done and pin not in errors
        else:
            assert errors[pin].startswith(reason), (pin, errors[pin])
    assert stats["coverage"]["pin"] == pytest.approx(6 / 12, abs=1e-4)
    assert stats["error_reasons"]["missing file"] == 1


def test_an_entity_with_several_images_gets_their_mean(
    tiny_ws_copy: Workspace, tiny_vit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Products with a second image row (one shared with a pin, one broken) are averaged."""
    ws = tiny_ws_copy
    (ws.root / "raw/images/broken.png").write_text("not a png")
    pins = pl.read_parquet(ws.path(PINS)).sort("pin_id")
    products = pl.read_parquet(ws.path(PRODUCTS)).sort("product_id")
    first, second = products.get_column("product_id")[:2]
    pin_image = pins.get_column("image_path")[0]
    extra = pl.DataFrame(
        {
            "entity_type": ["product", "product", "product"],
            "entity_id": [first, second, first],
            "image_path": [pin_image, "raw/images/broken.png", pin_image],  # first lists pin_image twice
        }
    )
    real = image_stage.image_entities
    monkeypatch.setattr(image_stage, "image_entities", lambda w: pl.concat([real(w), extra]))
    embed_workspace(ws, VisualConfig(model=tiny_vit, num_workers=0, batch_size=64))

    table = pl.read_parquet(ws.path(VISUAL_EMBEDDINGS))
    assert table.height == 1000  # still one row per entity
    vectors = _embeddings(ws)
    own = load_backbone(tiny_vit, CPU, torch.float32)
    images = [load_rgb(ws.root / p, 10**8).image for p in (products["image_path"][0], pin_image)]
    each = embed_images(own, images)
    np.testing.assert_allclose(vectors[("product", first)], each.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(vectors[("pin", pins["pin_id"][0])], each[1], atol=1e-5)
    hashes = table.filter(pl.col("entity_id") == first).get_column("image_sha256")[0].split(",")
    assert len(hashes) == 2 and hashes == sorted(hashes)
    # The broken second image is an error row; the product keeps its good image's embedding.
    errors = pl.read_parquet(ws.path(VISUAL_ERRORS))
    assert errors.select("entity_id", "image_path").rows() == [(second, "raw/images/broken.png")]
    np.testing.assert_allclose(
        vectors[("product", second)],
        embed_images(own, [load_rgb(ws.root / products["image_path"][1], 10**8).image])[0],
        atol=1e-5,
    )


def test_average_by_entity_counts_each_distinct_image_once() -> None:
    rows = pl.DataFrame(
        {
            "entity_type": ["product", "product", "product", "pin"],
            "entity_id": ["a", "a", "a", "b"],
            "sha256": ["s2", "s1", "s2", "s1"],
            "embedding": [[0.0, 2.0], [4.0, 0.0], [0.0, 2.0], [4.0, 0.0]],
        },
        schema_overrides={"embedding": pl.List(pl.Float32)},
    )
    out = average_by_entity(rows).sort("entity_type")
    assert out.get_column("image_sha256").to_list() == ["s1", "s1,s2"]
    assert out.get_column("embedding").to_list() == [[4.0, 0.0], [2.0, 1.0]]


def test_bundled_efficientnet_lite0_embeds_colours_apart_and_batching_changes_nothing() -> None:
    backbone = load_backbone(None, CPU, torch.float32)
    red, red2, blue = (Image.new("RGB", (64, 48), c) for c in ((220, 30, 30), (225, 35, 25), (30, 30, 220)))
    batch = embed_images(backbone, [red, red2, blue])
    assert batch.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, rtol=1e-5)
    assert batch[0] @ batch[1] > batch[0] @ batch[2]  # near colours are nearer than far ones
    np.testing.assert_allclose(embed_images(backbone, [blue])[0], batch[2], atol=1e-4)


def test_a_clip_folder_plugs_in_with_its_projected_image_features(tmp_path: Path) -> None:
    """Two-tower models embed with get_image_features: the projection's width, not the vision width."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    config = CLIPConfig(
        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 24, "intermediate_size": 48,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        text_config={"vocab_size": 50, "hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    backbone = load_backbone(str(tmp_path), CPU, torch.float32)
    vectors = embed_images(backbone, [Image.new("RGB", (30, 20), (255, 0, 0)), Image.new("RGB", (20, 20))])
    assert vectors.shape == (2, 12)
    assert backbone.draft_size == 16


def test_clear_errors_and_exit_codes(
    tiny_ws_copy: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tiny_ws_copy
    assert _main(monkeypatch, "enrich", "visual", "-w", str(ws.root), "--model", str(tmp_path / "nope")) == 2
    assert _main(monkeypatch, "enrich", "visual", "-w", str(tmp_path / "empty")) == 2
    assert _main(monkeypatch, "enrich", "visual", "-w", str(ws.root), "--batch-size", "0") == 2
    assert not ws.has(VISUAL_EMBEDDINGS)

    monkeypatch.setattr(visual_mod, "lite0_available", lambda: False)
    with pytest.raises(OmniError, match="no visual backbone.*--model DIR"):
        embed_workspace(ws, VisualConfig())
