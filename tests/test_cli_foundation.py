"""The foundation commands through the real CLI: --version, --help, sample, validate, error exits."""
from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from omnisearchsage import __version__
from omnisearchsage.cli.app import app, main
from omnisearchsage.contract import PINS, Workspace
from omnisearchsage.errors import OmniError

runner = CliRunner()
#: Wide enough that rich does not wrap help text mid-phrase.
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the console-script entry point (the one that turns errors into exit codes)."""
    monkeypatch.setattr(sys, "argv", ["omni", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0)


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"omni {__version__}"
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "sample" in top.output and "validate" in top.output
    sample_help = runner.invoke(app, ["sample", "--help"], env=WIDE)
    assert "--size" in sample_help.output and "same seed writes identical files" in sample_help.output
    validate_help = runner.invoke(app, ["validate", "--help"], env=WIDE)
    assert "OMNI_WORKSPACE" in validate_help.output


def test_sample_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = runner.invoke(app, ["sample", "--size", "tiny", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pins without text" in result.output and "800" in result.output
    checked = runner.invoke(app, ["validate", str(out)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok:") and "engagements: 20,000 rows" in checked.output
    again = runner.invoke(app, ["sample", "--size", "tiny", "--out", str(out)])
    assert isinstance(again.exception, OmniError) and "--force" in str(again.exception)
    forced = runner.invoke(app, ["sample", "--size", "tiny", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output


def test_validate_finds_workspace_from_env_and_cwd(tiny_ws: Workspace, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = runner.invoke(app, ["validate"], env={"OMNI_WORKSPACE": str(tiny_ws.root)})
    assert from_env.exit_code == 0 and str(tiny_ws.root) in from_env.output
    assert runner.invoke(app, ["validate", "-w", str(tiny_ws.root)]).exit_code == 0
    monkeypatch.delenv("OMNI_WORKSPACE", raising=False)
    monkeypatch.chdir(tiny_ws.root)
    assert runner.invoke(app, ["validate"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    assert isinstance(runner.invoke(app, ["validate"]).exception, OmniError)


def test_broken_table_exits_2_with_one_line_per_problem(tiny_ws_copy: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pins = pl.read_parquet(tiny_ws_copy.path(PINS))
    pins.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("pin_id")).alias("pin_id")) \
        .write_parquet(tiny_ws_copy.path(PINS))
    assert _main(monkeypatch, "validate", str(tiny_ws_copy.root)) == 2
    err = capsys.readouterr().err
    assert "raw/pins.parquet: column pin_id: 1 null values, e.g. rows 7" in err
    assert "Traceback" not in err


def test_bad_option_value_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "sample", "--size", "huge", "--out", str(tmp_path / "w")) == 2
    assert "unknown world size 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "w" / "raw").exists()
