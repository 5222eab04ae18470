"""Vectorised text assembly for the synthetic world.

All surface forms of :mod:`~omnisearchsage.sample_data.lexicon` (plus typo variants and brand
names) go into one flat string array; text is sampled as integer *form ids* per slot with NumPy
and joined into strings by Polars in one pass. That keeps the large world (2M pins, 20M
engagements) free of per-row Python loops: Python only loops over the vocabulary (a few thousand
forms).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from omnisearchsage.sample_data.lexicon import (
    ATTRIBUTE_KINDS,
    ATTRIBUTES,
    BOARD_EMOJI,
    BOARD_GENERIC,
    BOARD_PREFIXES,
    BOARD_SUFFIXES,
    BRAND_SYLLABLES,
    CONCEPTS_PER_TOPIC,
    FILLERS,
    LANGS,
    MODIFIERS,
    TOPICS,
)

#: Typo kinds per form: drop a letter, swap two neighbours, double a letter.
TYPO_KINDS = 3
#: Forms shorter than this are left alone by typos (a typo'd "gin" is just another word).
_MIN_TYPO_LEN = 4
#: Brand names have this many syllables at most (2 at least).
_MAX_BRAND_SYLLABLES = 3


def _typos(form: str, rng: np.random.Generator) -> list[str]:
    """Three misspellings of ``form`` (or ``form`` itself when too short to misspell)."""
    if len(form) < _MIN_TYPO_LEN:
        return [form] * TYPO_KINDS
    i = int(rng.integers(1, len(form) - 2))
    return [form[:i] + form[i + 1:], form[:i] + form[i + 1] + form[i] + form[i + 2:], form[:i] + form[i] + form[i:]]


class Vocab:
    """Every surface form the world can write, with index arrays to sample them by meaning.

    ``concept_start[t, l, c]`` / ``concept_n[t, l, c]``: the synonyms of concept ``c`` of topic
    ``t`` in language ``l`` are form ids ``start .. start + n``. Modifiers, fillers, board
    prefixes/suffixes/emoji/generic titles and brands are ranges of the same id space.
    ``attr_start[k, l, v]`` / ``attr_n[k, l, v]``: the synonyms of value ``v`` of attribute kind
    ``k`` (:data:`~omnisearchsage.sample_data.lexicon.ATTRIBUTE_KINDS` order) in language ``l``.
    ``typo[id, k]`` is the id of the k-th misspelling of base form ``id``.
    """

    def __init__(self, rng: np.random.Generator, brands_per_topic: int) -> None:
        forms: list[str] = []

        def add(group: list[str]) -> tuple[int, int]:
            start = len(forms)
            forms.extend(group)
            return start, len(group)

        n_t, n_l, n_c = len(TOPICS), len(LANGS), CONCEPTS_PER_TOPIC
        self.concept_start = np.zeros((n_t, n_l, n_c), np.int64)
        self.concept_n = np.zeros((n_t, n_l, n_c), np.int64)
        for t, topic in enumerate(TOPICS):
            for li, lang in enumerate(LANGS):
                concepts = topic.concepts(lang)
                if len(concepts) != n_c:
                    raise ValueError(f"lexicon: topic {topic.name!r} has {len(concepts)} concepts in {lang}")
                for c, synonyms in enumerate(concepts):
                    self.concept_start[t, li, c], self.concept_n[t, li, c] = add(synonyms)
        n_values = [len(ATTRIBUTES[k]["en"].split(";")) for k in ATTRIBUTE_KINDS]
        self.attr_values = np.array(n_values, np.int64)
        self.attr_start = np.zeros((len(ATTRIBUTE_KINDS), n_l, max(n_values)), np.int64)
        self.attr_n = np.zeros_like(self.attr_start)
        for k, kind in enumerate(ATTRIBUTE_KINDS):
            for li, lang in enumerate(LANGS):
                values = ATTRIBUTES[kind][lang].split(";")
                if len(values) != n_values[k]:
                    raise ValueError(f"lexicon: attribute {kind!r} has {len(values)} values in {lang}")
                for v, synonyms in enumerate(values):
                    self.attr_start[k, li, v], self.attr_n[k, li, v] = add(synonyms.split("|"))
        n_mod = len(MODIFIERS["en"].split(";"))
        self.modifier_start = np.zeros((n_l, n_mod), np.int64)
        self.modifier_n = np.zeros((n_l, n_mod), np.int64)
        self.filler_start = np.zeros(n_l, np.int64)
        self.filler_n = np.zeros(n_l, np.int64)
        for li, lang in enumerate(LANGS):
            for m, synonyms in enumerate(MODIFIERS[lang].split(";")):
                self.modifier_start[li, m], self.modifier_n[li, m] = add(synonyms.split("|"))
            self.filler_start[li], self.filler_n[li] = add(FILLERS[lang].split(";"))
        self.board_prefix = add(list(BOARD_PREFIXES))
        self.board_suffix = add(list(BOARD_SUFFIXES))
        self.board_emoji = add(list(BOARD_EMOJI))
        self.board_generic = add(list(BOARD_GENERIC))
        self.brands_per_topic = brands_per_topic
        self.brand_start = add(self._brand_names(rng, n_t * brands_per_topic))[0]

        n_base = len(forms)
        typo_forms = [v for f in forms for v in _typos(f, rng)]
        self.typo = n_base + np.arange(n_base * TYPO_KINDS, dtype=np.int64).reshape(n_base, TYPO_KINDS)
        forms.extend(typo_forms)
        # A trailing null lets slot id -1 ("no word here") gather to null.
        self.forms = pl.Series("forms", [*forms, None], dtype=pl.Utf8)
        self._null_id = len(forms)

    @staticmethod
    def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
        names: list[str] = []
        seen: set[str] = set()
        while len(names) < n:
            k = int(rng.integers(2, _MAX_BRAND_SYLLABLES + 1))
            name = "".join(rng.choice(BRAND_SYLLABLES, k)).capitalize()
            if name not in seen:
                seen.add(name)
                names.append(name)
        return names

    # ------------------------------------------------------------------ sampling (vectorised)
    def concept(self, rng: np.random.Generator, topic: np.ndarray, lang: np.ndarray,
                concept: np.ndarray) -> np.ndarray:
        """One synonym of each row's (topic, language, concept)."""
        start, n = self.concept_start[topic, lang, concept], self.concept_n[topic, lang, concept]
        return start + (rng.random(len(topic)) * n).astype(np.int64)

    def attribute(self, rng: np.random.Generator, kind: np.ndarray | int, lang: np.ndarray,
                  value: np.ndarray) -> np.ndarray:
        """One synonym of each row's attribute value (``value`` -1: no word, slot id -1)."""
        v = np.maximum(value, 0)
        start, n = self.attr_start[kind, lang, v], self.attr_n[kind, lang, v]
        return np.where(value >= 0, start + (rng.random(len(lang)) * n).astype(np.int64), -1)

    def modifier(self, rng: np.random.Generator, lang: np.ndarray) -> np.ndarray:
        m = rng.integers(0, self.modifier_start.shape[1], len(lang))
        start, n = self.modifier_start[lang, m], self.modifier_n[lang, m]
        return start + (rng.random(len(lang)) * n).astype(np.int64)

    def filler(self, rng: np.random.Generator, lang: np.ndarray) -> np.ndarray:
        return self.filler_start[lang] + (rng.random(len(lang)) * self.filler_n[lang]).astype(np.int64)

    def brand(self, rng: np.random.Generator, topic: np.ndarray) -> np.ndarray:
        return self.brand_start + topic * self.brands_per_topic + rng.integers(0, self.brands_per_topic, len(topic))

    @staticmethod
    def pick(rng: np.random.Generator, group: tuple[int, int], n: int) -> np.ndarray:
        """``n`` random forms of a plain group such as the board emoji."""
        return group[0] + rng.integers(0, group[1], n)

    def misspell(self, rng: np.random.Generator, ids: np.ndarray, prob: float) -> np.ndarray:
        """Replace each (present) form by one of its typos with probability ``prob``."""
        out = ids.copy()
        hit = (rng.random(len(ids)) < prob) & (ids >= 0) & (ids < self.typo.shape[0])
        out[hit] = self.typo[ids[hit], rng.integers(0, TYPO_KINDS, int(hit.sum()))]
        return out

    def join(self, slots: list[np.ndarray]) -> pl.Series:
        """Join per-row form ids (``-1`` = empty slot) with spaces; an all-empty row is null."""
        cols = {f"s{i}": self.forms.gather(np.where(s < 0, self._null_id, s)) for i, s in enumerate(slots)}
        text = pl.DataFrame(cols).select(pl.concat_str(pl.all(), separator=" ", ignore_nulls=True).alias("t"))
        return text.select(pl.when(pl.col("t") != "").then(pl.col("t"))).to_series()


def maybe(rng: np.random.Generator, ids: np.ndarray, prob: float) -> np.ndarray:
    """Keep each slot with probability ``prob`` (else ``-1``, no word)."""
    return np.where(rng.random(len(ids)) < prob, ids, -1)
