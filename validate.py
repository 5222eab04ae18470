"""Workspace validation: every stage checks its inputs here before it writes anything.

:func:`validate_workspace` checks tables against :mod:`~omnisearchsage.contract` and raises one
:class:`~omnisearchsage.errors.OmniError` listing every problem, one line each, naming the file,
the column and up to three offending rows (0-based row numbers in the Parquet file), e.g.::

    raw/pins.parquet: column pin_id: 2 rows with duplicate values (1 distinct), e.g. rows 3, 17 ("p1")

Checks: missing file, a path that is not a regular file (a directory, a FIFO, a device: read
as Parquet these hang or fail obscurely), unreadable Parquet (a bad footer, or a page that
fails to decode: every column is read once), missing required column, wrong type (types that
cast losslessly, such as large_string for string or float64 for a float32 list, are fine; an
integer where a string is expected is not, nor a string or integer ``ts``: timestamps must be
Parquet timestamps, naive UTC or time-zone aware, which is converted to naive UTC), text that
is not valid UTF-8, null or duplicate keys, engagement entity types outside
``pin/product/query``, legacy embeddings of inconsistent length or with NaN/infinite values,
and references: engagement pin/product ids and board_pins ids that do not exist.

The checks run in DuckDB over the Parquet files (anti-joins, aggregates), so they stream and
scale to the large world (20M engagements) without loading a table into Python.
:func:`read_table` is the matching reader: a lazy frame cast to the contract, with absent
optional columns filled with nulls.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from omnisearchsage import contract
from omnisearchsage.contract import (
    BOARD_PINS,
    BOARDS,
    ENGAGEMENTS,
    ENTITY_TYPES,
    PINS,
    PRODUCTS,
    RAW_TABLES,
    TableSchema,
    Workspace,
)
from omnisearchsage.errors import OmniError
from omnisearchsage.sql import sql_ident, sql_string

#: How many offending rows a message shows.
MAX_EXAMPLES = 3
#: Columns whose values must come from a closed set.
_ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {(ENGAGEMENTS.name, "entity_type"): ENTITY_TYPES}


@dataclass(frozen=True)
class _Reference:
    """``child.column`` (rows matching ``where``) must exist in ``parent.parent_column``."""

    child: TableSchema
    column: str
    where: str
    parent: TableSchema
    parent_column: str
    what: str


_REFERENCES = (
    _Reference(ENGAGEMENTS, "entity_id", "entity_type = 'pin'", PINS, "pin_id", "pin ids"),
    _Reference(ENGAGEMENTS, "entity_id", "entity_type = 'product'", PRODUCTS, "product_id", "product ids"),
    _Reference(BOARD_PINS, "pin_id", "TRUE", PINS, "pin_id", "pin ids"),
    _Reference(BOARD_PINS, "board_id", "TRUE", BOARDS, "board_id", "board ids"),
)


def known_tables() -> dict[str, TableSchema]:
    """Tables addressable by name: raw inputs, enrich outputs and generator truth.

    Feature tables share names with raw ones (``pins``), so pass their :class:`TableSchema`
    instead of a name.
    """
    found = {v.name: v for v in vars(contract).values()
             if isinstance(v, TableSchema) and not v.relpath.startswith("features/")}
    return found | {t.name: t for t in RAW_TABLES}


def _resolve(tables: Sequence[str | TableSchema]) -> list[TableSchema]:
    known = known_tables()
    out = []
    for t in tables:
        if isinstance(t, TableSchema):
            out.append(t)
        elif t in known:
            out.append(known[t])
        else:
            raise ValueError(f"unknown table {t!r}; known: {', '.join(sorted(known))}")
    return out


# --------------------------------------------------------------------------- types
def compatible(actual: pl.DataType, expected: pl.DataType) -> bool:
    """Whether a column of type ``actual`` casts losslessly enough to the contract's ``expected``."""
    if actual == pl.Null:
        return True
    if expected == pl.Utf8:
        return actual in (pl.Utf8, pl.Categorical) or isinstance(actual, pl.Enum)
    if isinstance(expected, pl.Datetime):
        return isinstance(actual, pl.Datetime) or actual == pl.Date
    if expected == pl.Date:
        return actual == pl.Date or isinstance(actual, pl.Datetime)
    if expected.is_integer():
        return actual.is_integer()
    if expected.is_float():
        return actual.is_numeric()
    if isinstance(expected, pl.List):
        return isinstance(actual, (pl.List, pl.Array)) and compatible(actual.inner, expected.inner)
    return actual == expected


