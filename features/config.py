"""Every knob of the features stage, in one dataclass.

The defaults are the paper's where it gives them (vocabularies of 200k word unigrams,
1M word bigrams and 64k character trigrams) and values that run on a laptop otherwise.
The config is stored in ``features/manifest.json`` and read back by
:class:`~omnisearchsage.features.featurizer.Featurizer`, so text encoded at training or
serving time goes through exactly the limits the tables were built with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from omnisearchsage.contract import PIN_FIELDS, PRODUCT_FIELDS, VOCAB_KINDS
from omnisearchsage.errors import OmniError

#: Tables ``omni features build`` can write (features/<name>.parquet).
FEATURE_TABLES = ("pins", "products", "queries")


@dataclass(frozen=True)
class FeatureConfig:
    """Vocabulary sizes, OOV hashing, text limits and what to build."""

    #: Vocabulary caps per tokenizer [paper: 200k / 1M / 64k].
    unigram_vocab: int = 200_000
    bigram_vocab: int = 1_000_000
    char_trigram_vocab: int = 64_000
    #: A token must occur this often in the training-window text to enter a vocabulary;
    #: rarer ones fall into the OOV buckets, which share their slots with other rare tokens.
    min_count: int = 2
    #: Hash buckets for out-of-vocabulary tokens, per tokenizer. About a tenth of each
    #: vocabulary: enough that unseen tokens still carry signal, small next to the vocabulary.
    unigram_oov_buckets: int = 20_000
    bigram_oov_buckets: int = 100_000
    char_trigram_oov_buckets: int = 8_192
    #: False drops out-of-vocabulary tokens instead of hashing them (the paper's behaviour);
    #: the id space then has no bucket ranges.
    use_oov: bool = True
    #: Text is normalised, then cut to ``max_chars`` characters and ``max_words`` words, so a
    #: pasted 100 KB description costs the same as a long one. Titles, queries and a full
    #: description fit well inside these limits.
    max_chars: int = 2048
    max_words: int = 256
    #: Tables to write and the fields to fill; a field left out is written as empty lists
    #: (the table keeps its contract columns), which is how feature ablations are built.
    #: Vocabularies are counted over the selected tables and fields only.
    tables: tuple[str, ...] = FEATURE_TABLES
    pin_fields: tuple[str, ...] = PIN_FIELDS
    product_fields: tuple[str, ...] = PRODUCT_FIELDS
    #: Texts tokenised per Polars batch while counting and encoding: bounds peak memory on a
    #: large world without making batches so small that per-batch overhead dominates.
    batch_rows: int = 250_000
    #: ``Featurizer.encode`` tokenises batches up to this size in Python (microseconds per
    #: query, no frame set-up) and larger ones with Polars expressions; both give the same ids.
    python_batch_max: int = 64

    def vocab_cap(self, kind: str) -> int:
        """The vocabulary cap of tokenizer ``kind`` (one of ``VOCAB_KINDS``)."""
        return {"unigram": self.unigram_vocab, "bigram": self.bigram_vocab,
                "char_trigram": self.char_trigram_vocab}[kind]

    def oov_buckets(self, kind: str) -> int:
        """OOV buckets of tokenizer ``kind``; 0 when OOV hashing is off."""
        if not self.use_oov:
            return 0
        return {"unigram": self.unigram_oov_buckets, "bigram": self.bigram_oov_buckets,
                "char_trigram": self.char_trigram_oov_buckets}[kind]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("tables", "pin_fields", "product_fields"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_json`; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("tables", "pin_fields", "product_fields"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def __post_init__(self) -> None:
        # Checked at construction so a bad CLI option fails before any work is done.
        for kind in VOCAB_KINDS:
            if self.vocab_cap(kind) < 0 or self.oov_buckets(kind) < 0:
                raise OmniError(f"{kind}: vocabulary size and OOV buckets must be >= 0")
        if self.min_count < 1 or self.max_chars < 1 or self.max_words < 1 or self.batch_rows < 1:
            raise OmniError("min_count, max_chars, max_words and batch_rows must be >= 1")
        bad = [t for t in self.tables if t not in FEATURE_TABLES]
        bad += [f for f in self.pin_fields if f not in PIN_FIELDS]
        bad += [f for f in self.product_fields if f not in PRODUCT_FIELDS]
        if bad:
            raise OmniError(f"unknown table or field: {', '.join(bad)} (tables: {', '.join(FEATURE_TABLES)}; "
                             f"pin fields: {', '.join(PIN_FIELDS)}; product fields: {', '.join(PRODUCT_FIELDS)})")
