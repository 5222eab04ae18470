"""Atomic writes: an interrupted stage never leaves a half-written output.

Every output is written to a temporary sibling (``.name.tmp-<pid>``) and moved
into place with ``os.replace``, which is atomic on POSIX within one filesystem.
A later stage therefore sees either the previous complete file or the new one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success.

    Works for files and directories. On an exception the temporary is removed
    and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            # os.replace cannot replace a non-empty directory: swap via a backup name.
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            _remove(backup)
            os.replace(path, backup)
            os.replace(tmp, path)
            _remove(backup)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a Polars frame to ``path`` atomically (zstd-compressed Parquet)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)
