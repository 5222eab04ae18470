"""DuckDB plumbing shared by the board-title and engaged-query aggregations.

Both aggregations read raw Parquet and write Parquet straight from SQL so the
engine streams (and spills to disk past ``memory_limit``) instead of
materialising a 20M-row log in Python. Text is normalised by the one shared
:func:`~omnisearchsage.features.text.normalize`, registered as a SQL function,
so SQL can never drift from what the features stage and the server do.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb

from omnisearchsage.atomic import atomic_path, sweep_stale
from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import normalize
from omnisearchsage.sql import sql_string

#: SQL name of :func:`normalize`; call it on DISTINCT values only (it runs in Python).
NORMALIZE_FN = "omni_normalize"


@contextlib.contextmanager
def connect(scratch_parent: Path, memory_limit: str, threads: int | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with a memory cap, a thread count and a private spill folder.

    The spill folder lives under ``scratch_parent`` (the workspace, whose disk
    holds the outputs anyway) rather than DuckDB's default ``.tmp`` in the
    current directory, and is removed afterwards. It is named with this process's id, so the
    next run removes the folder a killed run left (:func:`~omnisearchsage.atomic.sweep_stale`).
    """
    scratch_parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(scratch_parent)
    with tempfile.TemporaryDirectory(prefix=f".duckdb-{os.getpid()}-", dir=scratch_parent) as spill:
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "temp_directory": spill,
            # Row order of our outputs comes from ORDER BY, never from insertion order:
            # dropping it lets DuckDB stream and write in parallel with less memory.
            "preserve_insertion_order": False,
        }
        if threads is not None:
            config["threads"] = threads
        try:
            con = duckdb.connect(config=config)
        except duckdb.Error as e:
            raise OmniError(f"memory limit {memory_limit!r} / threads {threads!r}: {e}") from e
        try:
            con.execute("SET enable_progress_bar = false")  # a session option: no bar on stderr
            # Time-zone-aware timestamps compare as UTC, as read_table converts them.
            con.execute("SET TimeZone = 'UTC'")
            # "special" null handling: normalize(None) is "" (dropped later), like everywhere else.
            con.create_function(NORMALIZE_FN, normalize, ["VARCHAR"], "VARCHAR", null_handling="special")
            yield con
        finally:
            con.close()


def copy_to_parquet(
    con: duckdb.DuckDBPyConnection,
    query: str,
    path: Path,
    params: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``query``'s result to ``path`` atomically (zstd Parquet, optional key-value metadata)."""
    options = ["FORMAT parquet", "COMPRESSION zstd"]
    if metadata:
        kv = ", ".join(f"{k}: {sql_string(v)}" for k, v in metadata.items())
        options.append(f"KV_METADATA {{{kv}}}")
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({query}) TO {sql_string(tmp)} ({', '.join(options)})", dict(params or {}))
    return path


def read_metadata(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    """The key-value metadata :func:`copy_to_parquet` stored in ``path``."""
    rows = con.execute("SELECT key, value FROM parquet_kv_metadata($p)", {"p": str(path)}).fetchall()
    return {bytes(k).decode(): bytes(v).decode() for k, v in rows}
