"""Quoting for SQL text that cannot take parameters (paths in ``read_parquet``, COPY targets, identifiers).

One place for it: validation, the time split and the DuckDB stages all build such SQL.
"""
from __future__ import annotations

from pathlib import Path


def sql_string(text: str | Path) -> str:
    """A SQL string literal: single quotes doubled."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted SQL identifier: double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