def _cast(name: str, actual: pl.DataType, expected: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if isinstance(actual, pl.Datetime) and actual.time_zone is not None:
        col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return col.cast(expected)


# --------------------------------------------------------------------------- SQL helpers
def _scan(ws: Workspace, t: TableSchema) -> str:
    return f"read_parquet({sql_string(str(ws.path(t)))}, file_row_number = true)"


def _rows(rows: Sequence[int], values: Sequence[object] | None = None) -> str:
    shown = ", ".join(str(r) for r in rows)
    if not values:
        return f"e.g. rows {shown}"
    vals = ", ".join('"' + str(v) + '"' for v in values)
    return f"e.g. rows {shown} ({vals})"


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200]


#: What ``stat`` calls the file kinds that are not regular files, for the message.
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular(path: Path) -> str | None:
    """Why ``path`` (symlinks followed) cannot be read as a file, or None for a regular file.

    Checked before any reader opens it: a FIFO or ``/dev/zero`` would block or never end.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return f"not a regular file ({kind})"


def _type_hint(actual: pl.DataType, expected: pl.DataType) -> str:
    """What to do about a wrong type, where the fix is not obvious from the types alone."""
    if isinstance(expected, pl.Datetime) and (actual == pl.Utf8 or actual.is_numeric()):
        return ("; store a Parquet timestamp (naive UTC or time-zone aware), e.g. polars "
                "str.to_datetime() for text or pl.from_epoch() for epoch seconds")
    return ""


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.Utf8, pl.Categorical) or (isinstance(dtype, pl.List) and _is_text(dtype.inner))


def invalid_utf8_rows(path: Path, column: str, batch_rows: int = 65_536) -> tuple[int, list[int]]:
    """Rows of ``column`` (text or list of text) whose bytes are not valid UTF-8: (count, first few).

    Arrow reads Parquet text without checking its encoding, so each batch is checked with
    Arrow's full validation; only a failing batch is scanned value by value to name the rows.
    """
    count, rows, start = 0, [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[column]):
        arr = batch.column(0)
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:
            for i, value in enumerate(_raw_values(arr)):
                if value is not None and not _valid_utf8(value):
                    count += 1
                    if len(rows) < MAX_EXAMPLES:
                        rows.append(start + i)
        start += len(arr)
    return count, rows


def _raw_values(arr: pa.Array) -> list[list[bytes] | bytes | None]:
    """The values of a string (or list-of-string) array as bytes, without decoding them."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary.take(arr.indices)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        flat = _raw_values(arr.flatten())
        offsets = arr.offsets.to_numpy()
        return [None if not arr[i].is_valid else flat[offsets[i]:offsets[i + 1]] for i in range(len(arr))]
    binary = pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary()
    return arr.view(binary).to_pylist()


