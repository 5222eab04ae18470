"""Shared fixtures: a generated tiny sample world every stage's tests run on.

``tiny_ws`` is generated once per test session (seed 0, about a second) and must not be
modified; tests that write into a workspace or break a table use ``tiny_ws_copy``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No test may reach the network: transformers/hub lookups must fail fast, not download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Spinning OpenMP waits make torch 5-40x slower when the cores are shared (CI, busy laptops).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from omnisearchsage.contract import Workspace
from omnisearchsage.sample_data.generate import generate_world


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world (seed 0): 800 pins, 200 products, 20k engagements. Read-only."""
    root = tmp_path_factory.mktemp("tiny_world")
    generate_world(root, "tiny", seed=0, overwrite=True)
    return Workspace(root)


@pytest.fixture
def tiny_ws_copy(tiny_ws: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the tiny world, for tests that write into it or break it."""
    dst = tmp_path / "ws"
    shutil.copytree(tiny_ws.root, dst)
    return Workspace(dst)
