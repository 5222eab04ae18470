"""Procedural entity images: a topic's shape on its background, filled in the entity's colour and
pattern, inside a frame whose colour is the concept's.

Each topic owns one (shape, background) pair, each concept slot one frame colour, and the
entity's visual attributes (``colour``, ``pattern``) are the shapes' fill colour and fill pattern
(see :mod:`~omnisearchsage.sample_data.lexicon`), so the pixels determine the topic, concept,
colour and pattern words and a captioner can learn to recover them. Pattern marks stop at an
unbroken edge in the fill colour: marks that reached the background cut small shapes apart and left
the shape, hence the topic, the word a captioner got wrong most. Count, size, position and
colour jitter vary per image so no two files are identical. Images are small PNGs (lossless, so
a seed gives identical bytes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from omnisearchsage.sample_data.lexicon import (
    BACKGROUNDS,
    COUNT_WORDS,
    FILLS,
    FRAMES,
    PATTERNS,
    SHAPES,
    TOPICS,
)

#: Shape radius as a fraction of the side inside the frame: one big shape, or up to three smaller ones.
_SINGLE_RADIUS = (0.24, 0.34)
_MULTI_RADIUS = (0.15, 0.2)
#: Width of the unbroken edge drawn round each shape over its pattern marks, as a fraction of the side.
_EDGE = 0.03
_STAR_INNER = 0.45
#: The frame (concept colour) is this fraction of the image side wide: at 64 px about half a
#: 16-px patch, wide enough for the small captioner to tell the concept; shapes stay inside it.
_FRAME = 0.14
#: Pattern marks (stripes, dots, checks) are drawn in this colour inside the shapes, every
#: ``_PATTERN_PERIOD`` of the image side.
_PATTERN_INK = (250, 250, 250)
_PATTERN_PERIOD = 0.125


@dataclass(frozen=True)
class ImageSpec:
    """What one image shows; ``words`` is the ground truth a captioner should recover."""

    topic: int
    concept: int
    count: int
    #: Indices into the lexicon's ``colour`` values (= FILLS) and ``pattern`` values (= PATTERNS).
    colour: int = 0
    pattern: int = 0

    @property
    def shape(self) -> str:
        return SHAPES[self.topic % len(SHAPES)]

    @property
    def background(self) -> str:
        return list(BACKGROUNDS)[self.topic // len(SHAPES) % len(BACKGROUNDS)]

    @property
    def fill(self) -> str:
        return list(FILLS)[self.colour]

    @property
    def pattern_word(self) -> str:
        return PATTERNS[self.pattern]

    @property
    def topic_word(self) -> str:
        return TOPICS[self.topic].concepts("en")[0][0]

    @property
    def concept_word(self) -> str:
        return TOPICS[self.topic].concepts("en")[self.concept][0]

    @property
    def description(self) -> str:
        """The alt text: e.g. ``two red striped circles on a white background, kitchen knife``."""
        plural = "es" if self.shape.endswith(("s", "x")) else "s"
        noun = self.shape if self.count == 1 else self.shape + plural
        return (f"{COUNT_WORDS[self.count - 1]} {self.fill} {self.pattern_word} {noun} "
                f"on a {self.background} background, {self._subject}")

    @property
    def words(self) -> list[str]:
        """The content words of :attr:`description`, as a captioner should say them: fill colour,
        pattern, shape, background, then the topic and concept words."""
        return [self.fill, self.pattern_word, self.shape, self.background, *self._subject.split()]

    @property
    def _subject(self) -> str:
        return self.topic_word if self.concept == 0 else f"{self.topic_word} {self.concept_word}"


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    r, g, b = (np.clip(np.array(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255)).tolist()
    return int(r), int(g), int(b)


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of a shape (every shape but circle and ring), so it can be filled or outlined."""
    if shape in ("square", "diamond", "triangle", "hexagon"):
        sides, turn = {"square": (4, math.pi / 4), "diamond": (4, 0.0), "triangle": (3, 0.0),
                       "hexagon": (6, 0.0)}[shape]
        angles = [-math.pi / 2 + turn + 2 * math.pi * k / sides for k in range(sides)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    if shape == "cross":
        w = r / 3
        arm = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r)]
        return [(cx + x, cy + y) for x, y in arm] + [(cx - x, cy - y) for x, y in arm]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * _STAR_INNER
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                colour: tuple[int, int, int] | int, edge: int = 0) -> None:
    """Fill a shape, or with ``edge`` > 0 draw only its outline that many pixels wide (a ring is
    an outline already: ``edge`` leaves it alone, or its pattern would be painted over)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "ring":
        if not edge:
            draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif shape == "circle":
        if edge:
            draw.ellipse(box, outline=colour, width=edge)
        else:
            draw.ellipse(box, fill=colour)
    elif edge:
        draw.polygon(_outline(shape, cx, cy, r), outline=colour, width=edge)
    else:
        draw.polygon(_outline(shape, cx, cy, r), fill=colour)


def _pattern_mask(pattern: str, size: int) -> Image.Image:
    """Where a pattern's marks go (255) over the whole image; the shapes' mask then clips them."""
    period = max(4, round(size * _PATTERN_PERIOD))
    y, x = np.mgrid[0:size, 0:size]
    if pattern == "striped":
        marks = (y % period) < period // 3
    elif pattern == "polka dot":
        c = period // 2
        marks = ((x % period - c) ** 2 + (y % period - c) ** 2) <= (period / 4) ** 2
    elif pattern == "checked":
        marks = ((x // (period // 2)) + (y // (period // 2))) % 2 == 0
    else:
        marks = np.zeros((size, size), bool)
    return Image.fromarray((marks * 255).astype(np.uint8), mode="L")


def draw_image(spec: ImageSpec, rng: np.random.Generator, size: int, jitter: int) -> Image.Image:
    """Render ``spec`` as an RGB image of ``size`` x ``size`` pixels: shapes filled with the colour
    and the pattern's marks inside the concept's frame."""
    img = Image.new("RGB", (size, size), _jitter(BACKGROUNDS[spec.background], rng, jitter))
    shapes = Image.new("L", (size, size), 0)
    draw, mask = ImageDraw.Draw(img), ImageDraw.Draw(shapes)
    lo, hi = _SINGLE_RADIUS if spec.count == 1 else _MULTI_RADIUS
    width = max(2, round(size * _FRAME))
    inner = size - 2 * width
    drawn = []
    for _ in range(spec.count):
        r = inner * rng.uniform(lo, hi)
        cx, cy = width + rng.uniform(r, inner - r, 2)
        colour = _jitter(FILLS[spec.fill], rng, jitter)
        _draw_shape(draw, spec.shape, float(cx), float(cy), float(r), colour)
        _draw_shape(mask, spec.shape, float(cx), float(cy), float(r), 255)
        drawn.append((float(cx), float(cy), float(r), colour))
    marks = np.minimum(np.asarray(_pattern_mask(spec.pattern_word, size)), np.asarray(shapes))
    img.paste(_PATTERN_INK, mask=Image.fromarray(marks))
    # The marks stop at an unbroken edge in the fill colour, so the pattern never breaks the silhouette.
    edge = max(1, round(size * _EDGE))
    for cx, cy, r, colour in drawn:
        _draw_shape(draw, spec.shape, cx, cy, r, colour, edge=edge)
    ImageDraw.Draw(img).rectangle((0, 0, size - 1, size - 1), outline=_jitter(FRAMES[spec.concept], rng, jitter),
                                  width=width)
    return img


def write_image(spec: ImageSpec, path: Path, rng: np.random.Generator, size: int, jitter: int) -> None:
    draw_image(spec, rng, size, jitter).save(path, format="PNG")
