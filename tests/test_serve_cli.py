"""``omni serve``: export resolution, options → config, and one-line errors (no server started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import ExportLayout
from omnisearchsage.errors import OmniError
from omnisearchsage.serving import launch as service
from omnisearchsage.serving.config import ServeConfig


def _fake_export(root: Path, entity_types: tuple[str, ...] = ("pin", "product")) -> Path:
    """The files ``check_export`` looks for (contents are never loaded here)."""
    (root / "query_encoder").mkdir(parents=True)
    (root / "embeddings").mkdir()
    for t in entity_types:
        ExportLayout(root).embeddings(t).write_bytes(b"")
    (root / "manifest.json").write_text(
        json.dumps({"model_version": "m1", "dim": 8, "entity_types": list(entity_types)})
    )
    return root


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, ServeConfig]]:
    calls: list[tuple[Path, ServeConfig]] = []
    monkeypatch.setattr(service, "run_server", lambda export_dir, cfg: calls.append((export_dir, cfg)))
    return calls


def test_run_name_resolves_to_the_workspace_export_and_options_reach_the_config(
    tmp_path: Path, captured: list[tuple[Path, ServeConfig]]
) -> None:
    export = _fake_export(tmp_path / "runs" / "main" / "export")
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "main",
            "-w",
            str(tmp_path),
            "--port",
            "9001",
            "--workers",
            "3",
            "--cache-ttl",
            "60",
            "--cache-size",
            "500",
            "--index",
            "exact",
        ],
    )
    assert result.exit_code == 0, result.output
    [(export_dir, cfg)] = captured
    assert export_dir == export
    assert (cfg.port, cfg.workers, cfg.cache_ttl_s, cfg.cache_max_entries) == (9001, 3, 60.0, 500)
    assert cfg.host == "127.0.0.1"


def test_a_run_name_wins_over_a_same_named_folder_that_is_no_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: list[tuple[Path, ServeConfig]]
) -> None:
    export = _fake_export(tmp_path / "ws" / "runs" / "bench" / "export")
    (tmp_path / "bench").mkdir()  # e.g. the repository's bench/ folder
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "bench", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert captured[0][0] == export


def test_missing_export_is_one_line_naming_both_places_looked(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "nope", "-w", str(tmp_path)])
    assert isinstance(result.exception, OmniError)
    msg = str(result.exception)
    assert "\n" not in msg and "nope" in msg and str(tmp_path / "runs" / "nope" / "export") in msg


def test_unknown_index_backend_is_a_usage_error(tmp_path: Path, captured: list) -> None:
    result = CliRunner().invoke(app, ["serve", str(_fake_export(tmp_path / "e")), "--index", "annoy"])
    assert result.exit_code == 2 and captured == []


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda e: (e / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda e: (e / "manifest.json").write_text("{not json"), "manifest.json: unreadable"),
        (lambda e: (e / "manifest.json").write_text('{"dim": 8}'), "lacks ['model_version', 'entity_types']"),
        (
            lambda e: (e / "embeddings" / "products.parquet").unlink(),
            "missing ['embeddings/products.parquet']",
        ),
        (lambda e: (e / "query_encoder").rmdir(), "missing ['query_encoder']"),
    ],
)
def test_incomplete_export_fails_before_serving(tmp_path: Path, breakage, message: str) -> None:
    export = _fake_export(tmp_path / "e")
    breakage(export)
    with pytest.raises(OmniError, match=message.replace("[", r"\[").replace("]", r"\]")):
        service.check_export(export)
