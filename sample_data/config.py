"""Knobs of the synthetic world: one :class:`WorldConfig` per size, every count and share here.

The defaults encode what makes the paper's effects measurable: ~40% pins without any text, most
of them new (the paper reports 71% title/description coverage), ~15% non-English queries, Zipf popularity of
queries and entities (so in-batch negatives are popularity-biased and logQ correction matters),
~90% of pins on at least one board, traffic growing over the year so the last week (the test
window) holds enough events, and entity attributes that each channel reveals only in part
(see ``generate.py``), so every enrichment adds something the others miss.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from omnisearchsage.errors import OmniError


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, shares and noise levels of one generated world."""

    # ---- sizes
    pins: int
    products: int
    boards: int
    #: Distinct query strings drawn before de-duplication (collisions merge, so slightly fewer remain).
    queries: int
    engagements: int
    pin_images: int
    product_images: int
    #: Engagement rows, and pin/product rows (256 floats each), generated and written per chunk;
    #: they bound the large world's peak memory.
    chunk_rows: int = 1_000_000
    entity_chunk_rows: int = 100_000

    # ---- languages: shares of en, fr, de, es (queries, pin text, board owners)
    lang_shares: tuple[float, float, float, float] = (0.85, 0.05, 0.05, 0.05)

    # ---- popularity
    #: Topic popularity exponent (mild: some interests are bigger than others).
    topic_zipf: float = 0.5
    #: Query popularity ~ rank^-s: a short head and a long tail.
    query_zipf: float = 0.9
    #: Pin/product popularity ~ rank^-s within their (topic, concept). Mild on purpose: with a
    #: steep curve which pin of a well-matched group an engagement names is mostly popularity,
    #: which any model memorises from any per-entity feature, so no enrichment could show.
    entity_zipf: float = 0.3

    # ---- pin text
    #: Pins with neither title nor description (the paper: 71% coverage), among settled pins and among
    #: fresh ones (``fresh_pin_share``). A pin's text accrues with age (a bare
    #: upload gets its title from an edit, a scraped link page, a saver's description), so new pins are
    #: the bare ones more often: 0.2 and 0.8 leave 41% of the catalogue bare. Bare pins that are
    #: also new have no engaged queries either, and only the captions (and the legacy and visual
    #: embeddings) describe them: what Table 3 measures. World v11's 0.6 put most of Table 3's pairs on
    #: settled bare pins once new pins were engaged less; 0.1 for settled pins left engaged queries
    #: little to add (README, *Evaluate*, world v12).
    pin_no_text_share: float = 0.20
    fresh_pin_no_text_share: float = 0.80
    #: Among pins with text: probability of a title, of a description (at least one is kept).
    pin_title_prob: float = 0.8
    pin_description_prob: float = 0.6
    #: A pin without text is shown for a query, and so engaged, this many times as often as one with text
    #: of equal popularity, in both windows (< 1: a text-matching engine served the logs). 1 by default: at
    #: 0.5 the model learns from both windows that pins without text are engaged less and ranks them
    #: below titled pins of the same content, captions or not, so Table 3 cannot show what captions add
    #: (README, *`omni sample`*).
    untitled_search_exposure: float = 1.0
    #: Pins whose image has a ground-truth description (alt text).
    alt_text_share: float = 0.30
    #: Per text slot: a word from an unrelated topic, a typo.
    noise_word_prob: float = 0.12
    typo_prob: float = 0.03
    #: Pins and products still without a legacy embedding (new entities).
    legacy_missing_share: float = 0.02
    #: Fresh pins: created ``fresh_days`` before the log ends, after the training cutoff (the split
    #: keeps a 15-day gap and a 7-day test window), so they have no training engagement and no
    #: engaged queries; the test window engages them (``fresh_pin_boost``). What a new pin has is its own
    #: text, image (captions), legacy embedding and boards, which is where enrichment must carry it.
    #: 35% leaves engaged queries on 65% of pins, the paper's coverage.
    fresh_pin_share: float = 0.35
    fresh_days: int = 21
    #: Once created, a fresh pin is engaged this many times as often as a settled pin of equal popularity
    #: (1: no boost; < 1: it has had days, not months, to reach feeds and boards). World v9-v10 used 2
    #: (half the test window's pin pairs named a new pin), v11 1 (a third); at 0.5 about a fifth, so
    #: engaged queries cover most test pairs, as engagement-weighted coverage does in a catalogue where
    #: the engaged pins are the ones engaged before (README, *Evaluate*, world v12).
    fresh_pin_boost: float = 0.5

    # ---- entity attributes (colour, pattern, material, style, occasion, audience; lexicon order)
    #: Values of each attribute kind a topic uses (drawn per world); an entity has one of each.
    attr_values_per_topic: int = 4
    #: Per attribute kind: the chance a pin's title (and, independently, its description) names
    #: the pin's value; products name more of theirs (shop titles list colour, material, audience).
    #: Style and occasion, what queries ask most, are named often enough for text to add something
    #: beyond the legacy embedding (boards name them most; README, *Evaluate*, world v12). Audience
    #: ("for kids", "men's") is what an uploader leaves out and a searcher types: text names it least
    #: and no other content channel does, so engaged queries are where it shows (world v13).
    pin_text_attr_prob: tuple[float, ...] = (0.3, 0.2, 0.3, 0.25, 0.2, 0.1)
    #: Shop titles and descriptions list material and audience ("linen", "for kids") on most
    #: products; with them named less often, a query-product model trained alone could learn those
    #: words only from fewer pairs than the unified one, which also reads the pins' engaged queries
    #: (README, *Evaluate*, world v13: Table 5).
    product_text_attr_prob: tuple[float, ...] = (0.5, 0.3, 0.7, 0.3, 0.2, 0.7)
    #: A named attribute is another value of the topic instead (careless or misleading text).
    text_attr_noise_prob: float = 0.1

    # ---- queries
    query_typo_prob: float = 0.08
    query_modifier_prob: float = 0.25
    #: Shares of queries asking for a concept plus 0, 1 or 2 attributes (kinds drawn with
    #: ``query_kind_weights``). Few bare-concept queries: the few ways to write one collide, so each is
    #: among the most popular strings, and for a bare concept which of its pins an engagement names is
    #: popularity alone, which no channel reveals; with many of them most test pairs could not be ranked
    #: by anything an enrichment adds (README, *Evaluate*, world v9).
    query_attr_counts: tuple[float, float, float] = (0.03, 0.47, 0.5)
    #: Relative chance of each attribute kind being asked (lexicon order): style and occasion,
    #: which mostly board titles reveal, are what people search Pinterest for most; then material and
    #: audience, which neither the image nor boards show, so engaged queries have something only they
    #: tell; colour and pattern, which the image shows, least (README, *Evaluate*, world v13).
    query_kind_weights: tuple[float, ...] = (1.0, 1.0, 1.5, 2.5, 2.5, 1.5)

    # ---- products
    product_brand_prob: float = 0.9
    product_description_prob: float = 0.9
    brands_per_topic: int = 4

    # ---- boards
    #: Pins saved to at least one board; each such pin is on 1 + Poisson(extra) boards.
    on_board_share: float = 0.90
    extra_boards_mean: float = 2.0
    #: Board saves within the pin's topic; generic, uninformative board titles ("favs").
    board_topic_match: float = 0.9
    board_generic_title_prob: float = 0.1
    board_typo_prob: float = 0.1
    board_prefix_prob: float = 0.35
    board_suffix_prob: float = 0.4
    board_emoji_prob: float = 0.3
    #: Boards titled with a style or an occasion word ("boho living room", "party nails"), and
    #: saves that go to a board naming the pin's own style or occasion (else any of the topic).
    board_facet_prob: float = 0.9
    board_facet_match: float = 0.9

    # ---- engagements
    #: Entity types of engagements: pin, product, query (related-query click).
    entity_type_shares: tuple[float, float, float] = (0.6, 0.25, 0.15)
    #: The engaged entity shares the query's topic, and then its concept, with these probabilities.
    topic_match: float = 0.95
    concept_match: float = 0.9
    #: An engagement looks at this many entities of its (topic, concept), drawn by popularity, and
    #: takes the one matching most of the query's attributes (the most popular among equals); with
    #: probability 1 - ``attr_match`` it ignores the attributes and takes the first.
    attr_candidates: int = 32
    attr_match: float = 0.9
    pin_actions: dict[str, float] = field(
        default_factory=lambda: {"save": 0.25, "long_click": 0.25, "click": 0.5})
    product_actions: dict[str, float] = field(
        default_factory=lambda: {"click": 0.7, "add_to_cart": 0.2, "checkout": 0.1})
    #: A year of logs ending at ``end`` (exclusive); traffic grows by ``growth`` over the span, which
    #: puts more pairs in the 7-day test window than flat traffic would (less noise per ablation step).
    end: datetime = datetime(2026, 11, 1)
    days: int = 365
    growth: float = 2.5

    # ---- embeddings and images
    legacy_dim: int = 256
    #: The legacy embedding (a visual/graph model like PinSage) is a unit topic centroid plus
    #: offsets of these lengths, one direction per value, plus noise: the visual attributes
    #: (colour, pattern) show well, the concept weakly, the other attributes hardly at all.
    legacy_noise: float = 1.0
    legacy_concept_weight: float = 0.1
    legacy_visual_weight: float = 0.5
    legacy_nonvisual_weight: float = 0.05
    #: Legacy values are rounded to multiples of this (production embeddings are quantised too);
    #: it also lets Parquet compress them.
    legacy_quant_step: float = 1 / 128
    image_size: int = 64
    #: Each drawn colour is jittered by up to this much per channel, so no two images are equal.
    colour_jitter: int = 18


#: The small world has few enough engagements per pin that a model cannot learn most settled pins from
#: their own log through the legacy embedding, as it would an id embedding, so content channels have
#: something to add to them too (README, *Evaluate*: the Table 4 text step, world v4 against v6).
SIZES: dict[str, WorldConfig] = {
    "tiny": WorldConfig(pins=800, products=200, boards=120, queries=1_500, engagements=20_000,
                        pin_images=240, product_images=80),
    "small": WorldConfig(pins=20_000, products=5_000, boards=2_000, queries=20_000, engagements=250_000,
                         pin_images=1_500, product_images=500),
    "medium": WorldConfig(pins=200_000, products=50_000, boards=20_000, queries=100_000,
                          engagements=4_000_000, pin_images=6_000, product_images=2_000),
    "large": WorldConfig(pins=2_000_000, products=500_000, boards=200_000, queries=500_000,
                         engagements=20_000_000, pin_images=20_000, product_images=5_000),
}


def world_config(size: str, **overrides: object) -> WorldConfig:
    """The config of a named size, with optional field overrides (for tests and benchmarks)."""
    if size not in SIZES:
        raise OmniError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)  # type: ignore[arg-type]
