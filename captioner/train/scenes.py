"""Synthetic shape scenes: what they hold, how they are drawn at random, and how they render.

They are the training and evaluation data of the bundled demo captioner: cheap to make in any
number, deterministic from a seed, and with a caption whose colour and shape words can be
checked exactly. A scene holds one or two coloured shapes on a plain or textured background;
with two shapes the caption says where the first one is relative to the second.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the image side

LANGUAGES = ("en", "fr", "de", "es")
SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
# "first shape <relation> second shape"
RELATIONS = ("above", "below", "left", "right")
PATTERNS = ("plain", "stripes", "checker", "noise")

MIN_CONTRAST = 110.0  # least RGB distance between a shape's colour and any background tone
COLOUR_JITTER = 12  # per-channel noise on a shape's colour, so the model learns colour names, not exact values
MARGIN = 0.04  # free border around shapes, as a fraction of the image side
SUPERSAMPLE = 4  # shapes are drawn this many times larger, then downsampled, for smooth edges


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    colour: str  # one of COLOURS: the name the caption uses
    rgb: RGB  # the exact fill, the named colour plus a little jitter
    box: Box  # where it is drawn


@dataclass(frozen=True)
class Background:
    pattern: str  # one of PATTERNS
    tones: tuple[RGB, RGB]  # base and second tone (the second is unused by "plain" and "noise")
    period: float  # stripe width or checker cell, as a fraction of the image side
    angle: float  # stripe direction in degrees
    seed: int  # noise seed, so a scene renders the same at every size


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # one or two shapes
    relation: str | None  # where shapes[0] is relative to shapes[1]; None with one shape
    background: Background


# --- scenes ---------------------------------------------------------------------------------


def _jitter(rng: random.Random, rgb: RGB) -> RGB:
    r, g, b = (min(255, max(0, v + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for v in rgb)
    return (r, g, b)


def _random_tone(rng: random.Random, avoid: Sequence[RGB]) -> RGB:
    """A muted background colour at least MIN_CONTRAST away from every colour in `avoid`."""
    while True:
        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.95))
        tone = (round(r * 255), round(g * 255), round(b * 255))
        if all(math.dist(tone, a) >= MIN_CONTRAST for a in avoid):
            return tone


def _random_background(rng: random.Random, shapes: Sequence[Shape]) -> Background:
    # Keep away from the named colours as well as the jittered fills, for margin.
    avoid = [s.rgb for s in shapes] + [COLOURS[s.colour] for s in shapes]
    return Background(
        pattern=rng.choice(PATTERNS),
        tones=(_random_tone(rng, avoid), _random_tone(rng, avoid)),
        period=rng.uniform(0.06, 0.2),
        angle=rng.choice((0.0, 45.0, 90.0, 135.0)),
        seed=rng.getrandbits(32),
    )


def _one_box(rng: random.Random) -> Box:
    side = rng.uniform(0.25, 0.65)
    left = rng.uniform(MARGIN, 1 - MARGIN - side)
    top = rng.uniform(MARGIN, 1 - MARGIN - side)
    return (left, top, left + side, top + side)


def _stacked_boxes(rng: random.Random) -> tuple[Box, Box]:
    """Two boxes, the first clearly above the second and roughly in the same column."""
    while True:
        upper, lower, gap = rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.4), rng.uniform(0.05, 0.2)
        if upper + gap + lower <= 1 - 2 * MARGIN:
            break
    top = rng.uniform(MARGIN, 1 - MARGIN - (upper + gap + lower))
    column = rng.uniform(MARGIN + 0.2, 1 - MARGIN - 0.2)  # both centres within 0.08 of this column
    boxes = []
    for side, y in ((upper, top), (lower, top + upper + gap)):
        centre = min(max(column + rng.uniform(-0.08, 0.08), MARGIN + side / 2), 1 - MARGIN - side / 2)
        boxes.append((centre - side / 2, y, centre + side / 2, y + side))
    return boxes[0], boxes[1]


def _two_boxes(rng: random.Random, relation: str) -> tuple[Box, Box]:
    """Boxes for (first, second) such that "first <relation> second" is plainly true."""
    upper, lower = _stacked_boxes(rng)
    first, second = (upper, lower) if relation in ("above", "left") else (lower, upper)
    if relation in ("left", "right"):  # the same layout, mirrored on the diagonal
        first, second = (first[1], first[0], first[3], first[2]), (second[1], second[0], second[3], second[2])
    return first, second


def random_scene(rng: random.Random, n_shapes: int) -> Scene:
    """A random scene with `n_shapes` (1 or 2) shapes, drawn from `rng`."""
    if n_shapes == 1:
        relation, boxes = None, (_one_box(rng),)
    elif n_shapes == 2:
        relation = rng.choice(RELATIONS)
        boxes = _two_boxes(rng, relation)
    else:
        raise ValueError(f"a scene holds 1 or 2 shapes, not {n_shapes}")
    shapes = []
    for box in boxes:
        colour = rng.choice(list(COLOURS))
        shapes.append(Shape(rng.choice(SHAPES), colour, _jitter(rng, COLOURS[colour]), box))
    background = _random_background(rng, shapes)
    return Scene(tuple(shapes), relation, background)


def scenes(n: int, seed: int, one_shape_fraction: float = 0.5) -> Iterator[Scene]:
    """`n` scenes, the same for the same seed; about `one_shape_fraction` of them hold one shape."""
    rng = random.Random(seed)
    for _ in range(n):
        yield random_scene(rng, 1 if rng.random() < one_shape_fraction else 2)


# --- rendering ------------------------------------------------------------------------------


def _background_pixels(background: Background, size: int) -> np.ndarray:
    """The background as a (size, size, 3) uint8 array."""
    base, second = (np.array(t, dtype=np.float32) for t in background.tones)
    if background.pattern == "noise":
        noise = np.random.default_rng(background.seed).normal(0.0, 12.0, (size, size, 1))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(centres, centres)  # (size, size) each, in image-side fractions
    if background.pattern == "plain":
        mask = np.zeros((size, size), dtype=bool)
    elif background.pattern == "stripes":
        theta = math.radians(background.angle)
        mask = np.floor((x * math.cos(theta) + y * math.sin(theta)) / background.period) % 2 == 1
    else:
        mask = (np.floor(x / background.period) + np.floor(y / background.period)) % 2 == 1
    return np.where(mask[..., None], second, base).astype(np.uint8)


def _outline(kind: str, box: Box, scale: float) -> list[tuple[float, float]] | None:
    """The polygon of a shape in pixels, or None for a circle (drawn as an ellipse)."""
    left, top, right, bottom = (v * scale for v in box)
    cx, cy, radius = (left + right) / 2, (top + bottom) / 2, (right - left) / 2
    if kind == "circle":
        return None
    if kind == "square":
        return [(left, top), (right, top), (right, bottom), (left, bottom)]
    if kind == "triangle":
        return [(cx, top), (right, bottom), (left, bottom)]
    if kind == "diamond":
        return [(cx, top), (right, cy), (cx, bottom), (left, cy)]
    points = []  # a five-pointed star, one point up
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def render(scene: Scene, size: int) -> Image.Image:
    """Draw `scene` as a size x size RGB image; the same scene looks the same at every size."""
    image = Image.fromarray(_background_pixels(scene.background, size)).convert("RGBA")
    big = size * SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for shape in scene.shapes:
        outline = _outline(shape.kind, shape.box, big)
        if outline is None:
            draw.ellipse([v * big for v in shape.box], fill=(*shape.rgb, 255))
        else:
            draw.polygon(outline, fill=(*shape.rgb, 255))
    image.alpha_composite(layer.resize((size, size), Image.LANCZOS))
    return image.convert("RGB")


def encode(image: Image.Image, image_format: str) -> bytes:
    """PNG or JPEG bytes of `image`."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG")
    elif image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', not {image_format!r}")
    return buffer.getvalue()
