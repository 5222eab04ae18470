"""Vocabularies: token counts over the training-window text, ranked, capped; OOV hashing.

A vocabulary is a Parquet table ``(token, id, count)`` per tokenizer, ranked by count
(ties broken by token, so two runs on the same data give the same ids), keeping at most the
cap's most frequent tokens that occur at least ``min_count`` times. Ids are *global*: the
unigram vocabulary takes ids ``[0, U)``, bigrams ``[U, U+B)``, char trigrams after them, and
the OOV buckets of each tokenizer follow (``features/manifest.json`` → ``id_space``), so one
embedding table can serve every tokenizer.

Counting is Polars end to end: the corpus is first reduced to distinct texts with a weight
(how often each text occurs: a popular query counts once per engagement), then tokenised in
batches with :func:`~omnisearchsage.features.text.token_frames` and reduced with
``group_by(token).sum(weight)``; partial counts are merged as batches go, so peak memory is
one batch plus the running counts.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import polars as pl

from omnisearchsage.contract import VOCAB_KINDS
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.text import token_frames
from omnisearchsage.progress import progress_bar

log = logging.getLogger(__name__)

#: Partial count frames kept before they are merged into one (bounds memory and merge cost).
_MERGE_EVERY = 8


def oov_bucket(token: str, buckets: int) -> int:
    """The OOV bucket (``0 <= b < buckets``) of ``token``: CRC-32 of its UTF-8 bytes.

    CRC-32 (zlib's, the IEEE polynomial) is the same in every process, on every machine and
    Python version, unlike Python's per-process salted ``hash()``; it spreads short strings
    evenly over buckets and is ~4x cheaper than a cryptographic hash, which matters because a
    large batch can hold millions of distinct out-of-vocabulary bigrams.
    """
    return zlib.crc32(token.encode("utf-8")) % buckets


def oov_ids(tokens: pl.Series, first_id: int, buckets: int) -> pl.Series:
    """Global ids of OOV ``tokens`` (pass unique tokens: each is hashed once, in Python)."""
    return pl.Series("oov_id", [first_id + oov_bucket(t, buckets) for t in tokens.to_list()], dtype=pl.Int64)


def count_tokens(corpus: pl.DataFrame, cfg: FeatureConfig) -> dict[str, pl.DataFrame]:
    """Weighted token counts per tokenizer: ``{kind: DataFrame(token, count)}``.

    ``corpus`` has columns ``text`` and ``weight`` (occurrences of that text); tokenising
    distinct texts once and weighting them is the same count as tokenising every occurrence.
    """
    weights = corpus.get_column("weight").cast(pl.Int64)
    counts: dict[str, list[pl.DataFrame]] = {k: [] for k in VOCAB_KINDS}
    with progress_bar(corpus.height, "counting tokens", "text") as bar:
        for start in range(0, corpus.height, cfg.batch_rows):
            texts = corpus.get_column("text").slice(start, cfg.batch_rows)
            w = weights.slice(start, cfg.batch_rows)
            for kind, frame in token_frames(texts, cfg).items():
                part = (
                    frame.with_columns(weight=w.gather(frame.get_column("row")))
                    .group_by("token")
                    .agg(count=pl.col("weight").sum())
                )
                counts[kind].append(part)
                if len(counts[kind]) >= _MERGE_EVERY:
                    counts[kind] = [_merge(counts[kind])]
            bar.advance(texts.len())
    return {kind: _merge(parts) for kind, parts in counts.items()}


def _merge(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema={"token": pl.Utf8, "count": pl.Int64})
    return pl.concat(parts).group_by("token").agg(pl.col("count").sum())


def select_vocab(counts: pl.DataFrame, cap: int, min_count: int, first_id: int) -> pl.DataFrame:
    """The ``cap`` most frequent tokens with ``count >= min_count``, ids from ``first_id``.

    Ranked by count (descending), then token (ascending, byte order), so ids are a pure
    function of the counts.
    """
    return (
        counts.filter(pl.col("count") >= min_count)
        .sort(["count", "token"], descending=[True, False])
        .head(cap)
        .select("token", id=(pl.int_range(pl.len()) + first_id).cast(pl.Int32), count=pl.col("count").cast(pl.Int64))
    )


#: How token counts are computed: :func:`count_tokens` here, or another engine's equivalent
#: (``features.spark_vocab.count_tokens_spark``) returning the same frames.
TokenCounter = Callable[[pl.DataFrame, FeatureConfig], dict[str, pl.DataFrame]]


def build_vocabularies(
    corpus: pl.DataFrame, cfg: FeatureConfig, counter: TokenCounter | None = None
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Count ``corpus`` (with ``counter``, default :func:`count_tokens`) and select the three
    vocabularies; return them and their stats.

    The stats per tokenizer: ``size``, ``distinct`` tokens seen, ``occurrences``, in-vocabulary
    ``coverage`` of token occurrences and the ``oov_rate`` (1 - coverage; those tokens are
    hashed into buckets, or dropped when OOV hashing is off); ``oov_rate`` over all tokens.
    """
    counts = (counter or count_tokens)(corpus, cfg)
    vocabs: dict[str, pl.DataFrame] = {}
    stats: dict[str, Any] = {}
    first_id = 0
    total = in_vocab_total = 0
    for kind in VOCAB_KINDS:
        vocab = select_vocab(counts[kind], cfg.vocab_cap(kind), cfg.min_count, first_id)
        occurrences = int(counts[kind].get_column("count").sum())
        in_vocab = int(vocab.get_column("count").sum())
        coverage = in_vocab / occurrences if occurrences else 0.0
        stats[kind] = {
            "size": vocab.height,
            "cap": cfg.vocab_cap(kind),
            "distinct": counts[kind].height,
            "occurrences": occurrences,
            "coverage": coverage,
            "oov_rate": 1.0 - coverage if occurrences else 0.0,
        }
        log.info("%s vocabulary: %d of %d distinct tokens, coverage %.2f%%",
                 kind, vocab.height, counts[kind].height, 100 * coverage)
        vocabs[kind] = vocab
        first_id += vocab.height
        total += occurrences
        in_vocab_total += in_vocab
    stats["oov_rate"] = 1.0 - in_vocab_total / total if total else 0.0
    return vocabs, stats