def _valid_utf8(value: bytes | list[bytes | None]) -> bool:
    if isinstance(value, list):
        return all(v is None or _valid_utf8(v) for v in value)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Checker:
    """Collects problems of one validation run; each check appends one line per problem."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.problems: list[str] = []
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        #: Per readable table: its Polars schema; columns of a wrong type are left out.
        self.usable: dict[str, dict[str, pl.DataType]] = {}

    def add(self, t: TableSchema, msg: str, column: str | None = None) -> None:
        where = f"column {column}: " if column else ""
        self.problems.append(f"{t.relpath}: {where}{msg}")

    def table(self, t: TableSchema) -> None:
        path = self.ws.path(t)
        if (why := not_regular(path)) is not None:
            self.add(t, why)
            return
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as e:  # noqa: BLE001 - any reader failure means the same to the user
            self.add(t, f"unreadable Parquet ({_short(e)})")
            return
        ok: dict[str, pl.DataType] = {}
        for c in t.columns:
            if c.name not in schema:
                if not c.nullable:
                    self.add(t, "missing (required)", c.name)
            elif not compatible(schema[c.name], c.dtype):
                self.add(t, f"type {schema[c.name]}, expected {c.dtype}{_type_hint(schema[c.name], c.dtype)}",
                         c.name)
            else:
                ok[c.name] = schema[c.name]
        if not self._readable(t, ok):
            return
        try:
            self._non_finite(t, ok)
            self._nulls(t, ok)
            self._duplicates(t, ok)
            self._allowed(t, ok)
            self._list_lengths(t, ok)
        except duckdb.Error as e:
            self.add(t, f"unreadable Parquet ({_short(e)})")
            return
        self.usable[t.name] = ok

    def _readable(self, t: TableSchema, ok: dict[str, pl.DataType]) -> bool:
        """Read every checked column once: a corrupt page or text that is not UTF-8 fails here,
        not later in a stage's reader with a message naming neither file nor column."""
        if not ok:
            return True
        try:
            # hash() reads every value (count() would read only the validity of a text column).
            self.con.execute("SELECT " + ", ".join(f"max(hash({sql_ident(c)}))" for c in ok) + f" FROM {_scan(self.ws, t)}")
            return True
        except duckdb.Error as e:
            error = e
        if "string encoding" in str(error).lower():
            found = [(c, *invalid_utf8_rows(self.ws.path(t), c)) for c, dtype in ok.items() if _is_text(dtype)]
            for c, n, rows in found:
                if n:
                    self.add(t, f"{n} rows with text that is not valid UTF-8, {_rows(rows)}", c)
            if any(n for _, n, _ in found):
                return False
        # A corrupt page, or a bad encoding the row search cannot place: still one line, still refused.
        self.add(t, f"unreadable Parquet ({_short(error)})")
        return False

    def _non_finite(self, t: TableSchema, ok: dict[str, pl.DataType]) -> None:
        """NaN or infinite values in float lists (embeddings): one poisons every loss they reach."""
        for c in t.columns:
            if c.name not in ok or not isinstance(c.dtype, pl.List) or not c.dtype.inner.is_float():
                continue
            col = sql_ident(c.name)
            bad = self.con.execute(
                f"SELECT file_row_number, count(*) OVER () FROM {_scan(self.ws, t)} "
                f"WHERE list_bool_or(list_transform({col}, lambda x: isnan(x) OR isinf(x))) "
                f"ORDER BY 1 LIMIT {MAX_EXAMPLES}").fetchall()
            if bad:
                self.add(t, f"{bad[0][1]} rows with NaN or infinite values, {_rows([b[0] for b in bad])}", c.name)

    def _nulls(self, t: TableSchema, ok: dict[str, pl.DataType]) -> None:
        cols = [c.name for c in t.columns if not c.nullable and c.name in ok]
        if not cols:
            return
        counts = self.con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {sql_ident(c)} IS NULL)" for c in cols)
                              + f" FROM {_scan(self.ws, t)}").fetchone()
        for c, n in zip(cols, counts):
            if n:
                rows = [r for (r,) in self.con.execute(
                    f"SELECT file_row_number FROM {_scan(self.ws, t)} WHERE {sql_ident(c)} IS NULL "
                    f"ORDER BY 1 LIMIT {MAX_EXAMPLES}").fetchall()]
                self.add(t, f"{n} null values, {_rows(rows)}", c)

    def _duplicates(self, t: TableSchema, ok: dict[str, pl.DataType]) -> None:
        if not t.key or any(k not in ok for k in t.key):
            return
        keys = ", ".join(sql_ident(k) for k in t.key)
        not_null = " AND ".join(f"{sql_ident(k)} IS NOT NULL" for k in t.key)
        src = _scan(self.ws, t)
        # Duplicated keys, then the rows of the first one (by row number) as the example.
        sql = f"""
            WITH dup AS (SELECT {keys}, count(*) AS n, min(file_row_number) AS first_row
                         FROM {src} WHERE {not_null} GROUP BY {keys} HAVING count(*) > 1)
            SELECT (SELECT sum(n) FROM dup), (SELECT count(*) FROM dup),
                   (SELECT [{keys}] FROM dup ORDER BY first_row LIMIT 1)"""
        n_rows, n_keys, example = self.con.execute(sql).fetchone()
        if not n_keys:
            return
        match = " AND ".join(f"{sql_ident(k)} = {sql_string(str(v))}" for k, v in zip(t.key, example))
        rows = [r for (r,) in self.con.execute(
            f"SELECT file_row_number FROM {src} WHERE {match} ORDER BY 1 LIMIT {MAX_EXAMPLES}").fetchall()]
        value = ", ".join(str(v) for v in example)
        self.add(t, f"{n_rows} rows with duplicate values ({n_keys} distinct), {_rows(rows, [value])}",
                 ", ".join(t.key))

    def _allowed(self, t: TableSchema, ok: dict[str, pl.DataType]) -> None:
        for (table, col), allowed in _ALLOWED_VALUES.items():
            if table != t.name or col not in ok:
                continue
            values = ", ".join(sql_string(v) for v in allowed)
            sql = (f"SELECT file_row_number, {sql_ident(col)}, count(*) OVER () FROM {_scan(self.ws, t)} "
                   f"WHERE {sql_ident(col)} IS NOT NULL AND {sql_ident(col)}::VARCHAR NOT IN ({values}) "
                   f"ORDER BY 1 LIMIT {MAX_EXAMPLES}")
            bad = self.con.execute(sql).fetchall()
            if bad:
                self.add(t, f"{bad[0][2]} values not in {{{', '.join(allowed)}}}, "
                            f"{_rows([b[0] for b in bad], [b[1] for b in bad])}", col)

    def _list_lengths(self, t: TableSchema, ok: dict[str, pl.DataType]) -> None:
        """Embedding columns must have one length, or a model cannot stack them.

        Only ``*embedding`` columns: other float lists (engaged-query ``scores``) vary by design.
        """
        for c in t.columns:
            if c.name not in ok or not c.name.endswith("embedding") or not isinstance(c.dtype, pl.List):
                continue
            col, src = sql_ident(c.name), _scan(self.ws, t)
            lengths = self.con.execute(f"SELECT len({col}) AS l, count(*) AS n FROM {src} WHERE {col} IS NOT NULL "
                                   "GROUP BY l ORDER BY n DESC, l").fetchall()
            if len(lengths) <= 1:
                continue
            common = lengths[0][0]
            n_bad = sum(n for _, n in lengths[1:])
            rows = [r for (r,) in self.con.execute(
                f"SELECT file_row_number FROM {src} WHERE {col} IS NOT NULL AND len({col}) <> {common} "
                f"ORDER BY 1 LIMIT {MAX_EXAMPLES}").fetchall()]
            self.add(t, f"{n_bad} rows with length other than {common} (the most common), {_rows(rows)}", c.name)

    def reference(self, ref: _Reference) -> None:
        """Anti-join ``child`` against ``parent`` (a missing parent counts as empty)."""
        child_ok = self.usable.get(ref.child.name, {})
        if ref.column not in child_ok or (ref.child is ENGAGEMENTS and "entity_type" not in child_ok):
            return
        parent_ok = self.usable.get(ref.parent.name)
        if parent_ok is not None and ref.parent_column not in parent_ok:
            return
        col = sql_ident(ref.column)
        src = f"(SELECT * FROM {_scan(self.ws, ref.child)} WHERE {ref.where} AND {col} IS NOT NULL) c"
        if parent_ok is None:
            body, missing = f"SELECT c.file_row_number AS r, c.{col} AS v FROM {src}", " (missing)"
        else:
            parent = f"read_parquet({sql_string(str(self.ws.path(ref.parent)))}) p"
            body = (f"SELECT c.file_row_number AS r, c.{col} AS v FROM {src} ANTI JOIN {parent} "
                    f"ON c.{col} = p.{sql_ident(ref.parent_column)}")
            missing = ""
        try:
            bad = self.con.execute(f"SELECT r, v, count(*) OVER () FROM ({body}) ORDER BY r "
                               f"LIMIT {MAX_EXAMPLES}").fetchall()
        except duckdb.Error as e:
            self.add(ref.child, f"unreadable Parquet ({_short(e)})")
            return
        if bad:
            self.add(ref.child, f"{bad[0][2]} {ref.what} not in {ref.parent.relpath}{missing}, "
                                f"{_rows([b[0] for b in bad], [b[1] for b in bad])}", ref.column)


