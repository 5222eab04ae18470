"""The synthetic Pinterest-like world: a complete workspace in which the paper's effects show up.

Generative story (all knobs in :class:`~omnisearchsage.sample_data.config.WorldConfig`):

* 40 interests (topics) with 6 concepts each, in English, French, German and Spanish, with
  synonyms (:mod:`~omnisearchsage.sample_data.lexicon`). Topics have Zipf popularity.
* Images: each unique image file shows one (topic, concept) – the topic's shape on its
  background, in the concept's colour. Pins and products pick an image of their (topic,
  concept), so many pins share one file, the way repins do.
* Pins: ~30% without title and description; the rest carry partial, noisy text (synonyms,
  typos, words from other topics) in their language. ~30% have alt text (the image's
  ground-truth description). A 256-d legacy embedding is a noisy function of topic + concept.
* Products: brand, title, description, image and legacy embedding in the same space.
* Boards: human-written titles ("my dream kitchen 😍", typos, generic "favs"); ~90% of pins are
  saved to at least one board, mostly boards of their own topic.
* Queries: one to two concepts of a topic, with modifiers, synonyms and typos, ~15% non-English,
  Zipf popularity. Engagements (two years, traffic growing mildly so the last week is well
  populated) link a query to a pin, a product or a related query of mostly the same topic and
  concept, with Zipf entity popularity. A text-less pin can therefore only be found through its
  board titles, engaged queries, caption or legacy embedding – the paper's point.

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
    BOARD_PINS,
    BOARDS,
    ENGAGEMENTS,
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
from omnisearchsage.sample_data.lexicon import CONCEPTS_PER_TOPIC, LANGS, TOPICS
from omnisearchsage.sample_data.vocab import Vocab, maybe

log = logging.getLogger(__name__)

N_TOPICS = len(TOPICS)
N_CONCEPTS = CONCEPTS_PER_TOPIC
ACTION_NAMES = ("save", "long_click", "click", "add_to_cart", "checkout")
ENTITY_TYPES = ("pin", "product", "query")

# Independent random streams, so changing one table's size never changes another table.
_STREAM_WORLD, _STREAM_IMAGES, _STREAM_PINS, _STREAM_PRODUCTS = 1, 2, 3, 4
_STREAM_BOARDS, _STREAM_QUERIES, _STREAM_ENGAGEMENTS, _STREAM_VOCAB = 5, 6, 7, 8


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
    """Draw items of a requested (topic, concept) block with popularity weights.

    Items are sorted by block; a draw is a ``searchsorted`` into the block's slice of the
    cumulative weights. An empty block falls back to the topic, an empty topic to everything
    (only the tiny world has those).
    """

    def __init__(self, topic: np.ndarray, concept: np.ndarray, weight: np.ndarray, n_concepts: int) -> None:
        self.c = n_concepts
        block = topic.astype(np.int64) * n_concepts + concept
        self.order = np.argsort(block, kind="stable")
        self.cum = np.concatenate([[0.0], np.cumsum(weight[self.order])])
        counts = np.bincount(block, minlength=N_TOPICS * n_concepts)
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
        # Legacy space: a unit centroid per topic plus a smaller offset per (topic, concept).
        d = cfg.legacy_dim
        self.topic_centroid = _unit(rng.standard_normal((N_TOPICS, d))).astype(np.float32)
        self.concept_offset = (_unit(rng.standard_normal((N_TOPICS, N_CONCEPTS, d)))
                               * cfg.legacy_concept_weight).astype(np.float32)

    def topics(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(N_TOPICS, n, p=self.topic_p)

    def langs(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(LANGS), n, p=self.lang_p)

    def legacy(self, rng: np.random.Generator, topic: np.ndarray, concept: np.ndarray) -> pl.Series:
        """Noisy, L2-normalised, quantised legacy embeddings (null for a small share)."""
        cfg = self.cfg
        emb = rng.standard_normal((len(topic), cfg.legacy_dim), dtype=np.float32)
        emb *= cfg.legacy_noise / np.sqrt(cfg.legacy_dim)
        emb += self.topic_centroid[topic]
        emb += self.concept_offset[topic, concept]
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
    paths: pl.Series
    descriptions: pl.Series
    words: pl.Series
    sampler: _BlockSampler


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
    folder = images_dir / kind
    folder.mkdir(parents=True, exist_ok=True)
    specs = [ImageSpec(int(t), int(c), int(k)) for t, c, k in zip(topic, concept, counts)]
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
    return _Images(topic, concept, paths, descriptions, words, _BlockSampler(topic, concept, weight, N_CONCEPTS))


def _other_concept(rng: np.random.Generator, concept: np.ndarray) -> np.ndarray:
    """A different concept of the same topic."""
    return (concept + rng.integers(1, N_CONCEPTS, len(concept))) % N_CONCEPTS


def _titlecase_some(s: pl.Series, mask: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(mask)).then(s.str.to_titlecase()).otherwise(s)).to_series().alias(s.name)


def _null_unless(s: pl.Series, keep: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(keep)).then(s)).to_series().alias(s.name)


# ----------------------------------------------------------------------------- pins
def _draw_entities(world: _World, images: _Images, stream: int, n: int, prefix: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pl.Series]:
    """What pins and products share: each takes the (topic, concept) its image shows, a Zipf
    popularity weight and an id. Returns image index, topic, concept, weight and ids; later draws
    use per-chunk generators of the same stream."""
    rng = _rng(world.seed, stream)
    img = images.sampler.draw(rng, world.topics(rng, n), rng.integers(0, N_CONCEPTS, n))
    weight = _zipf_weights(rng, n, world.cfg.entity_zipf)
    return img, images.topic[img], images.concept[img], weight, _ids(prefix, n, _width(n))


def _pins(world: _World, ws: Workspace, images: _Images, boards: _Boards, stats: WorldStats,
          stack: contextlib.ExitStack) -> tuple[_BlockSampler, pl.Series]:
    cfg, v = world.cfg, world.vocab
    n = cfg.pins
    img, topic, concept, weight, ids = _draw_entities(world, images, _STREAM_PINS, n, "p")
    pins_w = _TableWriter(ws, PINS, stack)
    truth_w = _TableWriter(ws, TRUTH_PINS, stack)
    bp_w = _TableWriter(ws, BOARD_PINS, stack)
    no_text = alt = on_board = 0
    with progress_bar(n, "pins", "pin") as bar:
        for chunk, lo, hi in _chunks(n, cfg.entity_chunk_rows):
            r = _rng(world.seed, _STREAM_PINS, chunk + 1)
            m = hi - lo
            t, c, im = topic[lo:hi], concept[lo:hi], img[lo:hi]
            lang = world.langs(r, m)
            has_text = r.random(m) >= cfg.pin_no_text_share
            has_title = has_text & (r.random(m) < cfg.pin_title_prob)
            has_desc = has_text & (r.random(m) < cfg.pin_description_prob)
            has_title |= has_text & ~has_desc
            noise_t = world.topics(r, m)

            def word(p: float, tt: np.ndarray = t, cc: np.ndarray = c, r: np.random.Generator = r,
                     lang: np.ndarray = lang) -> np.ndarray:
                return maybe(r, v.misspell(r, v.concept(r, tt, lang, cc), cfg.typo_prob), p)

            title = v.join([
                maybe(r, v.modifier(r, lang), 0.3), word(1.0), word(0.4, cc=_other_concept(r, c)),
                word(cfg.noise_word_prob, tt=noise_t, cc=r.integers(0, N_CONCEPTS, m)),
            ])
            title = _null_unless(_titlecase_some(title, r.random(m) < 0.3), has_title)
            desc = v.join([
                maybe(r, v.filler(r, lang), 0.6), word(1.0), maybe(r, v.modifier(r, lang), 0.4),
                word(0.6, cc=_other_concept(r, c)), word(0.4, cc=_other_concept(r, c)),
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
                world.legacy(r, t, c),
                _null_unless(images.descriptions.gather(im), has_alt).alias("alt_text"),
            ]))
            truth_w.write(pl.DataFrame([
                pid.alias("pin_id"), _names(t).alias("topic"), _concept_words(t, c).alias("concept"),
                images.words.gather(im), images.descriptions.gather(im),
            ]))
            # Board saves: most pins on 1 + Poisson boards, mostly boards of their own topic.
            saved = r.random(m) < cfg.on_board_share
            k = np.where(saved, 1 + r.poisson(cfg.extra_boards_mean, m), 0)
            rows = np.repeat(np.arange(m), k)
            bt = np.where(r.random(len(rows)) < cfg.board_topic_match, t[rows], world.topics(r, len(rows)))
            b = boards.sampler.draw(r, bt, np.zeros(len(rows), np.int64))
            bp = pl.DataFrame([boards.ids.gather(b).alias("board_id"), pid.gather(rows).alias("pin_id")])
            bp_w.write(bp.unique(maintain_order=True))
            no_text += int((~has_text).sum())
            alt += int(has_alt.sum())
            on_board += int(saved.sum())
            bar.advance(m)
    stats.pins, stats.board_pins = n, bp_w.rows
    stats.pins_without_text, stats.pins_with_alt_text, stats.pins_on_a_board = no_text / n, alt / n, on_board / n
    return _BlockSampler(topic, concept, weight, N_CONCEPTS), ids


def _names(topic: np.ndarray) -> pl.Series:
    return pl.Series([t.name for t in TOPICS]).gather(topic)


def _concept_words(topic: np.ndarray, concept: np.ndarray) -> pl.Series:
    words = pl.Series([c[0] for t in TOPICS for c in t.concepts("en")])
    return words.gather(topic.astype(np.int64) * N_CONCEPTS + concept)


# ----------------------------------------------------------------------------- products
def _products(world: _World, ws: Workspace, images: _Images, stats: WorldStats,
              stack: contextlib.ExitStack) -> tuple[_BlockSampler, pl.Series]:
    cfg, v = world.cfg, world.vocab
    n = cfg.products
    img, topic, concept, weight, ids = _draw_entities(world, images, _STREAM_PRODUCTS, n, "pr")
    prod_w = _TableWriter(ws, PRODUCTS, stack)
    truth_w = _TableWriter(ws, TRUTH_PRODUCTS, stack)
    for chunk, lo, hi in _chunks(n, cfg.entity_chunk_rows):
        r = _rng(world.seed, _STREAM_PRODUCTS, chunk + 1)
        m = hi - lo
        t, c, im = topic[lo:hi], concept[lo:hi], img[lo:hi]
        lang = world.langs(r, m)
        brand = v.brand(r, t)

        def word(p: float, cc: np.ndarray = c, r: np.random.Generator = r, t: np.ndarray = t,
                 lang: np.ndarray = lang) -> np.ndarray:
            return maybe(r, v.misspell(r, v.concept(r, t, lang, cc), cfg.typo_prob), p)

        title = v.join([maybe(r, brand, 0.5), maybe(r, v.modifier(r, lang), 0.3), word(1.0),
                        word(0.5, _other_concept(r, c))])
        desc = v.join([maybe(r, v.filler(r, lang), 0.3), word(1.0), word(0.8, _other_concept(r, c)),
                       maybe(r, v.modifier(r, lang), 0.5), word(0.5, _other_concept(r, c))])
        pid = ids.slice(lo, m)
        prod_w.write(pl.DataFrame([
            pid.alias("product_id"), _titlecase_some(title, r.random(m) < 0.5).alias("title"),
            _null_unless(desc, r.random(m) < cfg.product_description_prob).alias("description"),
            _null_unless(v.join([brand]), r.random(m) < cfg.product_brand_prob).alias("brand"),
            images.paths.gather(im), world.legacy(r, t, c),
        ]))
        truth_w.write(pl.DataFrame([
            pid.alias("product_id"), _names(t).alias("topic"), _concept_words(t, c).alias("concept"),
            images.words.gather(im), images.descriptions.gather(im),
        ]))
    stats.products = n
    return _BlockSampler(topic, concept, weight, N_CONCEPTS), ids


# ----------------------------------------------------------------------------- boards
@dataclass
class _Boards:
    ids: pl.Series
    sampler: _BlockSampler


def _boards(world: _World, ws: Workspace, stats: WorldStats, stack: contextlib.ExitStack) -> _Boards:
    """Boards and their human-written titles; the sampler draws boards by topic (one block each)."""
    cfg, v = world.cfg, world.vocab
    r = _rng(world.seed, _STREAM_BOARDS)
    n = cfg.boards
    cover = min(n, N_TOPICS)
    topic = np.concatenate([np.arange(cover), world.topics(r, n - cover)])
    lang = world.langs(r, n)
    concept = np.where(r.random(n) < 0.5, 0, r.integers(0, N_CONCEPTS, n))
    generic = r.random(n) < cfg.board_generic_title_prob
    keyword = v.misspell(r, v.concept(r, topic, lang, concept), cfg.board_typo_prob)
    title = v.join([
        np.where(generic, -1, maybe(r, v.pick(r, v.board_prefix, n), cfg.board_prefix_prob)),
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
    return _Boards(ids, _BlockSampler(topic, np.zeros(n, np.int64), weight, 1))


# ----------------------------------------------------------------------------- queries
@dataclass
class _Queries:
    text: pl.Series
    topic: np.ndarray
    concept: np.ndarray
    lang: np.ndarray
    cum: np.ndarray  # cumulative Zipf popularity, for drawing the query of each engagement
    sampler: _BlockSampler


def _queries(world: _World, ws: Workspace, stats: WorldStats, stack: contextlib.ExitStack) -> _Queries:
    cfg, v = world.cfg, world.vocab
    r = _rng(world.seed, _STREAM_QUERIES)
    n = cfg.queries
    topic, lang = world.topics(r, n), world.langs(r, n)
    concept = r.integers(0, N_CONCEPTS, n)
    before = r.random(n) < 0.5
    mod = maybe(r, v.modifier(r, lang), cfg.query_modifier_prob)
    first = v.misspell(r, v.concept(r, topic, lang, concept), cfg.query_typo_prob)
    second = maybe(r, v.misspell(r, v.concept(r, topic, lang, _other_concept(r, concept)), cfg.query_typo_prob),
                   cfg.query_second_concept_prob)
    text = v.join([np.where(before, mod, -1), first, second, np.where(before, -1, mod)])
    # Popularity: a string drawn k times from the intent distribution is a common way to ask, so
    # queries are ranked by that count within their language (misspellings and long queries
    # fall to the tail), and get Zipf weights rank^-s scaled to the language's share.
    df = (pl.DataFrame({"query": text, "topic": topic, "concept": concept, "lang": lang})
          .group_by("query", maintain_order=True)
          .agg(pl.col("topic", "concept", "lang").first(), pl.len().alias("n")))
    df = (df.with_columns(key=pl.col("n") + r.random(len(df)))  # random order among equal counts
          .with_columns(rank=pl.col("key").rank("ordinal", descending=True).over("lang"))
          .with_columns(w=pl.col("rank").cast(pl.Float64).pow(-cfg.query_zipf))
          .with_columns(w=pl.col("w") / pl.col("w").sum().over("lang")))
    topic, concept, lang, weight = (df[c].to_numpy() for c in ("topic", "concept", "lang", "w"))
    weight = weight * world.lang_p[lang]
    w = _TableWriter(ws, TRUTH_QUERIES, stack)
    w.write(pl.DataFrame([df["query"], _names(topic).alias("topic"), _concept_words(topic, concept).alias("concept"),
                          pl.Series("lang", np.asarray(LANGS)[lang])]))
    stats.queries = len(df)
    return _Queries(df["query"], topic, concept, lang, np.cumsum(weight) / weight.sum(),
                    _BlockSampler(topic, concept, weight, N_CONCEPTS))


# ----------------------------------------------------------------------------- engagements
def _engagements(world: _World, ws: Workspace, q: _Queries, pins: tuple[_BlockSampler, pl.Series],
                 products: tuple[_BlockSampler, pl.Series], stats: WorldStats,
                 stack: contextlib.ExitStack) -> None:
    cfg = world.cfg
    n = cfg.engagements
    pin_sampler, pin_ids = pins
    prod_sampler, prod_ids = products
    n_pins, n_prods = len(pin_ids), len(prod_ids)
    # One id space for all three kinds, so an engagement's entity_id is a single gather.
    all_ids = pl.concat([pin_ids, prod_ids, q.text.alias("id")])
    actions = pl.Series(ACTION_NAMES)
    pin_act = np.array([ACTION_NAMES.index(a) for a in cfg.pin_actions])
    pin_act_p = np.array(list(cfg.pin_actions.values()))
    prod_act = np.array([ACTION_NAMES.index(a) for a in cfg.product_actions])
    prod_act_p = np.array(list(cfg.product_actions.values()))
    type_p = np.asarray(cfg.entity_type_shares) / sum(cfg.entity_type_shares)
    start = cfg.end - timedelta(days=cfg.days)
    span_us = cfg.days * 86_400_000_000
    start_us = int(start.replace(tzinfo=timezone.utc).timestamp()) * 1_000_000
    test_from_us = start_us + span_us - 7 * 86_400_000_000
    n_chunks = max(1, -(-n // cfg.chunk_rows))
    writer = _TableWriter(ws, ENGAGEMENTS, stack)
    lang_counts = np.zeros(len(LANGS), np.int64)
    last_week = 0
    with progress_bar(n, "engagements", "row") as bar:
        for chunk, lo, hi in _chunks(n, cfg.chunk_rows):
            r = _rng(world.seed, _STREAM_ENGAGEMENTS, chunk)
            m = hi - lo
            qi = np.minimum(np.searchsorted(q.cum, r.random(m)), len(q.cum) - 1)
            etype = r.choice(3, m, p=type_p)
            topic = np.where(r.random(m) < cfg.topic_match, q.topic[qi], world.topics(r, m))
            concept = np.where(r.random(m) < cfg.concept_match, q.concept[qi], r.integers(0, N_CONCEPTS, m))
            gidx = np.empty(m, np.int64)
            action = np.full(m, ACTION_NAMES.index("click"))
            for kind, sampler, offset, acts, act_p in (
                (0, pin_sampler, 0, pin_act, pin_act_p),
                (1, prod_sampler, n_pins, prod_act, prod_act_p),
            ):
                sel = etype == kind
                gidx[sel] = offset + sampler.draw(r, topic[sel], concept[sel])
                action[sel] = r.choice(acts, int(sel.sum()), p=act_p)
            sel = etype == 2
            related = q.sampler.draw(r, topic[sel], concept[sel])
            # A query is not its own related query: step to its neighbour in the block instead.
            same = related == qi[sel]
            related[same] = q.sampler.neighbour(related[same])
            gidx[sel] = n_pins + n_prods + related
            # Time: chunk k covers the k-th slice of the (growing) traffic, sorted, so the file is
            # ordered by ts and a reader can skip row groups outside a window.
            u = (chunk + np.sort(r.random(m))) / n_chunks
            frac = np.log1p(u * (cfg.growth - 1)) / np.log(cfg.growth)
            ts_us = start_us + (frac * span_us).astype(np.int64)
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
