"""``--engine`` and the Spark options shared by ``omni enrich`` and ``omni features build``."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from omnisearchsage.enrich.spark import ENV_MASTER, SparkConfig, parse_conf, spark_session
from omnisearchsage.errors import OmniError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EnrichEngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="duckdb (this machine) or spark (PySpark; local[*] or --spark-master). Both write the same tables.",
    ),
]
VocabEngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Who counts vocabulary tokens: polars (this process) or spark (PySpark). Same vocabularies either way.",
    ),
]
SparkMasterOpt = Annotated[
    str | None,
    typer.Option(
        help=f"Spark master URL (spark://host:7077, yarn, k8s://...). Default: ${ENV_MASTER}, else local[*].",
        show_default=False,
    ),
]
SparkConfOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--spark-conf",
        metavar="KEY=VALUE",
        help="Spark setting, repeatable (e.g. spark.executor.memory=8g); spark-defaults.conf applies otherwise.",
        show_default=False,
    ),
]
SparkDriverMemoryOpt = Annotated[
    str | None,
    typer.Option(help="Spark driver heap, e.g. 4g (in local mode the driver runs the whole job).",
                 show_default=False),
]


@contextlib.contextmanager
def maybe_spark(
    engine: str, local_engine: str, master: str | None, conf: list[str] | None, driver_memory: str | None
) -> Iterator[SparkSession | None]:
    """A Spark session when ``engine`` is spark, ``None`` for ``local_engine``; stopped on exit."""
    if engine not in (local_engine, "spark"):
        raise OmniError(f"--engine: {engine!r} is not one of {local_engine}, spark")
    if engine == local_engine:
        yield None
        return
    with spark_session(SparkConfig(master=master, conf=parse_conf(conf or []), driver_memory=driver_memory)) as spark:
        yield spark
