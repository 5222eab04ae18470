"""Validation: one broken table per problem kind, each reported as one line naming file, column, rows."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from omnisearchsage.contract import BOARD_PINS, BOARDS, ENGAGEMENTS, PINS, PRODUCTS, TableSchema, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.validate import read_table, validate_workspace


def _rewrite(ws: Workspace, table: TableSchema, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    path = ws.path(table)
    df = fn(pl.read_parquet(path))
    df.write_parquet(path)


def _set(df: pl.DataFrame, column: str, rows: list[int], value: object) -> pl.DataFrame:
    idx = pl.int_range(pl.len())
    return df.with_columns(pl.when(idx.is_in(rows)).then(pl.lit(value, dtype=df.schema[column]))
                           .otherwise(pl.col(column)).alias(column))


def _problems(ws: Workspace, tables=None) -> list[str]:
    with pytest.raises(OmniError) as info:
        validate_workspace(ws, tables)
    assert info.value.exit_code == 2
    return str(info.value).splitlines()[1:]


def test_missing_file(tiny_ws_copy: Workspace) -> None:
    tiny_ws_copy.path(ENGAGEMENTS).unlink()
    assert _problems(tiny_ws_copy) == ["raw/engagements.parquet: missing"]


def test_pins_and_products_both_missing(tiny_ws_copy: Workspace) -> None:
    tiny_ws_copy.path(PINS).unlink()
    tiny_ws_copy.path(PRODUCTS).unlink()
    problems = _problems(tiny_ws_copy)
    assert problems[0].startswith("raw/pins.parquet, raw/products.parquet: both missing")
    # The dangling references are named too, against the missing table.
    assert any(p.startswith("raw/engagements.parquet: column entity_id:") and "(missing)" in p for p in problems)


def test_unreadable_parquet(tiny_ws_copy: Workspace) -> None:
    tiny_ws_copy.path(PINS).write_bytes(b"PAR1 this is not parquet")
    problems = _problems(tiny_ws_copy)
    assert problems[0].startswith("raw/pins.parquet: unreadable Parquet (")


def test_missing_required_column(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PINS, lambda df: df.drop("pin_id", "alt_text"))  # alt_text is optional
    assert _problems(tiny_ws_copy) == ["raw/pins.parquet: column pin_id: missing (required)"]


def test_wrong_type(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, BOARDS, lambda df: df.with_columns(pl.int_range(pl.len()).alias("board_id")))
    assert _problems(tiny_ws_copy, ["boards"]) == ["raw/boards.parquet: column board_id: type Int64, expected String"]


def test_null_keys_name_the_rows(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PINS, lambda df: _set(df, "pin_id", [3, 5], None))
    problems = _problems(tiny_ws_copy, ["pins"])
    assert problems == ["raw/pins.parquet: column pin_id: 2 null values, e.g. rows 3, 5"]


def test_duplicate_keys_name_rows_and_value(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PINS, lambda df: _set(df, "pin_id", [17], "p000003"))
    problems = _problems(tiny_ws_copy)
    assert problems[0] == ('raw/pins.parquet: column pin_id: 2 rows with duplicate values (1 distinct), '
                           'e.g. rows 3, 17 ("p000003")')


def test_unknown_entity_type(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, ENGAGEMENTS, lambda df: _set(df, "entity_type", [5, 8], "board"))
    assert _problems(tiny_ws_copy) == [
        ('raw/engagements.parquet: column entity_type: 2 values not in {pin, product, query}, '
        'e.g. rows 5, 8 ("board", "board")')
    ]


def test_engagements_referencing_unknown_entities(tiny_ws_copy: Workspace) -> None:
    def break_ids(df: pl.DataFrame) -> pl.DataFrame:
        df = _set(df, "entity_type", [1, 2, 9, 11], "pin")
        df = _set(df, "entity_id", [1, 2, 9, 11], "p999999")
        df = _set(df, "entity_type", [4], "product")
        return _set(df, "entity_id", [4], "p000001")  # a pin id used as a product id

    _rewrite(tiny_ws_copy, ENGAGEMENTS, break_ids)
    assert _problems(tiny_ws_copy) == [
        ('raw/engagements.parquet: column entity_id: 4 pin ids not in raw/pins.parquet, '
        'e.g. rows 1, 2, 9 ("p999999", "p999999", "p999999")'),
        ('raw/engagements.parquet: column entity_id: 1 product ids not in raw/products.parquet, '
        'e.g. rows 4 ("p000001")'),
    ]


def test_board_pins_referencing_unknown_pins_and_boards(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, BOARD_PINS, lambda df: _set(_set(df, "pin_id", [0], "nope"), "board_id", [2, 7], "b-x"))
    assert _problems(tiny_ws_copy) == [
        'raw/board_pins.parquet: column pin_id: 1 pin ids not in raw/pins.parquet, e.g. rows 0 ("nope")',
        ('raw/board_pins.parquet: column board_id: 2 board ids not in raw/boards.parquet, '
        'e.g. rows 2, 7 ("b-x", "b-x")'),
    ]


def test_board_pins_without_boards(tiny_ws_copy: Workspace) -> None:
    tiny_ws_copy.path(BOARDS).unlink()
    (problem,) = _problems(tiny_ws_copy)
    assert problem.startswith("raw/board_pins.parquet: column board_id: ")
    assert "board ids not in raw/boards.parquet (missing), e.g. rows 0, 1, 2" in problem


def test_inconsistent_embedding_lengths(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PRODUCTS, lambda df: _set(df, "legacy_embedding", [4], [0.5, 0.5]))
    assert _problems(tiny_ws_copy) == [
        ("raw/products.parquet: column legacy_embedding: 1 rows with length other than 256 (the most common), "
        "e.g. rows 4")
    ]


def test_all_problems_reported_at_once(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PINS, lambda df: _set(df, "pin_id", [0], None))
    _rewrite(tiny_ws_copy, ENGAGEMENTS, lambda df: df.drop("action"))
    problems = _problems(tiny_ws_copy)
    assert "raw/pins.parquet: column pin_id: 1 null values, e.g. rows 0" in problems
    assert "raw/engagements.parquet: column action: missing (required)" in problems


def test_castable_types_pass_and_read_table_casts(tiny_ws: Workspace, tiny_ws_copy: Workspace) -> None:
    """A catalogue exported by another tool (categoricals, ms time zones, float64 lists) is fine."""
    _rewrite(tiny_ws_copy, ENGAGEMENTS, lambda df: df.with_columns(
        pl.col("ts").dt.cast_time_unit("ms").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris"),
        pl.col("action").cast(pl.Categorical)).drop("lang"))
    _rewrite(tiny_ws_copy, PINS, lambda df: df.with_columns(pl.col("legacy_embedding").cast(pl.List(pl.Float64)))
             .drop("alt_text", "lang"))
    original_ts = pl.read_parquet(tiny_ws.path(ENGAGEMENTS))["ts"].dt.truncate("1ms")
    validate_workspace(tiny_ws_copy)
    eng = read_table(tiny_ws_copy, ENGAGEMENTS).collect()
    assert eng.schema == pl.Schema(ENGAGEMENTS.polars_schema)
    assert eng["ts"].equals(original_ts, check_names=False)  # back in naive UTC
    assert eng["lang"].is_null().all()
    pins = read_table(tiny_ws_copy, PINS).collect()
    assert pins.schema == pl.Schema(PINS.polars_schema)
    assert pins["alt_text"].is_null().all()


def test_table_subset(tiny_ws_copy: Workspace) -> None:
    _rewrite(tiny_ws_copy, PINS, lambda df: _set(df, "pin_id", [0], None))
    validate_workspace(tiny_ws_copy, ["engagements", "products"])  # pins are not asked for
    assert _problems(tiny_ws_copy, ["captions"]) == ["enrich/captions.parquet: missing"]
    with pytest.raises(OmniError, match="column pin_id: missing"):
        _rewrite(tiny_ws_copy, PINS, lambda df: df.drop("pin_id"))
        read_table(tiny_ws_copy, PINS)


def test_table_names_are_unique_so_validation_finds_the_right_file() -> None:
    from omnisearchsage import contract

    tables = [v for v in vars(contract).values() if isinstance(v, contract.TableSchema)]
    names = [t.name for t in tables]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_products_only_workspace_validates_with_its_feature_tables(tmp_path: Path) -> None:
    """A products-only catalogue (an imported relevance set) still has features/pins.parquet
    (empty); the trainer's validation of it must not demand raw/pins.parquet."""
    from datetime import datetime

    from omnisearchsage.contract import ENGAGEMENTS, FEATURE_PINS, FEATURE_PRODUCTS, PRODUCTS, Workspace
    from omnisearchsage.validate import validate_workspace

    ws = Workspace(tmp_path)
    ws.raw.mkdir(parents=True)
    ws.features.mkdir(parents=True)
    products = {"product_id": ["a", "b"], "title": ["red lamp", "blue mug"]}
    pl.DataFrame(products).write_parquet(ws.path(PRODUCTS))
    pl.DataFrame({"ts": [datetime(2026, 1, 1)], "query": ["lamp"], "entity_type": ["product"],
                  "entity_id": ["a"], "action": ["click"]}).write_parquet(ws.path(ENGAGEMENTS))
    pl.DataFrame(schema=FEATURE_PINS.polars_schema).write_parquet(ws.path(FEATURE_PINS))
    feats = {"product_id": ["a", "b"]} | {c.name: [[1], [2]] for c in FEATURE_PRODUCTS.columns[1:]}
    pl.DataFrame(feats, schema=FEATURE_PRODUCTS.polars_schema).write_parquet(ws.path(FEATURE_PRODUCTS))
    validate_workspace(ws, [ENGAGEMENTS, PRODUCTS, FEATURE_PINS, FEATURE_PRODUCTS])
