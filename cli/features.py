"""``omni features``: vocabularies and per-entity token-id tables."""
from __future__ import annotations

import functools
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.cli.engine import (
    SparkConfOpt,
    SparkDriverMemoryOpt,
    SparkMasterOpt,
    VocabEngineOpt,
    maybe_spark,
)
from omnisearchsage.contract import VOCAB_KINDS
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig

features_app = typer.Typer(
    name="features",
    help="Text features: unigram / bigram / char-trigram vocabularies and per-entity token ids.",
    no_args_is_help=True,
)

_D = FeatureConfig


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@features_app.command("build")
def build(
    workspace_dir: WorkspaceOpt = None,
    unigram_vocab: Annotated[int, typer.Option(help="Word-unigram vocabulary cap.")] = _D.unigram_vocab,
    bigram_vocab: Annotated[int, typer.Option(help="Word-bigram vocabulary cap.")] = _D.bigram_vocab,
    char_trigram_vocab: Annotated[int, typer.Option(help="Char-trigram vocabulary cap.")] = _D.char_trigram_vocab,
    min_count: Annotated[
        int, typer.Option(help="Occurrences a token needs in the training-window text to enter a vocabulary.")
    ] = _D.min_count,
    oov: Annotated[
        bool, typer.Option(help="Hash out-of-vocabulary tokens into buckets (--no-oov drops them, as the paper).")
    ] = _D.use_oov,
    unigram_oov_buckets: Annotated[int, typer.Option(help="OOV buckets for word unigrams.")] = _D.unigram_oov_buckets,
    bigram_oov_buckets: Annotated[int, typer.Option(help="OOV buckets for word bigrams.")] = _D.bigram_oov_buckets,
    char_trigram_oov_buckets: Annotated[
        int, typer.Option(help="OOV buckets for char trigrams.")
    ] = _D.char_trigram_oov_buckets,
    max_chars: Annotated[int, typer.Option(help="Characters kept per text after normalising.")] = _D.max_chars,
    max_words: Annotated[int, typer.Option(help="Words kept per text.")] = _D.max_words,
    tables: Annotated[str, typer.Option(help="Comma-separated tables to write.")] = ",".join(_D.tables),
    pin_fields: Annotated[
        str, typer.Option(help="Comma-separated pin fields to fill; the others are written as empty lists.")
    ] = ",".join(_D.pin_fields),
    product_fields: Annotated[
        str, typer.Option(help="Comma-separated product fields to fill; the others are written as empty lists.")
    ] = ",".join(_D.product_fields),
    batch_rows: Annotated[int, typer.Option(help="Texts per tokenisation batch (bounds peak memory).")]
    = _D.batch_rows,
    engine: VocabEngineOpt = "polars",
    spark_master: SparkMasterOpt = None,
    spark_conf: SparkConfOpt = None,
    spark_driver_memory: SparkDriverMemoryOpt = None,
) -> None:
    """Count vocabularies over the training window and write the token-id tables (WS/features/).

    Reads raw pins, products, engagements before the cutoff, and enrich tables when present.
    Writes features/vocab/*.parquet, features/{pins,products,queries}.parquet and manifest.json.
    """
    cfg = FeatureConfig(
        unigram_vocab=unigram_vocab,
        bigram_vocab=bigram_vocab,
        char_trigram_vocab=char_trigram_vocab,
        min_count=min_count,
        unigram_oov_buckets=unigram_oov_buckets,
        bigram_oov_buckets=bigram_oov_buckets,
        char_trigram_oov_buckets=char_trigram_oov_buckets,
        use_oov=oov,
        max_chars=max_chars,
        max_words=max_words,
        tables=_names(tables),
        pin_fields=_names(pin_fields),
        product_fields=_names(product_fields),
        batch_rows=batch_rows,
    )
    ws = workspace(workspace_dir)
    with maybe_spark(engine, "polars", spark_master, spark_conf, spark_driver_memory) as spark:
        counter = None
        if spark is not None:
            from omnisearchsage.features.spark_vocab import count_tokens_spark

            counter = functools.partial(count_tokens_spark, spark)
        echo_manifest(build_features(ws, cfg, counter))
    typer.echo(f"wrote {ws.features}")


def echo_manifest(m: dict[str, Any]) -> None:
    """Vocabulary table (size, coverage, OOV rate), rows and field coverage per table, notes."""
    console = Console(width=120)
    vocab = Table(title="vocabularies (training window)")
    for col in ("tokenizer", "size", "cap", "distinct seen", "coverage", "OOV rate"):
        vocab.add_column(col, justify="left" if col == "tokenizer" else "right")
    for kind in VOCAB_KINDS:
        v = m["vocab"][kind]
        vocab.add_row(kind, f"{v['size']:,}", f"{v['cap']:,}", f"{v['distinct']:,}",
                      f"{v['coverage']:.2%}", f"{v['oov_rate']:.2%}")
    console.print(vocab)
    oov = "hashed into buckets" if m["config"]["use_oov"] else "dropped"
    typer.echo(f"OOV rate over all tokens: {m['oov_rate']:.2%} ({oov}); id space: {m['num_ids']:,} ids")
    for name, t in m["tables"].items():
        cover = ", ".join(f"{f} {c:.0%}" for f, c in t["field_coverage"].items())
        typer.echo(f"{name}: {t['rows']:,} rows; non-empty: {cover}")
    for note in m["notes"]:
        typer.echo(f"note: {note}")
