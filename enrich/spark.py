"""Spark plumbing: the session, the shared normaliser as an Arrow UDF, DuckDB SQL in Spark's dialect.

The Spark engine runs the *same* SQL text as the DuckDB engine (the constants in
:mod:`~omnisearchsage.enrich.boards` and :mod:`~omnisearchsage.enrich.queries`),
rendered by :func:`to_spark_sql`, so the two cannot drift apart. The dialects differ in
only a few places, each rewritten here:

============================  ================================================
DuckDB                        Spark SQL
============================  ================================================
``$name`` parameter           ``:name`` (``spark.sql(..., args=...)``)
``read_parquet($name)``       a temporary view of that Parquet file
``unnest(string_split(x, s))``  ``explode(split(x, s))``
``list(x ORDER BY k)``        ``collect_list`` of ``(k, x)`` pairs, sorted, then ``x``
``CREATE TEMP TABLE t AS q``  ``q`` registered as temporary view ``t``
Parquet key-value metadata    added by rewriting Spark's file with pyarrow
============================  ================================================

Normalisation calls :func:`omnisearchsage.features.text.normalize` in an Arrow UDF
registered under DuckDB's name (:data:`~omnisearchsage.enrich.duck.NORMALIZE_FN`), so
both engines normalise with the one Python function and agree to the byte.

Outputs are single Parquet files at the workspace's usual paths: Spark writes a folder
of part files, which is coalesced to one part and moved into place atomically. The
workspace must therefore be a folder the driver and every executor see at the same path
(a local disk for ``local[*]``, a shared filesystem on a cluster).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from omnisearchsage.atomic import atomic_path
from omnisearchsage.enrich.duck import NORMALIZE_FN
from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import normalize

if TYPE_CHECKING:  # pyspark is an optional extra: imported only when the Spark engine runs
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Engines of the enrich stage (the first is the default) and of vocabulary counting.
ENRICH_ENGINES = ("duckdb", "spark")
VOCAB_ENGINES = ("polars", "spark")
#: Environment variable naming the master when ``--spark-master`` is not given.
ENV_MASTER = "SPARK_MASTER"


@dataclass(frozen=True)
class SparkConfig:
    """How the Spark session is built.

    ``master=None`` means ``$SPARK_MASTER`` if set, else ``local[*]`` (every core of
    this machine). Everything else Spark reads the usual way (``$SPARK_CONF_DIR``'s
    ``spark-defaults.conf``, ``PYSPARK_SUBMIT_ARGS``, ``spark-submit`` flags) unless set
    here; ``conf`` pairs override all of it.
    """

    master: str | None = None
    app_name: str = "omnisearchsage"
    #: Heap of the driver JVM; in local mode the driver runs the whole job. None: Spark's default.
    driver_memory: str | None = None
    #: Shuffle partitions; None keeps Spark's (adaptive execution coalesces small ones).
    shuffle_partitions: int | None = None
    #: Extra ``(key, value)`` Spark settings, applied last.
    conf: tuple[tuple[str, str], ...] = ()

    def resolved_master(self) -> str:
        return self.master or os.environ.get(ENV_MASTER) or "local[*]"

    def settings(self) -> dict[str, str]:
        """Every setting the builder applies, in order (later keys win)."""
        out = {
            # Timestamps compare and cast to dates in UTC, as DuckDB's engine does (SET TimeZone).
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.parquet.compression.codec": "zstd",
        }
        if self.driver_memory:
            out["spark.driver.memory"] = self.driver_memory
        if self.shuffle_partitions:
            out["spark.sql.shuffle.partitions"] = str(self.shuffle_partitions)
        return out | dict(self.conf)


def parse_conf(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``["spark.executor.memory=8g"]`` → ``(("spark.executor.memory", "8g"),)``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            raise OmniError(f"--spark-conf: {item!r} is not KEY=VALUE, e.g. spark.executor.memory=8g")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _import_pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError as e:
        raise OmniError("the Spark engine needs PySpark: pip install 'omnisearchsage[spark]' (and Java 17)") from e
    return pyspark.sql


def get_session(cfg: SparkConfig | None = None) -> SparkSession:
    """A Spark session built from ``cfg``, with :data:`NORMALIZE_FN` registered.

    An already running session is reused (Spark allows one per process), so settings
    that only apply at JVM start (driver memory) take effect on the first call only.
    """
    cfg = cfg or SparkConfig()
    sql = _import_pyspark()
    builder = sql.SparkSession.builder.master(cfg.resolved_master()).appName(cfg.app_name)
    for key, value in cfg.settings().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    register_normalize(spark)
    log.info("spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


@contextlib.contextmanager
def spark_session(cfg: SparkConfig | None = None) -> Iterator[SparkSession]:
    """:func:`get_session`, stopped on exit unless it was already running (a caller's, e.g. a notebook's)."""
    already = _import_pyspark().SparkSession.getActiveSession()
    spark = get_session(cfg)
    try:
        yield spark
    finally:
        if already is None:
            spark.stop()


def _normalize_arrow(texts: pa.Array) -> pa.Array:
    # normalize(None) is "" (as with DuckDB's special null handling); callers pass distinct values.
    return pa.array([normalize(t) for t in texts.to_pylist()], type=pa.string())


def register_normalize(spark: SparkSession) -> None:
    """Register :func:`normalize` as the SQL function :data:`NORMALIZE_FN` (an Arrow UDF)."""
    from pyspark.sql.functions import arrow_udf

    spark.udf.register(NORMALIZE_FN, arrow_udf(_normalize_arrow, "string"))


# ---------------------------------------------------------------- DuckDB SQL → Spark SQL
_READ_PARQUET = re.compile(r"read_parquet\(\$(\w+)\)")
_PARAM = re.compile(r"\$(\w+)")
_UNNEST_SPLIT = re.compile(r"unnest\(string_split\(")
_ORDERED_LIST = re.compile(r"list\((\w+) ORDER BY (\w+)\)")
_CREATE_TEMP = re.compile(r"^\s*CREATE TEMP TABLE (\w+) AS\s+(.*)$", re.DOTALL)


def source_view(name: str) -> str:
    """The temporary view :func:`to_spark_sql` reads for DuckDB's ``read_parquet($name)``."""
    return f"src_{name}"


