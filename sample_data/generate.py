"""The synthetic Pinterest-like world: a complete workspace in which the paper's effects show up.

Generative story (all knobs in :class:`~omnisearchsage.sample_data.config.WorldConfig`):

* 40 interests (topics) with 6 concepts each, in English, French, German and Spanish, with
  synonyms (:mod:`~omnisearchsage.sample_data.lexicon`). Topics have Zipf popularity.
* Attributes: every pin and product has a topic, a concept and one value of each attribute kind
  (colour, pattern, material, style, occasion, audience), drawn from the few values its topic
  uses. Colour and pattern are *visual*: they are drawn in the image.
* Queries ask for a concept plus zero to two attributes, with modifiers, synonyms and typos,
  ~15% non-English, Zipf popularity. An engagement (one year, traffic growing so the last week
  is well populated) links a query to a pin, a product or a related query of mostly the same
  topic and concept, preferring entities that have the attributes the query asked for, then
  popular ones (Zipf entity popularity). ``untitled_search_exposure`` < 1 makes search show a pin
  without any text less often (it scales its popularity in both windows; off by default).
* Each channel reveals a different, noisy part of an entity (the paper's point: enrichment adds
  what the catalogue's own fields miss):

  ==================  =====================================================================
  channel             reveals
  ==================  =====================================================================
  legacy embedding    topic and the visual attributes well, the concept weakly (a short
                      offset), the other attributes hardly at all (like PinSage / ItemSage);
                      an entity's look is drawn independently of its concept, so the visual
                      attributes tell nothing of the concept
  title/description   ~60% of pins: the concept (synonyms, typos, words of other topics) and
                      each attribute with some probability (audience least), sometimes a
                      wrong value
  image (captions)    topic (shape + background), concept (frame colour), and the entity's
                      colour and pattern as far as its concept's few image files show them;
                      never material, style, occasion or audience. ~30% of pins have alt text
  board titles        the board's topic (its head word, never a concept of it) plus a style or
                      occasion word; pins are saved mostly to boards naming their own style or
                      occasion, on most pins (text on about a quarter)
  engaged queries     (built by ``omni enrich queries``) the words users typed to reach the
                      entity in the training window: concept and the asked attributes; with
                      text, the only channel naming material and audience
  ==================  =====================================================================

  No channel carries an entity's id or anything drawn from the engagements (the test window).
* Images: each unique image file shows one (topic, concept, colour, pattern); pattern marks stop at
  an unbroken edge so the shape, which names the topic, stays readable. Pins and products
  draw their own colour and pattern, then pick an image of their (topic, concept) showing that
  look, else that colour, else any (by popularity), so many pins share one file, the way repins do.
* Fresh pins (``fresh_pin_share``): created ``fresh_days`` before the log ends, after the training
  cutoff, so they are engaged only in the gap and the test window (``fresh_pin_boost`` times as often
  as a settled pin of equal popularity) and have no engaged queries.
* Products: brand, title, description, image and legacy embedding in the same space.
* Boards: human-written titles ("my boho living room 😍", typos, generic "favs"); ~90% of pins
  are saved to at least one board, mostly boards of their own topic.

Everything is vectorised with NumPy and Polars (Python loops only over the vocabulary and over
unique image files) and written in chunks with a pyarrow ``ParquetWriter``, so the large world
(2M pins, 20M engagements) stays within a few GB of memory. A seed gives identical bytes.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import (
    ACTIONS,
    BOARD_PINS,
    BOARDS,
    ENGAGEMENTS,
    ENTITY_TYPES,
    PINS,
    PRODUCTS,
    RAW_TABLES,
    TRUTH_PINS,
    TRUTH_PRODUCTS,
    TRUTH_QUERIES,
    TableSchema,
    Workspace,
)
from omnisearchsage.errors import OmniError
from omnisearchsage.progress import progress_bar
from omnisearchsage.sample_data.config import WorldConfig, world_config
from omnisearchsage.sample_data.images import ImageSpec, write_image
from omnisearchsage.sample_data.lexicon import (
    ATTRIBUTE_KINDS,
    ATTRIBUTES,
    CONCEPTS_PER_TOPIC,
    LANGS,
    TOPICS,
    VISUAL_KINDS,
)
from omnisearchsage.sample_data.vocab import Vocab, maybe

log = logging.getLogger(__name__)

N_TOPICS = len(TOPICS)
N_CONCEPTS = CONCEPTS_PER_TOPIC
N_KINDS = len(ATTRIBUTE_KINDS)
_COLOUR, _PATTERN = (ATTRIBUTE_KINDS.index(k) for k in VISUAL_KINDS)
_STYLE, _OCCASION = ATTRIBUTE_KINDS.index("style"), ATTRIBUTE_KINDS.index("occasion")
#: Attribute kinds written before the concept in English and German queries ("red wooden
#: table"); French and Spanish put them after ("table rouge"), every language puts occasion and
#: audience after ("... for kids").
_PRE_KINDS = (_COLOUR, _PATTERN, ATTRIBUTE_KINDS.index("material"), _STYLE)
_PRE_LANGS = (LANGS.index("en"), LANGS.index("de"))

# Independent random streams, so changing one table's size never changes another table.
_STREAM_WORLD, _STREAM_IMAGES, _STREAM_PINS, _STREAM_PRODUCTS = 1, 2, 3, 4
_STREAM_BOARDS, _STREAM_QUERIES, _STREAM_ENGAGEMENTS, _STREAM_VOCAB = 5, 6, 7, 8
_STREAM_FRESH, _STREAM_RELATED = 9, 10


@dataclass
class WorldStats:
    """What was generated: row counts, coverage fractions, language shares, time taken."""

    size: str
    seed: int
    pins: int = 0
    products: int = 0
    boards: int = 0
    board_pins: int = 0
    engagements: int = 0
    queries: int = 0
    image_files: int = 0
    pins_without_text: float = 0.0
    pins_with_alt_text: float = 0.0
    pins_on_a_board: float = 0.0
    #: Pins created after the training cutoff (no training engagement).
    pins_fresh: float = 0.0
    #: Share of distinct queries asking for 0, 1 and 2 attributes.
    query_attr_counts: list[float] = field(default_factory=list)
    engagements_last_7_days: int = 0
    #: Share of engagements per query language.
    query_langs: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: Wall time per phase (images, boards, pins, products, queries, engagements).
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers
def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, chunk])


def _zipf_weights(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """Popularity ~ rank^-s, with ranks assigned at random (popularity is not tied to id order)."""
    return (rng.permutation(n) + 1.0) ** -s


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    return pl.select((pl.lit(prefix) + pl.int_range(n, eager=False).cast(pl.Utf8).str.zfill(width))
                     .alias("id")).to_series()


def _width(n: int) -> int:
    return max(6, len(str(n)))


def _chunks(n: int, size: int) -> Iterator[tuple[int, int, int]]:
    for i, lo in enumerate(range(0, n, size)):
        yield i, lo, min(n, lo + size)


class _BlockSampler:
    """Draw items of a requested (group, slot) block with popularity weights: (topic, concept) for
    entities, ((topic, concept), look) for the images an entity of a given look may show.

    Items are sorted by block; a draw is a ``searchsorted`` into the block's slice of the
    cumulative weights. An empty block falls back to the group, an empty group to everything
    (only the tiny world has those).
    """

    def __init__(self, topic: np.ndarray, concept: np.ndarray, weight: np.ndarray, n_concepts: int,
                 n_groups: int = N_TOPICS) -> None:
        self.c = n_concepts
        block = topic.astype(np.int64) * n_concepts + concept
        self.order = np.argsort(block, kind="stable")
        self.cum = np.concatenate([[0.0], np.cumsum(weight[self.order])])
        counts = np.bincount(block, minlength=n_groups * n_concepts)
        ends = np.cumsum(counts)
        self.start, self.end = ends - counts, ends
        self.n = len(topic)
        self.block = block
        self.position = np.empty_like(self.order)
        self.position[self.order] = np.arange(len(self.order))

    def neighbour(self, idx: np.ndarray) -> np.ndarray:
        """The next item of each item's own block (itself in a block of one)."""
        b = self.block[idx]
        lo, size = self.start[b], self.end[b] - self.start[b]
        return self.order[lo + (self.position[idx] - lo + 1) % size]

    def has(self, topic: np.ndarray, concept: np.ndarray) -> np.ndarray:
        """Whether each requested block holds at least one item."""
        b = topic.astype(np.int64) * self.c + concept
        return self.end[b] > self.start[b]

    def draw(self, rng: np.random.Generator, topic: np.ndarray, concept: np.ndarray) -> np.ndarray:
        b = topic.astype(np.int64) * self.c + concept
        lo, hi = self.start[b], self.end[b]
        empty = hi == lo
        lo = np.where(empty, self.start[topic * self.c], lo)
        hi = np.where(empty, self.end[topic * self.c + self.c - 1], hi)
        empty = hi == lo
        lo, hi = np.where(empty, 0, lo), np.where(empty, self.n, hi)
        x = self.cum[lo] + rng.random(len(b)) * (self.cum[hi] - self.cum[lo])
        pos = np.clip(np.searchsorted(self.cum, x, side="right") - 1, lo, hi - 1)
        return self.order[pos]


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    if dtype == pl.Utf8:
        return pa.string()
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    if isinstance(dtype, pl.Datetime):
        return pa.timestamp(dtype.time_unit)
    return pl.Series([], dtype=dtype).to_arrow().type


