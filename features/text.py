"""Text normalisation and the three tokenizers, shared by every stage.

One module, so the text a vocabulary was counted on, the text an entity table was
built from and the text a served query is encoded from go through the same steps:

1. **normalise** (:func:`normalize`): NFKC, case-fold, whitespace runs to one space, strip;
2. **cut** to ``max_chars`` characters (after normalising, so the cut is the same however
   the raw text was composed);
3. **words** (:func:`words`): maximal runs of letters, digits and combining marks (a mark
   continues a word but never starts one); every Han ideograph and every pictographic
   symbol (emoji, Unicode category ``So``) is a word of its own, because CJK text has no
   spaces and an emoji is a whole concept. Everything else separates words: whitespace,
   punctuation (``don't`` → ``don``, ``t``), math/currency/modifier symbols, controls and
   zero-width characters. At most ``max_words`` words are kept;
4. **unigrams** are the words; **bigrams** are adjacent words joined by one space (they span
   punctuation: "6s, case" gives "6s case");
5. **char trigrams** are taken per word, over ``#word#``, and never cross a word gap. The
   paper's example "artistic iphone 6s case" gives ``#ar art rti tis ist sti tic ic# #ip iph
   pho hon one ne# #6s 6s# #ca cas ase se#``. Not crossing gaps keeps a trigram a property
   of a word, so the trigram vocabulary is not spent on "c#i"-style junk, and word order
   stays the bigrams' job.

Each step exists twice: in Python (per text, microseconds, used for single queries and to
read) and as Polars expressions (:func:`token_frames`, used for millions of texts). The
Polars side mirrors the Python side exactly: Python's ``casefold`` is Rust's lowercase plus a
table of the characters where the two differ (:func:`_fold_map`, derived from Python's own
Unicode database); Python's ``\\s`` is Rust's ``\\s`` plus U+001C-U+001F; the word pattern is
one string compiled by the ``regex`` module and by Rust's regex crate, which share the
syntax. They agree on every character assigned in Python's Unicode database; for characters
assigned only in a newer Unicode version the libraries' tables can differ, so
:func:`python_path_agrees` tells callers when to take the Polars path
(``Featurizer.encode`` does).
"""
from __future__ import annotations

import bisect
import functools
import itertools
import re
import sys
import unicodedata
from typing import NamedTuple

import polars as pl
import regex

from omnisearchsage.features.config import FeatureConfig

_WS = re.compile(r"\s+")
#: Python's ``\s`` (``str.isspace``) in Rust regex syntax: Rust's ``\s`` lacks the four
#: information separators U+001C-U+001F, which Python counts as whitespace.
_WS_RUST = r"[\s\x1c-\x1f]+"

#: A word: one Han ideograph, one pictographic symbol, or a run of letters/digits/marks that
#: starts with a letter or digit. Written once, compiled by both engines.
WORD_PATTERN = (
    r"\p{sc=Han}"
    r"|\p{So}"
    r"|[[\p{L}\p{N}]--\p{sc=Han}][[\p{L}\p{N}\p{M}]--\p{sc=Han}]*"
)
_WORD = regex.compile(WORD_PATTERN, regex.V1)
#: Marks a word's start and end inside char trigrams; never part of a word (it is punctuation).
BOUNDARY = "#"
_DEFAULT = FeatureConfig()


def normalize(text: str | None) -> str:
    """NFKC, case-fold, collapse whitespace runs to one space, strip. ``None`` → ``""``."""
    if not text:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class Tokens(NamedTuple):
    """The three token sequences of one text, each in text order."""

    unigram: list[str]
    bigram: list[str]
    char_trigram: list[str]


def words(text: str | None, cfg: FeatureConfig = _DEFAULT, normalized: bool = False) -> list[str]:
    """The words of ``text`` after normalising (skipped when the caller already did: ``normalized``),
    within ``cfg``'s character and word limits."""
    found = _WORD.finditer((text or "" if normalized else normalize(text))[: cfg.max_chars])
    return [m.group() for _, m in zip(range(cfg.max_words), found)]


def has_words(text: str | None, normalized: bool = False) -> bool:
    """Whether ``text`` has at least one word: a text of only whitespace, punctuation, NUL or
    zero-width characters has no token to encode, so it is as empty as ``""``."""
    return _WORD.search(text or "" if normalized else normalize(text)) is not None


def bigrams(word_list: list[str]) -> list[str]:
    """Adjacent word pairs joined by one space."""
    return [f"{a} {b}" for a, b in itertools.pairwise(word_list)]