def to_spark_sql(sql: str) -> str:
    """DuckDB ``sql`` (one of the shared constants) in Spark's dialect; see the module table."""
    sql = _READ_PARQUET.sub(lambda m: source_view(m.group(1)), sql)
    sql = _UNNEST_SPLIT.sub("explode(split(", sql)
    sql = _ORDERED_LIST.sub(
        lambda m: f"transform(array_sort(collect_list(named_struct('k', {m.group(2)}, 'v', {m.group(1)}))), "
        f"s -> s.v)",
        sql,
    )
    return _PARAM.sub(r":\1", sql)


def run_sql(spark: SparkSession, sql: str, params: Mapping[str, Any] | None = None) -> DataFrame:
    """Run DuckDB ``sql`` on Spark with the parameters it names (``CREATE TEMP TABLE t AS q``
    registers ``q`` as view ``t`` and returns it)."""
    create = _CREATE_TEMP.match(sql)
    query = to_spark_sql(create.group(2) if create else sql)
    used = set(re.findall(r":(\w+)", query))
    df = spark.sql(query, args={k: v for k, v in (params or {}).items() if k in used})
    if create:
        df.createOrReplaceTempView(create.group(1))
    return df


def register_sources(spark: SparkSession, paths: Mapping[str, str | Path]) -> None:
    """Make each Parquet file readable as ``read_parquet($name)`` in shared SQL."""
    for name, path in paths.items():
        spark.read.parquet(str(path)).createOrReplaceTempView(source_view(name))


def write_single_parquet(df: DataFrame, path: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``df`` as one zstd Parquet file at ``path``, atomically, rows in ``df``'s order.

    Spark writes a folder of part files; coalescing to one partition keeps a sorted
    frame's order (partitions are concatenated in order) and gives the single file the
    other stages read. ``metadata`` becomes the file's key-value metadata, which Spark
    cannot write: the part file is then streamed through pyarrow row group by row group.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".spark-", dir=path.parent) as scratch:
        out = Path(scratch) / "out"
        df.coalesce(1).write.mode("overwrite").option("compression", "zstd").parquet(str(out))
        parts = sorted(out.glob("part-*.parquet"))
        if len(parts) != 1:
            raise OmniError(f"{out}: Spark wrote {len(parts)} part files, expected 1")
        with atomic_path(path) as tmp:
            if metadata:
                _copy_with_metadata(parts[0], tmp, metadata)
            else:
                shutil.move(parts[0], tmp)
    return path


def _copy_with_metadata(src: Path, dst: Path, metadata: Mapping[str, str]) -> None:
    source = pq.ParquetFile(src)
    schema = source.schema_arrow
    schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
    with pq.ParquetWriter(dst, schema, compression="zstd") as writer:
        for i in range(source.num_row_groups):
            writer.write_table(source.read_row_group(i).cast(schema))