def validate_workspace(ws: Workspace, tables: Sequence[str | TableSchema] | None = None) -> None:
    """Check ``tables`` of ``ws`` against the contract; raise :class:`OmniError` listing all problems.

    ``tables=None`` checks the raw inputs: engagements and at least one of pins/products are
    required, boards and board_pins are checked when present, and every engagement or board
    save must reference an existing pin, product or board. With ``tables`` (names such as
    ``"engagements"``, ``"captions"`` or :class:`TableSchema` objects) exactly those tables are
    required, and references are checked among them.
    """
    check = _Checker(ws)
    if tables is None:
        targets = [t for t in RAW_TABLES if ws.has(t) or t.name in contract.REQUIRED_RAW]
        if not ws.has(PINS) and not ws.has(PRODUCTS):
            check.problems.append(f"{PINS.relpath}, {PRODUCTS.relpath}: both missing; "
                                  "a workspace needs at least one of them")
        full = True
    else:
        targets, full = _resolve(tables), False
    for t in targets:
        check.table(t)
    names = {t.name for t in targets}
    for ref in _REFERENCES:
        if ref.child.name in names and (full or ref.parent.name in names):
            check.reference(ref)
    if check.problems:
        n = len(check.problems)
        raise OmniError(f"{ws.root}: {n} problem{'s' if n > 1 else ''}:\n" + "\n".join(check.problems))