def _arrow_schema(table: TableSchema) -> pa.Schema:
    return pa.schema([pa.field(c.name, _arrow_type(c.dtype), nullable=c.nullable) for c in table.columns])


class _TableWriter:
    """Append chunks to one contract table; the file appears (atomically) only when complete."""

    def __init__(self, ws: Workspace, table: TableSchema, stack: contextlib.ExitStack) -> None:
        self.schema = _arrow_schema(table)
        tmp = stack.enter_context(atomic_path(ws.path(table)))
        self.writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        stack.callback(self.writer.close)  # runs before atomic_path renames (LIFO)
        self.rows = 0

    def write(self, df: pl.DataFrame) -> None:
        tbl = df.select(self.schema.names).to_arrow(compat_level=pl.CompatLevel.oldest()).cast(self.schema)
        self.writer.write_table(tbl)
        self.rows += len(df)


# ----------------------------------------------------------------------------- the world
class _World:
    """Entity attributes (small integer arrays) shared by the table builders."""

    def __init__(self, cfg: WorldConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        rng = _rng(seed, _STREAM_WORLD)
        self.topic_p = _zipf_weights(rng, N_TOPICS, cfg.topic_zipf)
        self.topic_p /= self.topic_p.sum()
        self.lang_p = np.asarray(cfg.lang_shares) / sum(cfg.lang_shares)
        self.vocab = Vocab(_rng(seed, _STREAM_VOCAB), cfg.brands_per_topic)
        # The values each topic uses, per attribute kind: [topic, kind, j] -> value index.
        n_values = self.vocab.attr_values
        if cfg.attr_values_per_topic > n_values.min():
            raise OmniError(f"attr_values_per_topic {cfg.attr_values_per_topic}: an attribute kind has only "
                            f"{n_values.min()} values")
        keys = rng.random((N_TOPICS, N_KINDS, n_values.max()))
        keys[:, np.arange(n_values.max())[None, :] >= n_values[:, None]] = np.inf
        self.topic_values = np.argsort(keys, axis=2)[:, :, :cfg.attr_values_per_topic].astype(np.int8)
        # Legacy space: a unit centroid per topic plus one offset direction per (topic, concept) and
        # per attribute value, of the configured lengths (visual values long, others short).
        d = cfg.legacy_dim
        self.topic_centroid = _unit(rng.standard_normal((N_TOPICS, d))).astype(np.float32)
        self.concept_offset = (_unit(rng.standard_normal((N_TOPICS, N_CONCEPTS, d)))
                               * cfg.legacy_concept_weight).astype(np.float32)
        kind_weight = np.array([cfg.legacy_visual_weight if k in VISUAL_KINDS else cfg.legacy_nonvisual_weight
                                for k in ATTRIBUTE_KINDS], np.float32)
        self.attr_offset = (_unit(rng.standard_normal((N_KINDS, n_values.max(), d)))
                            * kind_weight[:, None, None]).astype(np.float32)

    def attributes(self, rng: np.random.Generator, topic: np.ndarray, kinds: tuple[int, ...]) -> np.ndarray:
        """One value of each of ``kinds`` per row, among its topic's values: int8 [n, len(kinds)]."""
        j = rng.integers(0, self.cfg.attr_values_per_topic, (len(topic), len(kinds)))
        return self.topic_values[topic[:, None], np.asarray(kinds)[None, :], j]

    def slot(self, topic: np.ndarray, kind: int, value: np.ndarray) -> np.ndarray:
        """Each value's position among its topic's values of ``kind`` (0 .. attr_values_per_topic - 1)."""
        return np.argmax(self.topic_values[topic, kind] == value[:, None], axis=1)

    def other_value(self, rng: np.random.Generator, topic: np.ndarray, kind: int, value: np.ndarray) -> np.ndarray:
        """Another value of ``kind`` used by each row's topic (for misleading text)."""
        vals = self.topic_values[topic, kind]
        j = (np.argmax(vals == value[:, None], axis=1) + rng.integers(1, vals.shape[1], len(topic))) % vals.shape[1]
        return vals[np.arange(len(topic)), j]

    def topics(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(N_TOPICS, n, p=self.topic_p)

    def langs(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(LANGS), n, p=self.lang_p)

    def legacy(self, rng: np.random.Generator, topic: np.ndarray, concept: np.ndarray,
               attrs: np.ndarray) -> pl.Series:
        """Noisy, L2-normalised, quantised legacy embeddings (null for a small share)."""
        cfg = self.cfg
        emb = rng.standard_normal((len(topic), cfg.legacy_dim), dtype=np.float32)
        emb *= cfg.legacy_noise / np.sqrt(cfg.legacy_dim)
        emb += self.topic_centroid[topic]
        emb += self.concept_offset[topic, concept]
        for k in range(N_KINDS):
            emb += self.attr_offset[k, attrs[:, k]]
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.round(emb / cfg.legacy_quant_step) * np.float32(cfg.legacy_quant_step)
        s = pl.Series("legacy_embedding", emb).cast(pl.List(pl.Float32))
        missing = pl.Series(rng.random(len(topic)) < cfg.legacy_missing_share)
        return pl.select(pl.when(~missing).then(s)).to_series().alias("legacy_embedding")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class _Images:
    """Unique image files of one entity kind: their block, relative path and description."""

    topic: np.ndarray
    concept: np.ndarray
    #: Visual attribute values shown: [n, 2] (colour, pattern).
    visual: np.ndarray
    paths: pl.Series
    descriptions: pl.Series
    words: pl.Series
    sampler: _BlockSampler
    #: The same files by ((topic, concept), colour and pattern slot) and by ((topic, concept), colour slot).
    by_look: _BlockSampler
    by_colour: _BlockSampler

    def pick(self, world: _World, rng: np.random.Generator, topic: np.ndarray, concept: np.ndarray,
             colour: np.ndarray, pattern: np.ndarray) -> np.ndarray:
        """An image of each entity's (topic, concept), popularity-weighted, showing the entity's own
        colour and pattern when its block has such a file, else its colour, else any of the block.

        Entities draw their look independently of their concept, so the visual attributes (which
        the legacy embedding shows well) say nothing about the concept; the image shows the
        entity's look as far as the few files of its block allow.
        """
        block = topic.astype(np.int64) * N_CONCEPTS + concept
        c_slot, p_slot = world.slot(topic, _COLOUR, colour), world.slot(topic, _PATTERN, pattern)
        look = c_slot * world.cfg.attr_values_per_topic + p_slot
        both, by_colour = self.by_look.draw(rng, block, look), self.by_colour.draw(rng, block, c_slot)
        any_ = self.sampler.draw(rng, topic, concept)
        return np.where(self.by_look.has(block, look), both,
                        np.where(self.by_colour.has(block, c_slot), by_colour, any_))


def _plan_images(world: _World, rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Cover every (topic, concept) block first, then follow topic popularity."""
    n_blocks = N_TOPICS * N_CONCEPTS
    if n >= n_blocks:
        rest = n - n_blocks
        topic = np.concatenate([np.repeat(np.arange(N_TOPICS), N_CONCEPTS), world.topics(rng, rest)])
        concept = np.concatenate([np.tile(np.arange(N_CONCEPTS), N_TOPICS), rng.integers(0, N_CONCEPTS, rest)])
    else:
        topic = np.arange(n) % N_TOPICS
        concept = rng.integers(0, N_CONCEPTS, n)
    log.debug("%s images: %d files over %d blocks", kind, n, n_blocks)
    return topic, concept


def _write_images(world: _World, images_dir: Path, kind: str, n: int, stream_chunk: int) -> _Images:
    cfg = world.cfg
    rng = _rng(world.seed, _STREAM_IMAGES, stream_chunk)
    topic, concept = _plan_images(world, rng, n, kind)
    counts = rng.integers(1, 4, n)
    visual = world.attributes(rng, topic, (_COLOUR, _PATTERN))
    folder = images_dir / kind
    folder.mkdir(parents=True, exist_ok=True)
    specs = [ImageSpec(int(t), int(c), int(k), int(col), int(pat))
             for t, c, k, (col, pat) in zip(topic, concept, counts, visual)]
    width = _width(n)
    names = [f"{i:0{width}d}.png" for i in range(n)]
    with progress_bar(n, f"{kind} images", "img") as bar:
        for spec, name in zip(specs, names):
            write_image(spec, folder / name, rng, cfg.image_size, cfg.colour_jitter)
            bar.advance()
    paths = pl.Series("image_path", [f"raw/images/{kind}/{name}" for name in names])
    descriptions = pl.Series("image_description", [s.description for s in specs])
    words = pl.Series("image_words", [s.words for s in specs], dtype=pl.List(pl.Utf8))
    # Repins: a few images of a block are saved far more often than the rest.
    weight = _zipf_weights(rng, n, cfg.entity_zipf)
    block, v = topic.astype(np.int64) * N_CONCEPTS + concept, cfg.attr_values_per_topic
    c_slot, p_slot = world.slot(topic, _COLOUR, visual[:, 0]), world.slot(topic, _PATTERN, visual[:, 1])
    n_blocks = N_TOPICS * N_CONCEPTS
    return _Images(topic, concept, visual, paths, descriptions, words,
                   _BlockSampler(topic, concept, weight, N_CONCEPTS),
                   _BlockSampler(block, c_slot * v + p_slot, weight, v * v, n_groups=n_blocks),
                   _BlockSampler(block, c_slot, weight, v, n_groups=n_blocks))


def _other_concept(rng: np.random.Generator, concept: np.ndarray) -> np.ndarray:
    """A different concept of the same topic."""
    return (concept + rng.integers(1, N_CONCEPTS, len(concept))) % N_CONCEPTS


def _titlecase_some(s: pl.Series, mask: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(mask)).then(s.str.to_titlecase()).otherwise(s)).to_series().alias(s.name)


def _null_unless(s: pl.Series, keep: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(keep)).then(s)).to_series().alias(s.name)


# ----------------------------------------------------------------------------- pins
@dataclass
class _Entities:
    """Pins or products as the engagement stage needs them: ids, attributes, a block sampler."""

    ids: pl.Series
    #: int8 [n, N_KINDS]: each entity's value of every attribute kind.
    attrs: np.ndarray
    sampler: _BlockSampler
    #: Entities created ``fresh_days`` before the log ends (none: every entity exists throughout).
    fresh: np.ndarray | None = None
    #: The entities that are not fresh and a block sampler over them (positions into ``settled``), for
    #: the rare engagement before the cutoff whose candidates are all fresh (small blocks).
    settled: np.ndarray | None = None
    settled_sampler: _BlockSampler | None = None
    #: Once fresh entities exist: a block sampler whose weights scale theirs by ``fresh_pin_boost``.
    fresh_sampler: _BlockSampler | None = None


def _draw_entities(world: _World, images: _Images, stream: int, n: int, prefix: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, pl.Series]:
    """What pins and products share: each draws a topic, a concept and one value of every attribute
    kind among its topic's values, independently (so no attribute tells the concept), picks an
    image of its (topic, concept) that shows its look (:meth:`_Images.pick`), and gets a Zipf
    popularity weight and an id. Returns image index, topic, concept, attributes, weight and ids;
    later draws use per-chunk generators of the same stream."""
    rng = _rng(world.seed, stream)
    topic, concept = world.topics(rng, n), rng.integers(0, N_CONCEPTS, n)
    attrs = world.attributes(rng, topic, tuple(range(N_KINDS)))
    img = images.pick(world, rng, topic, concept, attrs[:, _COLOUR], attrs[:, _PATTERN])
    weight = _zipf_weights(rng, n, world.cfg.entity_zipf)
    # A block without any image file (only in the tiny world) borrows another block's: the entity
    # takes that image's (topic, concept), and its look when the topic changed too.
    moved = images.topic[img] != topic
    topic = images.topic[img]
    attrs[moved] = world.attributes(rng, topic[moved], tuple(range(N_KINDS)))
    return img, topic, images.concept[img], attrs, weight, _ids(prefix, n, _width(n))


def _attr_words(world: _World, r: np.random.Generator, topic: np.ndarray, lang: np.ndarray, attrs: np.ndarray,
                probs: tuple[float, ...]) -> list[np.ndarray]:
    """Per attribute kind, a word naming the entity's value with probability ``probs[kind]`` (-1:
    not named); with ``text_attr_noise_prob`` the word names another value of the topic."""
    cfg, v = world.cfg, world.vocab
    out = []
    for k in range(N_KINDS):
        value = attrs[:, k].astype(np.int64)
        value = np.where(r.random(len(topic)) < cfg.text_attr_noise_prob, world.other_value(r, topic, k, value), value)
        value = np.where(r.random(len(topic)) < probs[k], value, -1)
        out.append(v.misspell(r, v.attribute(r, k, lang, value), cfg.typo_prob))
    return out


def _pre_post(words: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Attribute words written before the concept (colour, pattern, material, style) and after it."""
    return [words[k] for k in _PRE_KINDS], [w for k, w in enumerate(words) if k not in _PRE_KINDS]


def _pins(world: _World, ws: Workspace, images: _Images, boards: _Boards, stats: WorldStats,
          stack: contextlib.ExitStack) -> _Entities:
    cfg, v = world.cfg, world.vocab
    n = cfg.pins
    img, topic, concept, attrs, weight, ids = _draw_entities(world, images, _STREAM_PINS, n, "p")
    fresh = _rng(world.seed, _STREAM_FRESH).random(n) < cfg.fresh_pin_share
    # A fresh pin enters the catalogue when its engagements may start; the others at the log's start.
    created = np.where(fresh, np.datetime64(cfg.end - timedelta(days=cfg.fresh_days), "us"),
                       np.datetime64(cfg.end - timedelta(days=cfg.days), "us"))
    pins_w = _TableWriter(ws, PINS, stack)
    truth_w = _TableWriter(ws, TRUTH_PINS, stack)
    bp_w = _TableWriter(ws, BOARD_PINS, stack)
    texted = np.zeros(n, bool)
    alt = on_board = 0
    with progress_bar(n, "pins", "pin") as bar:
        for chunk, lo, hi in _chunks(n, cfg.entity_chunk_rows):
            r = _rng(world.seed, _STREAM_PINS, chunk + 1)
            m = hi - lo
            t, c, a, im = topic[lo:hi], concept[lo:hi], attrs[lo:hi], img[lo:hi]
            lang = world.langs(r, m)
            has_text = r.random(m) >= np.where(fresh[lo:hi], cfg.fresh_pin_no_text_share, cfg.pin_no_text_share)
            has_title = has_text & (r.random(m) < cfg.pin_title_prob)
            has_desc = has_text & (r.random(m) < cfg.pin_description_prob)
            has_title |= has_text & ~has_desc
            noise_t = world.topics(r, m)

            def word(p: float, tt: np.ndarray = t, cc: np.ndarray = c, r: np.random.Generator = r,
                     lang: np.ndarray = lang) -> np.ndarray:
                return maybe(r, v.misspell(r, v.concept(r, tt, lang, cc), cfg.typo_prob), p)

            pre, post = _pre_post(_attr_words(world, r, t, lang, a, cfg.pin_text_attr_prob))
            title = v.join([
                maybe(r, v.modifier(r, lang), 0.3), *pre, word(1.0), word(0.25, cc=_other_concept(r, c)), *post,
                word(cfg.noise_word_prob, tt=noise_t, cc=r.integers(0, N_CONCEPTS, m)),
            ])
            title = _null_unless(_titlecase_some(title, r.random(m) < 0.3), has_title)
            pre, post = _pre_post(_attr_words(world, r, t, lang, a, cfg.pin_text_attr_prob))
            desc = v.join([
                maybe(r, v.filler(r, lang), 0.6), *pre, word(1.0), maybe(r, v.modifier(r, lang), 0.4), *post,
                word(0.4, cc=_other_concept(r, c)), word(0.25, cc=_other_concept(r, c)),
                word(cfg.noise_word_prob, tt=noise_t, cc=r.integers(0, N_CONCEPTS, m)),
                maybe(r, v.filler(r, lang), 0.3),
            ])
            desc = _null_unless(desc, has_desc)
            has_alt = r.random(m) < cfg.alt_text_share
            pid = ids.slice(lo, m)
            pins_w.write(pl.DataFrame([
                pid.alias("pin_id"), title.alias("title"), desc.alias("description"),
                images.paths.gather(im),
                _null_unless(pl.Series("lang", np.asarray(LANGS)[lang]), has_text),
                world.legacy(r, t, c, a),
                _null_unless(images.descriptions.gather(im), has_alt).alias("alt_text"),
                pl.Series("created_at", created[lo:hi]),
            ]))
            truth_w.write(pl.DataFrame([
                pid.alias("pin_id"), _names(t).alias("topic"), _concept_words(t, c).alias("concept"),
                images.words.gather(im), images.descriptions.gather(im), _attr_names(a),
                pl.Series("fresh", fresh[lo:hi]),
            ]))
            # Board saves: most pins on 1 + Poisson boards, mostly boards of their own topic, and
            # mostly boards whose title names the pin's own style or occasion.
            saved = r.random(m) < cfg.on_board_share
            k = np.where(saved, 1 + r.poisson(cfg.extra_boards_mean, m), 0)
            rows = np.repeat(np.arange(m), k)
            bt = np.where(r.random(len(rows)) < cfg.board_topic_match, t[rows], world.topics(r, len(rows)))
            own = (bt == t[rows]) & (r.random(len(rows)) < cfg.board_facet_match)
            wanted = np.where(r.random(len(rows)) < 0.5, boards.facet(_STYLE, a[rows, _STYLE]),
                              boards.facet(_OCCASION, a[rows, _OCCASION]))
            facet = np.where(own, wanted, r.integers(0, boards.n_facets, len(rows)))
            b = boards.sampler.draw(r, bt, facet)
            bp = pl.DataFrame([boards.ids.gather(b).alias("board_id"), pid.gather(rows).alias("pin_id")])
            bp_w.write(bp.unique(maintain_order=True))
            texted[lo:hi] = has_text
            alt += int(has_alt.sum())
            on_board += int(saved.sum())
            bar.advance(m)
    stats.pins, stats.board_pins = n, bp_w.rows
    stats.pins_without_text = float(1 - texted.mean())
    stats.pins_with_alt_text, stats.pins_on_a_board = alt / n, on_board / n
    stats.pins_fresh = float(fresh.mean())
    # Search shows a pin without text less often (the legacy engine matches text), so it is engaged less.
    weight = np.where(texted, weight, weight * cfg.untitled_search_exposure)
    settled = np.flatnonzero(~fresh)
    boosted = None
    if cfg.fresh_pin_boost != 1.0:
        boosted = _BlockSampler(topic, concept, np.where(fresh, weight * cfg.fresh_pin_boost, weight), N_CONCEPTS)
    return _Entities(ids, attrs, _BlockSampler(topic, concept, weight, N_CONCEPTS), fresh, settled,
                     _BlockSampler(topic[settled], concept[settled], weight[settled], N_CONCEPTS), boosted)


def _names(topic: np.ndarray) -> pl.Series:
    return pl.Series([t.name for t in TOPICS]).gather(topic)


def _concept_words(topic: np.ndarray, concept: np.ndarray) -> pl.Series:
    words = pl.Series([c[0] for t in TOPICS for c in t.concepts("en")])
    return words.gather(topic.astype(np.int64) * N_CONCEPTS + concept)


def _attr_names(attrs: np.ndarray) -> pl.Series:
    """Ground truth: each row's attribute values as ``kind=value`` (English head words; -1 left out)."""
    cols = []
    for k, kind in enumerate(ATTRIBUTE_KINDS):
        names = pl.Series([f"{kind}={s.split('|')[0]}" for s in ATTRIBUTES[kind]["en"].split(";")] + [None])
        value = attrs[:, k].astype(np.int64)
        cols.append(names.gather(np.where(value < 0, len(names) - 1, value)).alias(kind))
    return pl.DataFrame(cols).select(pl.concat_list(pl.all()).list.drop_nulls().alias("attributes")).to_series()


# ----------------------------------------------------------------------------- products
def _products(world: _World, ws: Workspace, images: _Images, stats: WorldStats,
              stack: contextlib.ExitStack) -> _Entities:
    cfg, v = world.cfg, world.vocab
    n = cfg.products
    img, topic, concept, attrs, weight, ids = _draw_entities(world, images, _STREAM_PRODUCTS, n, "pr")
    prod_w = _TableWriter(ws, PRODUCTS, stack)
    truth_w = _TableWriter(ws, TRUTH_PRODUCTS, stack)
    for chunk, lo, hi in _chunks(n, cfg.entity_chunk_rows):
        r = _rng(world.seed, _STREAM_PRODUCTS, chunk + 1)
        m = hi - lo
        t, c, a, im = topic[lo:hi], concept[lo:hi], attrs[lo:hi], img[lo:hi]
        lang = world.langs(r, m)
        brand = v.brand(r, t)

        def word(p: float, cc: np.ndarray = c, r: np.random.Generator = r, t: np.ndarray = t,
                 lang: np.ndarray = lang) -> np.ndarray:
            return maybe(r, v.misspell(r, v.concept(r, t, lang, cc), cfg.typo_prob), p)

        pre, post = _pre_post(_attr_words(world, r, t, lang, a, cfg.product_text_attr_prob))
        title = v.join([maybe(r, brand, 0.5), maybe(r, v.modifier(r, lang), 0.3), *pre, word(1.0), *post,
                        word(0.3, _other_concept(r, c))])
        pre, post = _pre_post(_attr_words(world, r, t, lang, a, cfg.product_text_attr_prob))
        desc = v.join([maybe(r, v.filler(r, lang), 0.3), *pre, word(1.0), *post, word(0.6, _other_concept(r, c)),
                       maybe(r, v.modifier(r, lang), 0.5), word(0.4, _other_concept(r, c))])
        pid = ids.slice(lo, m)
        prod_w.write(pl.DataFrame([
            pid.alias("product_id"), _titlecase_some(title, r.random(m) < 0.5).alias("title"),
            _null_unless(desc, r.random(m) < cfg.product_description_prob).alias("description"),
            _null_unless(v.join([brand]), r.random(m) < cfg.product_brand_prob).alias("brand"),
            images.paths.gather(im), world.legacy(r, t, c, a),
            pl.Series("created_at", np.full(m, np.datetime64(cfg.end - timedelta(days=cfg.days), "us"))),
        ]))
        truth_w.write(pl.DataFrame([
            pid.alias("product_id"), _names(t).alias("topic"), _concept_words(t, c).alias("concept"),
            images.words.gather(im), images.descriptions.gather(im), _attr_names(a),
            pl.Series("fresh", np.zeros(m, bool)),
        ]))
    stats.products = n
    return _Entities(ids, attrs, _BlockSampler(topic, concept, weight, N_CONCEPTS))


# ----------------------------------------------------------------------------- boards
@dataclass
class _Boards:
    """Boards as pin saves draw them: by (topic, facet), facet 0 = a title naming neither a style
    nor an occasion, then one facet per style value and per occasion value."""

    ids: pl.Series
    sampler: _BlockSampler
    n_style: int
    n_facets: int

    def facet(self, kind: int, value: np.ndarray) -> np.ndarray:
        """The facet of a style (``kind`` = style) or occasion value."""
        return 1 + value.astype(np.int64) + (0 if kind == _STYLE else self.n_style)


def _boards(world: _World, ws: Workspace, stats: WorldStats, stack: contextlib.ExitStack) -> _Boards:
    """Boards and their human-written titles: topic word, often a style or occasion word."""
    cfg, v = world.cfg, world.vocab
    r = _rng(world.seed, _STREAM_BOARDS)
    n = cfg.boards
    cover = min(n, N_TOPICS)
    topic = np.concatenate([np.arange(cover), world.topics(r, n - cover)])
    lang = world.langs(r, n)
    generic = r.random(n) < cfg.board_generic_title_prob
    # A board is about an interest, not one concept of it: its keyword is the topic's head word
    # (concept 0), so board titles never name a concept the pin is not.
    keyword = v.misspell(r, v.concept(r, topic, lang, np.zeros(n, np.int64)), cfg.board_typo_prob)
    has_facet = ~generic & (r.random(n) < cfg.board_facet_prob)
    kind = np.where(r.random(n) < 0.5, _STYLE, _OCCASION)
    value = world.topic_values[topic, kind, r.integers(0, cfg.attr_values_per_topic, n)].astype(np.int64)
    facet_word = v.misspell(r, v.attribute(r, kind, lang, np.where(has_facet, value, -1)), cfg.board_typo_prob)
    title = v.join([
        np.where(generic, -1, maybe(r, v.pick(r, v.board_prefix, n), cfg.board_prefix_prob)),
        facet_word,
        np.where(generic, v.pick(r, v.board_generic, n), keyword),
        np.where(generic, -1, maybe(r, v.pick(r, v.board_suffix, n), cfg.board_suffix_prob)),
        maybe(r, v.pick(r, v.board_emoji, n), cfg.board_emoji_prob),
    ])
    case = r.random(n)
    title = pl.select(pl.when(pl.Series(case < 0.03)).then(title.str.to_uppercase())
                      .when(pl.Series(case < 0.18)).then(title.str.to_titlecase())
                      .otherwise(title)).to_series()
    ids = _ids("b", n, _width(n))
    w = _TableWriter(ws, BOARDS, stack)
    w.write(pl.DataFrame([ids.alias("board_id"), title.alias("title")]))
    stats.boards = n
    weight = _zipf_weights(r, n, cfg.entity_zipf)
    n_style = int(v.attr_values[_STYLE])
    n_facets = 1 + n_style + int(v.attr_values[_OCCASION])
    facet = np.where(has_facet, 1 + value + np.where(kind == _STYLE, 0, n_style), 0)
    return _Boards(ids, _BlockSampler(topic, facet, weight, n_facets), n_style, n_facets)


# ----------------------------------------------------------------------------- queries
@dataclass
class _Queries:
    text: pl.Series
    topic: np.ndarray
    concept: np.ndarray
    #: int8 [n, N_KINDS]: the value asked for per attribute kind, -1 where the query asks none.
    asked: np.ndarray
    lang: np.ndarray
    cum: np.ndarray  # cumulative Zipf popularity, for drawing the query of each engagement
    sampler: _BlockSampler


def _queries(world: _World, ws: Workspace, stats: WorldStats, stack: contextlib.ExitStack) -> _Queries:
    cfg, v = world.cfg, world.vocab
    r = _rng(world.seed, _STREAM_QUERIES)
    n = cfg.queries
    topic, lang = world.topics(r, n), world.langs(r, n)
    concept = r.integers(0, N_CONCEPTS, n)
    # A concept plus 0-2 attributes of distinct kinds: each row ranks the kinds at random and asks
    # for the first ``n_attr``.
    n_attr = r.choice(3, n, p=np.asarray(cfg.query_attr_counts) / sum(cfg.query_attr_counts))
    # Kinds drawn without replacement with ``query_kind_weights``: exponential keys E / w, the
    # smallest first (the Efraimidis-Spirakis draw, one vectorised sort per query).
    keys = r.exponential(size=(n, N_KINDS)) / np.asarray(cfg.query_kind_weights, np.float64)
    kind_rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    asked = np.where(kind_rank < n_attr[:, None], world.attributes(r, topic, tuple(range(N_KINDS))), -1)
    words = [v.misspell(r, v.attribute(r, k, lang, asked[:, k].astype(np.int64)), cfg.query_typo_prob)
             for k in range(N_KINDS)]
    pre_lang = np.isin(lang, _PRE_LANGS)
    pre = [np.where(pre_lang, words[k], -1) for k in _PRE_KINDS]
    post = [np.where(pre_lang & (k in _PRE_KINDS), -1, words[k]) for k in range(N_KINDS)]
    before = r.random(n) < 0.5
    mod = maybe(r, v.modifier(r, lang), cfg.query_modifier_prob)
    first = v.misspell(r, v.concept(r, topic, lang, concept), cfg.query_typo_prob)
    text = v.join([np.where(before, mod, -1), *pre, first, *post, np.where(before, -1, mod)])
    # Popularity: a string drawn k times from the intent distribution is a common way to ask, so
    # queries are ranked by that count within their language (misspellings and long queries
    # fall to the tail), and get Zipf weights rank^-s scaled to the language's share.
    kinds = [f"a{k}" for k in range(N_KINDS)]
    df = (pl.DataFrame({"query": text, "topic": topic, "concept": concept, "lang": lang,
                        **{c: asked[:, k] for k, c in enumerate(kinds)}})
          .group_by("query", maintain_order=True)
          .agg(pl.col("topic", "concept", "lang", *kinds).first(), pl.len().alias("n")))
    df = (df.with_columns(key=pl.col("n") + r.random(len(df)))  # random order among equal counts
          .with_columns(rank=pl.col("key").rank("ordinal", descending=True).over("lang"))
          .with_columns(w=pl.col("rank").cast(pl.Float64).pow(-cfg.query_zipf))
          .with_columns(w=pl.col("w") / pl.col("w").sum().over("lang")))
    topic, concept, lang, weight = (df[c].to_numpy() for c in ("topic", "concept", "lang", "w"))
    asked = df.select(kinds).to_numpy().astype(np.int8)
    weight = weight * world.lang_p[lang]
    w = _TableWriter(ws, TRUTH_QUERIES, stack)
    w.write(pl.DataFrame([df["query"], _names(topic).alias("topic"), _concept_words(topic, concept).alias("concept"),
                          pl.Series("lang", np.asarray(LANGS)[lang]), _attr_names(asked)]))
    stats.queries = len(df)
    stats.query_attr_counts = np.bincount((asked >= 0).sum(axis=1), minlength=3)[:3].tolist()
    stats.query_attr_counts = [round(c / len(df), 4) for c in stats.query_attr_counts]
    return _Queries(df["query"], topic, concept, asked, lang, np.cumsum(weight) / weight.sum(),
                    _BlockSampler(topic, concept, weight, N_CONCEPTS))


# ----------------------------------------------------------------------------- engagements
def _asked_held(asked: np.ndarray, cand_attrs: np.ndarray) -> np.ndarray:
    """[rows, candidates]: how many of each row's asked attribute values (``asked`` [rows, kinds], -1
    where not asked) each candidate holds (``cand_attrs`` [rows, candidates, kinds])."""
    return ((asked[:, None, :] >= 0) & (cand_attrs == asked[:, None, :])).sum(axis=2)


def _pick(rng: np.random.Generator, ents: _Entities, topic: np.ndarray, concept: np.ndarray, asked: np.ndarray,
          created: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """The engaged entity of each row: of ``attr_candidates`` popularity draws in the (topic,
    concept) block that exist at the row's time (``created``: whether fresh entities do), the first
    matching most of the asked attributes (with ``attr_match``, else the first that exists)."""
    k = cfg.attr_candidates
    cand = ents.sampler.draw(rng, np.repeat(topic, k), np.repeat(concept, k)).reshape(-1, k)
    if ents.fresh_sampler is not None and created.any():  # fresh entities exist: drawn with their boost
        cand[created] = ents.fresh_sampler.draw(rng, np.repeat(topic[created], k),
                                                np.repeat(concept[created], k)).reshape(-1, k)
    exists = np.ones(cand.shape, bool) if ents.fresh is None else ~ents.fresh[cand] | created[:, None]
    match = np.where(exists, _asked_held(asked, ents.attrs[cand]), -1)
    best = np.where(rng.random(len(topic)) < cfg.attr_match, np.argmax(match, axis=1), np.argmax(exists, axis=1))
    chosen = cand[np.arange(len(topic)), best]
    none = ~exists.any(axis=1)
    if none.any():  # every candidate is fresh: take an entity that exists, of the block if it has one
        chosen[none] = ents.settled[ents.settled_sampler.draw(rng, topic[none], concept[none])]
    return chosen


def _related(rng: np.random.Generator, q: _Queries, qi: np.ndarray, topic: np.ndarray, concept: np.ndarray,
             cfg: WorldConfig) -> np.ndarray:
    """The related query each query-query row clicks: as :func:`_pick` chooses a pin, of
    ``attr_candidates`` popularity draws in the (topic, concept) block, the first asking for most of the
    attributes the query asked for (with ``attr_match``, else the first draw); a query is not its own
    related query (a draw of it steps to its neighbour in the block; only a block of one keeps it)."""
    k = cfg.attr_candidates
    cand = q.sampler.draw(rng, np.repeat(topic, k), np.repeat(concept, k)).reshape(-1, k)
    same = cand == qi[:, None]
    cand[same] = q.sampler.neighbour(cand[same])
    match = _asked_held(q.asked[qi], q.asked[cand])
    best = np.where(rng.random(len(qi)) < cfg.attr_match, np.argmax(match, axis=1), 0)
    return cand[np.arange(len(qi)), best]


def _engagements(world: _World, ws: Workspace, q: _Queries, pins: _Entities, products: _Entities,
                 stats: WorldStats, stack: contextlib.ExitStack) -> None:
    cfg = world.cfg
    n = cfg.engagements
    n_pins, n_prods = len(pins.ids), len(products.ids)
    # One id space for all three kinds, so an engagement's entity_id is a single gather.
    all_ids = pl.concat([pins.ids, products.ids, q.text.alias("id")])
    actions = pl.Series(ACTIONS)
    pin_act = np.array([ACTIONS.index(a) for a in cfg.pin_actions])
    pin_act_p = np.array(list(cfg.pin_actions.values()))
    prod_act = np.array([ACTIONS.index(a) for a in cfg.product_actions])
    prod_act_p = np.array(list(cfg.product_actions.values()))
    type_p = np.asarray(cfg.entity_type_shares) / sum(cfg.entity_type_shares)
    start = cfg.end - timedelta(days=cfg.days)
    span_us = cfg.days * 86_400_000_000
    start_us = int(start.replace(tzinfo=timezone.utc).timestamp()) * 1_000_000
    test_from_us = start_us + span_us - 7 * 86_400_000_000
    fresh_from_us = start_us + span_us - cfg.fresh_days * 86_400_000_000
    n_chunks = max(1, -(-n // cfg.chunk_rows))
    writer = _TableWriter(ws, ENGAGEMENTS, stack)
    lang_counts = np.zeros(len(LANGS), np.int64)
    last_week = 0
    with progress_bar(n, "engagements", "row") as bar:
        for chunk, lo, hi in _chunks(n, cfg.chunk_rows):
            r = _rng(world.seed, _STREAM_ENGAGEMENTS, chunk)
            m = hi - lo
            # Time: chunk k covers the k-th slice of the (growing) traffic, sorted, so the file is
            # ordered by ts and a reader can skip row groups outside a window.
            u = (chunk + np.sort(r.random(m))) / n_chunks
            frac = np.log1p(u * (cfg.growth - 1)) / np.log(cfg.growth)
            ts_us = start_us + (frac * span_us).astype(np.int64)
            qi = np.minimum(np.searchsorted(q.cum, r.random(m)), len(q.cum) - 1)
            etype = r.choice(3, m, p=type_p)
            topic = np.where(r.random(m) < cfg.topic_match, q.topic[qi], world.topics(r, m))
            concept = np.where(r.random(m) < cfg.concept_match, q.concept[qi], r.integers(0, N_CONCEPTS, m))
            gidx = np.empty(m, np.int64)
            action = np.full(m, ACTIONS.index("click"))
            for kind, ents, offset, acts, act_p in (
                (0, pins, 0, pin_act, pin_act_p),
                (1, products, n_pins, prod_act, prod_act_p),
            ):
                sel = etype == kind
                gidx[sel] = offset + _pick(r, ents, topic[sel], concept[sel], q.asked[qi[sel]],
                                           ts_us[sel] >= fresh_from_us, cfg)
                action[sel] = r.choice(acts, int(sel.sum()), p=act_p)
            sel = etype == 2
            gidx[sel] = n_pins + n_prods + _related(_rng(world.seed, _STREAM_RELATED, chunk), q, qi[sel],
                                                    topic[sel], concept[sel], cfg)
            writer.write(pl.DataFrame([
                pl.Series("ts", ts_us).cast(pl.Datetime("us")),
                q.text.gather(qi).alias("query"),
                pl.Series("entity_type", ENTITY_TYPES).gather(etype),
                all_ids.gather(gidx).alias("entity_id"),
                actions.gather(action).alias("action"),
                pl.Series("lang", LANGS).gather(q.lang[qi]),
            ]))
            lang_counts += np.bincount(q.lang[qi], minlength=len(LANGS))
            last_week += int((ts_us >= test_from_us).sum())
            bar.advance(m)
    stats.engagements = n
    stats.engagements_last_7_days = last_week
    stats.query_langs = {lang: round(float(c) / n, 4) for lang, c in zip(LANGS, lang_counts)}


# ----------------------------------------------------------------------------- entry point
@contextlib.contextmanager
def _timed(stats: WorldStats, phase: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    stats.phase_seconds[phase] = round(time.perf_counter() - t0, 3)


def generate_world(out: str | Path, size: str = "tiny", seed: int = 0, *, overwrite: bool = False,
                   config: WorldConfig | None = None) -> WorldStats:
    """Write a complete synthetic workspace to ``out``: raw tables, images and ground truth.

    ``size`` names a preset of :data:`~omnisearchsage.sample_data.config.SIZES`; ``config``
    replaces it (``size`` then only labels the stats). Refuses to overwrite an existing world
    unless ``overwrite``. Every table is written atomically, the images folder too.
    """
    t0 = time.perf_counter()
    cfg = config or world_config(size)
    ws = Workspace(out)
    existing = [t.relpath for t in RAW_TABLES if ws.has(t)]
    if existing and not overwrite:
        raise OmniError(f"{ws.root}: already holds a workspace ({', '.join(existing)}); "
                        "choose another --out or pass --force to overwrite it")
    stats = WorldStats(size=size, seed=seed)
    world = _World(cfg, seed)
    log.info("generating the %s world (seed %d) in %s", size, seed, ws.root)
    with contextlib.ExitStack() as stack:
        images_dir = stack.enter_context(atomic_path(ws.images))
        with _timed(stats, "images"):
            pin_images = _write_images(world, images_dir, "pins", cfg.pin_images, 0)
            product_images = _write_images(world, images_dir, "products", cfg.product_images, 1)
        stats.image_files = cfg.pin_images + cfg.product_images
        with _timed(stats, "boards"):
            boards = _boards(world, ws, stats, stack)
        with _timed(stats, "pins"):
            pins = _pins(world, ws, pin_images, boards, stats, stack)
        with _timed(stats, "products"):
            products = _products(world, ws, product_images, stats, stack)
        with _timed(stats, "queries"):
            queries = _queries(world, ws, stats, stack)
        with _timed(stats, "engagements"):
            _engagements(world, ws, queries, pins, products, stats, stack)
    # New engagements: the first stage that needs the time split places it on them.
    ws.split_file.unlink(missing_ok=True)
    stats.seconds = round(time.perf_counter() - t0, 2)
    log.info("generated %d pins, %d products, %d engagements in %.1f s",
             stats.pins, stats.products, stats.engagements, stats.seconds)
    return stats