def char_trigrams(word_list: list[str]) -> list[str]:
    """Character trigrams of each ``#word#``; none spans two words."""
    out: list[str] = []
    for w in word_list:
        padded = f"{BOUNDARY}{w}{BOUNDARY}"
        out.extend(padded[i : i + 3] for i in range(len(w)))
    return out


def tokenize(text: str | None, cfg: FeatureConfig = _DEFAULT, normalized: bool = False) -> Tokens:
    """Unigrams, bigrams and char trigrams of one text (the per-text Python path)."""
    ws = words(text, cfg, normalized)
    return Tokens(ws, bigrams(ws), char_trigrams(ws))


# ---------------------------------------------------------------- the Polars path
@functools.cache
def _fold_map() -> dict[str, str]:
    """Characters whose case-fold differs from their lowercase form, mapped to the fold.

    Lowercasing then applying this map equals ``str.casefold`` on every string (each
    character's fold is the fold of its lowercase form; checked in the tests over all of
    Unicode). Built from Python's Unicode database on first use (~0.2 s), so both paths use
    one version of the case tables.
    """
    out = {}
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if c.lower() == c and (f := c.casefold()) != c:
            out[c] = f
    return out


def normalize_expr(text: pl.Expr) -> pl.Expr:
    """:func:`normalize` as a Polars expression (null → ``""``)."""
    return (
        text.fill_null("")
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_many(_fold_map())
        .str.replace_all(_WS_RUST, " ")
        .str.strip_chars(" ")
    )


def words_expr(text: pl.Expr, cfg: FeatureConfig = _DEFAULT, normalized: bool = False) -> pl.Expr:
    """:func:`words` as a Polars expression: a ``list[str]`` per text, never null."""
    return (text.fill_null("") if normalized else normalize_expr(text)).str.slice(0, cfg.max_chars).str.extract_all(WORD_PATTERN).list.head(cfg.max_words)


def has_words_expr(normalized: pl.Expr) -> pl.Expr:
    """:func:`has_words` as a Polars expression over already-normalised text (null → False)."""
    return normalized.str.contains(WORD_PATTERN).fill_null(False)


def token_frames(texts: pl.Series, cfg: FeatureConfig = _DEFAULT, normalized: bool = False) -> dict[str, pl.DataFrame]:
    """All tokens of a batch of texts, one frame per tokenizer.

    Each frame has columns ``row`` (UInt32, the text's position in ``texts``) and ``token``,
    ordered by row and, within a row, by position in the text: exactly :func:`tokenize`'s
    lists, concatenated. Nulls are empty texts.
    """
    w = (
        pl.DataFrame({"text": texts.cast(pl.Utf8)})
        .select(row=pl.int_range(pl.len(), dtype=pl.UInt32), token=words_expr(pl.col("text"), cfg, normalized))
        .explode("token")
        .drop_nulls("token")  # a text without words explodes to one null row
    )
    lw = w.lazy()
    same_text = pl.col("row") == pl.col("row").shift(-1)
    bigram = lw.select(
        "row",
        token=pl.when(same_text).then(pl.concat_str("token", pl.col("token").shift(-1), separator=" ")),
    ).drop_nulls("token")
    # Trigram i of "#word#" starts at character i, for i < len(word).
    trigram = (
        lw.select(
            "row",
            padded=pl.concat_str(pl.lit(BOUNDARY), "token", pl.lit(BOUNDARY)),
            start=pl.int_ranges(0, pl.col("token").str.len_chars(), dtype=pl.UInt32),
        )
        .explode("start")
        .select("row", token=pl.col("padded").str.slice(pl.col("start"), 3))
    )
    bi, tri = pl.collect_all([bigram, trigram])
    return {"unigram": w, "bigram": bi, "char_trigram": tri}


@functools.cache
def _unassigned_starts() -> list[int]:
    """Sorted boundaries of the code-point ranges unassigned in Python's Unicode database.

    Even indices start an unassigned run, odd indices start an assigned one, so a code
    point is unassigned iff ``bisect_right(starts, cp)`` is odd.
    """
    starts: list[int] = []
    prev = False
    for cp in range(sys.maxunicode + 2):
        cur = cp <= sys.maxunicode and unicodedata.category(chr(cp)) == "Cn"
        if cur != prev:
            starts.append(cp)
            prev = cur
    return starts


def python_path_agrees(text: str | None) -> bool:
    """True when :func:`tokenize` and :func:`token_frames` are sure to agree on ``text``.

    They differ only on characters that Python's Unicode database (version
    ``unicodedata.unidata_version``) does not know yet; ASCII text is decided at once.
    """
    if not text or text.isascii():
        return True
    starts = _unassigned_starts()
    return not any(bisect.bisect_right(starts, ord(c)) % 2 for c in text if ord(c) > 0x7F)