def read_table(ws: Workspace, schema: TableSchema) -> pl.LazyFrame:
    """A table as a lazy frame with exactly the contract's columns and types.

    Absent optional columns are filled with nulls; castable types are cast (large strings,
    Arrays, other datetime units; time zones are converted to naive UTC). Call
    :func:`validate_workspace` first for the full checks; this reader only refuses a missing
    or non-regular file, an unreadable footer or a missing required column.
    """
    path = ws.path(schema)
    if (why := not_regular(path)) is not None:
        raise OmniError(f"{schema.relpath}: {why}")
    lf = pl.scan_parquet(path)
    try:
        present = lf.collect_schema()
    except Exception as e:  # any reader failure means the same to the user
        raise OmniError(f"{schema.relpath}: unreadable Parquet ({_short(e)})") from e
    exprs = []
    for c in schema.columns:
        if c.name in present:
            exprs.append(_cast(c.name, present[c.name], c.dtype).alias(c.name))
        elif c.nullable:
            exprs.append(pl.lit(None, dtype=c.dtype).alias(c.name))
        else:
            raise OmniError(f"{schema.relpath}: column {c.name}: missing (required)")
    return lf.select(exprs)


def row_counts(ws: Workspace, tables: Sequence[TableSchema] = RAW_TABLES) -> dict[str, int]:
    """Rows per present table, from the Parquet footers (no data is read)."""
    return {t.name: pq.read_metadata(ws.path(t)).num_rows for t in tables if ws.has(t)}
