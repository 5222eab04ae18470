"""Tokenizers: golden outputs, robustness on any Unicode, and the Polars path == the Python path."""
from __future__ import annotations

import sys
import unicodedata

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from omnisearchsage.contract import VOCAB_KINDS
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.text import (
    _fold_map,
    normalize,
    normalize_expr,
    python_path_agrees,
    token_frames,
    tokenize,
    words,
)

PAPER = "#ar art rti tis ist sti tic ic# #ip iph pho hon one ne# #6s 6s# #ca cas ase se#"


def test_paper_example_golden() -> None:
    t = tokenize("Artistic iPhone 6s Case")
    assert t.unigram == ["artistic", "iphone", "6s", "case"]
    assert t.bigram == ["artistic iphone", "iphone 6s", "6s case"]
    assert " ".join(t.char_trigram) == PAPER


def test_trigrams_never_cross_word_gaps_but_bigrams_span_punctuation() -> None:
    t = tokenize("ab, c")
    assert t.char_trigram == ["#ab", "ab#", "#c#"]
    assert t.bigram == ["ab c"]


def test_cjk_ideographs_are_words_of_their_own() -> None:
    assert words("手机壳iPhone 6s") == ["手", "机", "壳", "iphone", "6s"]
    assert tokenize("手机").bigram == ["手 机"]
    # Kana is not Han: a kana run stays one word.
    assert words("東京タワー") == ["東", "京", "タワー"]


def test_emoji_are_words_and_variation_selectors_and_joiners_are_dropped() -> None:
    assert words("Cozy🎄decor ❤️ 👩‍👧") == ["cozy", "🎄", "decor", "❤", "👩", "👧"]


def test_punctuation_symbols_and_zero_width_characters_split_words() -> None:
    assert words("Don't stop—believing!!! (C++) $20 a_b foo\u200bbar") == [
        "don", "t", "stop", "believing", "c", "20", "a", "b", "foo", "bar"]


def test_normalisation_folds_case_width_and_compatibility_forms() -> None:
    assert words("STRASSE Straße ＦＵＬＬ ﬁne Ⅻ") == ["strasse", "strasse", "full", "fine", "xii"]
    assert words("ΣΑΣ σας") == ["σασ", "σασ"]  # final sigma folds to sigma


def test_marks_continue_words_but_never_start_one_and_rtl_text_splits_on_spaces() -> None:
    assert words("e\u0301te \u0301abc") == ["éte", "abc"]
    assert words("مرحبا بالعالم") == ["مرحبا", "بالعالم"]
    assert words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


def test_limits_cut_long_text_after_normalising() -> None:
    cfg = FeatureConfig(max_chars=10, max_words=2)
    assert words("aaaa bbbb cccc", cfg) == ["aaaa", "bbbb"]
    assert words("ａａａａａａａａａａｂｂ", cfg) == ["aaaaaaaaaa"]  # cut counts normalised characters
    huge = "lorem ipsum " * 9000  # ~100 KB
    t = tokenize(huge)
    assert len(t.unigram) == FeatureConfig().max_words
    assert sum(len(w) + 1 for w in t.unigram) <= FeatureConfig().max_chars + 1


def test_empty_and_none_have_no_tokens() -> None:
    for text in ("", None, "   \t\n", "!!! ---", "\u200b\u200d"):
        assert tokenize(text) == ([], [], [])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_tokenize_never_raises_and_tokens_are_well_formed(text: str) -> None:
    t = tokenize(text)
    assert all(w and " " not in w and "#" not in w for w in t.unigram)
    assert all(b.count(" ") == 1 for b in t.bigram)
    assert len(t.bigram) == max(len(t.unigram) - 1, 0)
    assert all(len(g) == 3 for g in t.char_trigram)
    assert len(t.char_trigram) == sum(len(w) for w in t.unigram)


def test_surrogates_and_huge_single_words_do_not_raise() -> None:
    assert words("a\ud800b") == ["a", "b"]
    t = tokenize("x" * 100_000)
    assert len(t.char_trigram) == FeatureConfig().max_chars


def _polars_tokens(texts: list[str], cfg: FeatureConfig) -> list[tuple[list[str], ...]]:
    frames = token_frames(pl.Series(texts, dtype=pl.Utf8), cfg)
    grouped = {k: frames[k].group_by("row", maintain_order=True).agg("token") for k in VOCAB_KINDS}
    out = []
    for i in range(len(texts)):
        row = []
        for k in VOCAB_KINDS:
            hit = grouped[k].filter(pl.col("row") == i)
            row.append(hit.get_column("token")[0].to_list() if hit.height else [])
        out.append(tuple(row))
    return out


_ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=_ASSIGNED, max_size=40) | st.sampled_from(
    ["Artistic iPhone 6s Case", "手机壳 ΣΑΣ", "a\u0301b  c", "ﬁ\u1e9e ß", "x\x1cy\u2028z"]), min_size=1, max_size=12))
def test_polars_path_equals_python_path(texts: list[str]) -> None:
    cfg = FeatureConfig(max_chars=25, max_words=5)  # small limits so the cuts are exercised too
    assert _polars_tokens(texts, cfg) == [tuple(tokenize(t, cfg)) for t in texts]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=_ASSIGNED), min_size=1, max_size=10))
def test_normalize_expr_equals_normalize_and_is_idempotent(texts: list[str]) -> None:
    got = pl.DataFrame({"t": texts}).select(normalize_expr(pl.col("t"))).to_series().to_list()
    assert got == [normalize(t) for t in texts]
    assert [normalize(n) for n in got] == got


def test_fold_map_turns_lowercase_into_casefold_for_every_code_point() -> None:
    fold = _fold_map()
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
    assert all("".join(fold.get(d, d) for d in c.lower()) == c.casefold() for c in chars)
    # And Polars' NFKC/lowercase agree with Python's on every assigned character, in context.
    assigned = [c for c in chars if unicodedata.category(c) != "Cn"]
    texts = [f"a{c}Σ" for c in assigned]
    got = pl.DataFrame({"t": texts}).select(normalize_expr(pl.col("t"))).to_series().to_list()
    assert got == [normalize(t) for t in texts]


def test_python_path_agrees_flags_characters_unknown_to_python() -> None:
    assert python_path_agrees("plain ascii") and python_path_agrees("手机 ❤") and python_path_agrees(None)
    unassigned = next(chr(c) for c in range(0x80, sys.maxunicode) if unicodedata.category(chr(c)) == "Cn")
    assert not python_path_agrees(f"ok {unassigned}")
