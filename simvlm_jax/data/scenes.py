"""Procedural 64x64 scenes of coloured shapes with one canonical caption each.

Every image holds one or two flat-coloured shapes on a dark, plain or lightly
textured background, and is described by exactly one caption built from a
small grammar:

    a large red circle
    a small blue square to the left of a large green triangle
    a large white cross above a small orange diamond

Canonical captions make the target a function of the image, so a tiny
captioner can fit it. Two rules make that true:

* Mention order: of two objects, the larger one is mentioned first; between
  equal sizes the one whose colour comes first in `COLOURS` does, then the one
  whose shape comes first in `SHAPES`. Two objects never share all three
  attributes, so the order is always defined.
* Relations: the relation word describes the first-mentioned object relative
  to the second. Objects are placed so that one axis clearly dominates (the
  centre offset along it is at least `RELATION_RATIO` times the offset along
  the other axis) and, along it, their centres are at least r1 + r2 + `MIN_GAP`
  pixels apart, so the boxes never overlap.

Compositional generalisation: the (colour, shape) pairs in `HELDOUT_PAIRS`
never occur in the `train` or `validation` splits, although every colour and
every shape does occur there with other partners. Every image of the `heldout`
split contains at least one held-out pair.

Determinism: example `i` of split `s` is drawn from a NumPy generator seeded
with (crc32(s), i), so any example can be regenerated alone, in any order.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------
# Vocabulary of the scenes.
# ---------------------------------------------------------------------------

IMAGE_SIZE = 64  # Images are [IMAGE_SIZE, IMAGE_SIZE, 3] uint8.

# Nominal RGB of each colour; every object gets its own jitter around it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 25),
    "white": (240, 240, 240),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SIZES: tuple[str, ...] = ("large", "small")  # Also the mention order.
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

# (colour, shape) pairs kept out of train and validation: a Latin-square-like
# choice, so each held-out shape keeps 6 training colours and each held-out
# colour keeps 4 training shapes; orange and white keep every shape.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "diamond"),
    ("blue", "cross"),
    ("yellow", "circle"),
    ("purple", "square"),
)

# Number of examples per split of the embedded data; `embedded.prepare(split_sizes=...)` takes others.
SPLIT_SIZES: Mapping[str, int] = MappingProxyType({"train": 20_000, "validation": 500, "heldout": 500})
SPLITS: tuple[str, ...] = ("train", "validation", "heldout")

# Geometry, in pixels.
RADIUS_RANGE = {"small": (6, 7), "large": (12, 14)}  # Inclusive half-extents.
MARGIN = 1  # Free pixels kept between an object's box and the image border.
MIN_GAP = 3  # Minimum centre distance beyond r1 + r2 along the relation axis.
RELATION_RATIO = 2.5  # Dominant-axis offset >= ratio * other-axis offset.
COLOUR_JITTER = 12  # Per-channel uniform jitter of an object's colour.
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "blotches", "stripes")
BACKGROUND_RANGE = (15, 65)  # Per-channel base background level (inclusive).
_COORDS = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
_BLOTCH_GRID = 5  # Coarse grid of the "blotches" texture.
# [IMAGE_SIZE, _BLOTCH_GRID] linear-interpolation weights from the coarse grid to pixels.
_GRID_POSITIONS = np.linspace(0, _BLOTCH_GRID - 1, IMAGE_SIZE)[:, None]  # [IMAGE_SIZE, 1]
_UPSAMPLE = np.maximum(0.0, 1.0 - np.abs(_GRID_POSITIONS - np.arange(_BLOTCH_GRID))).astype(np.float32)
_ALL_PAIRS = tuple((c, s) for c in COLOUR_NAMES for s in SHAPES)
_TRAIN_PAIRS = tuple(p for p in _ALL_PAIRS if p not in HELDOUT_PAIRS)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape: its attributes and where it is (pixel centre, half-extent)."""

    colour: str
    shape: str
    size: str
    x: int = 0
    y: int = 0
    radius: int = 0

    @property
    def description(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive pixel box (x0, y0, x1, y1) reserved for the shape."""
        r = self.radius
        return (self.x - r, self.y - r, self.x + r, self.y + r)


def split_sizes(sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """`sizes` (default `SPLIT_SIZES`) checked: one positive count for each of `SPLITS`."""
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    if set(sizes) != set(SPLITS) or any(not isinstance(n, int) or n < 1 for n in sizes.values()):
        raise ValueError(f"Scene split sizes must give a positive count for each of {SPLITS}; got {sizes}.")
    return sizes


def caption_vocabulary() -> list[str]:
    """All words that can appear in a caption, sorted."""
    words = {"a", *COLOUR_NAMES, *SHAPES, *SIZES}
    for relation in RELATIONS:
        words.update(relation.split())
    return sorted(words)


def mention_key(obj: SceneObject) -> tuple[int, int, int]:
    """Sort key giving the canonical order in which objects are mentioned."""
    return (SIZES.index(obj.size), COLOUR_NAMES.index(obj.colour), SHAPES.index(obj.shape))


def relation_between(a: SceneObject, b: SceneObject) -> str | None:
    """Where `a` is relative to `b`, or None if no relation is unambiguous."""
    dx, dy = b.x - a.x, b.y - a.y  # Image coordinates: y grows downwards.
    min_sep = a.radius + b.radius + MIN_GAP
    if abs(dx) >= RELATION_RATIO * abs(dy) and abs(dx) >= min_sep:
        return "to the left of" if dx > 0 else "to the right of"
    if abs(dy) >= RELATION_RATIO * abs(dx) and abs(dy) >= min_sep:
        return "above" if dy > 0 else "below"
    return None


def caption_of(objects: Sequence[SceneObject], relation: str | None) -> str:
    """The canonical caption of objects already in mention order."""
    if len(objects) == 1:
        return objects[0].description
    return f"{objects[0].description} {relation} {objects[1].description}"


# ---------------------------------------------------------------------------
# Sampling a layout (attributes, positions, relation).
# ---------------------------------------------------------------------------


def _sample_attributes(rng: np.random.Generator, pairs: Sequence[tuple[str, str]]) -> SceneObject:
    colour, shape = pairs[rng.integers(len(pairs))]
    size = SIZES[rng.integers(len(SIZES))]
    return SceneObject(colour=colour, shape=shape, size=size)


def _sample_radius(rng: np.random.Generator, size: str) -> int:
    lo, hi = RADIUS_RANGE[size]
    return int(rng.integers(lo, hi + 1))


def _centre_range(radius: int) -> tuple[int, int]:
    """Inclusive range of centre coordinates keeping the box inside the image."""
    return MARGIN + radius, IMAGE_SIZE - 1 - MARGIN - radius


def _place_pair(
    rng: np.random.Generator, a: SceneObject, b: SceneObject, relation: str
) -> tuple[SceneObject, SceneObject]:
    """Positions for `a` and `b` such that `relation_between(a, b) == relation`."""
    horizontal = relation in ("to the left of", "to the right of")
    a_first = relation in ("to the left of", "above")  # `a` has the smaller major coordinate.
    first, second = (a, b) if a_first else (b, a)
    lo1, hi1 = _centre_range(first.radius)
    lo2, hi2 = _centre_range(second.radius)
    # Major axis: separation first, then the first object's coordinate.
    sep = int(rng.integers(first.radius + second.radius + MIN_GAP, hi2 - lo1 + 1))
    u1 = int(rng.integers(lo1, hi2 - sep + 1))
    u2 = u1 + sep
    # Minor axis: an offset small enough for the major axis to dominate.
    max_offset = int(np.floor(sep / RELATION_RATIO))
    v1 = int(rng.integers(lo1, hi1 + 1))
    v2 = int(rng.integers(max(lo2, v1 - max_offset), min(hi2, v1 + max_offset) + 1))
    if horizontal:
        first = dataclasses.replace(first, x=u1, y=v1)
        second = dataclasses.replace(second, x=u2, y=v2)
    else:
        first = dataclasses.replace(first, x=v1, y=u1)
        second = dataclasses.replace(second, x=v2, y=u2)
    a, b = (first, second) if a_first else (second, first)
    assert relation_between(a, b) == relation, (a, b, relation)
    return a, b


def sample_layout(rng: np.random.Generator, *, heldout: bool = False) -> tuple[list[SceneObject], str | None]:
    """Draws the objects (in mention order) and the relation of a scene.

    Args:
      rng: the generator; the layout consumes the first draws from it.
      heldout: draw a scene containing at least one pair of `HELDOUT_PAIRS`
        (otherwise no object uses a held-out pair).

    Returns:
      (objects, relation): a list of 1 or 2 `SceneObject`s with positions, and
      the relation of objects[0] to objects[1] (None for one object).
    """
    num_objects = 1 + int(rng.integers(2))
    first = _sample_attributes(rng, HELDOUT_PAIRS if heldout else _TRAIN_PAIRS)
    first = dataclasses.replace(first, radius=_sample_radius(rng, first.size))
    if num_objects == 1:
        lo, hi = _centre_range(first.radius)
        x, y = rng.integers(lo, hi + 1, size=2)
        return [dataclasses.replace(first, x=int(x), y=int(y))], None
    while True:  # Two objects never share all their attributes.
        other = _sample_attributes(rng, _ALL_PAIRS if heldout else _TRAIN_PAIRS)
        if mention_key(other) != mention_key(first):
            break
    other = dataclasses.replace(other, radius=_sample_radius(rng, other.size))
    a, b = sorted([first, other], key=mention_key)
    relation = RELATIONS[rng.integers(len(RELATIONS))]
    a, b = _place_pair(rng, a, b, relation)
    return [a, b], relation


# ---------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------


def _texture(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A grey background texture [H, W] float32 within +-12 levels."""
    size = IMAGE_SIZE
    if kind == "plain":
        return np.zeros((size, size), np.float32)
    if kind == "gradient":  # A linear ramp of about +-11 levels in a random direction.
        angle = rng.uniform(0.0, 2.0 * np.pi)
        return 8.0 * (np.cos(angle) * _COORDS[None, :] + np.sin(angle) * _COORDS[:, None])
    if kind == "blotches":  # Smooth, low-frequency mottling: a coarse grid, interpolated.
        coarse = rng.normal(0.0, 5.0, size=(_BLOTCH_GRID, _BLOTCH_GRID)).astype(np.float32)
        coarse = np.clip(coarse, -12.0, 12.0)  # Interpolation then stays within +-12 too.
        return _UPSAMPLE @ coarse @ _UPSAMPLE.T
    if kind == "stripes":  # Faint horizontal or vertical stripes, 2-4 pixels wide.
        width, phase, vertical = rng.integers(2, 5), rng.integers(8), rng.integers(2)
        bands = 5.0 * (2.0 * (((np.arange(size) + phase) // width) % 2) - 1.0)
        return np.broadcast_to(bands[None, :] if vertical else bands[:, None], (size, size))
    raise ValueError(f"Unknown background kind {kind!r}.")


def _background(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A dark background uint8 [H, W, 3] and its kind."""
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    base = rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1, size=3).astype(np.int16)
    texture = np.rint(_texture(rng, kind)).astype(np.int16)  # [H, W], small values.
    # Bases are at least 15 and textures within +-12 levels: nothing to clip.
    return (base[None, None, :] + texture[:, :, None]).astype(np.uint8), kind


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, rgb: tuple[int, int, int]) -> None:
    x, y, r = obj.x, obj.y, obj.radius
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
    elif obj.shape == "square":
        s = int(round(0.85 * r))  # Slightly smaller, so squares don't look larger.
        draw.rectangle((x - s, y - s, x + s, y + s), fill=rgb)
    elif obj.shape == "triangle":  # Pointing up.
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=rgb)
    elif obj.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=rgb)
    elif obj.shape == "cross":
        h = max(2, int(round(0.4 * r)))  # Half the arm thickness.
        draw.rectangle((x - r, y - h, x + r, y + h), fill=rgb)
        draw.rectangle((x - h, y - r, x + h, y + r), fill=rgb)
    else:
        raise ValueError(f"Unknown shape {obj.shape!r}.")


def render(
    rng: np.random.Generator, objects: Sequence[SceneObject]
) -> tuple[np.ndarray, list[tuple[int, int, int]], str]:
    """Draws `objects` on a random background.

    Returns:
      (image, rgbs, background_kind): uint8 [64, 64, 3], the jittered RGB of
      each object, and the background's kind.
    """
    background, kind = _background(rng)
    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    rgbs = []
    for obj in objects:
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        rgb = tuple(min(255, max(0, c + int(j))) for c, j in zip(COLOURS[obj.colour], jitter))
        _draw(draw, obj, rgb)
        rgbs.append(rgb)
    return np.asarray(canvas, dtype=np.uint8), rgbs, kind


# ---------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------


def generate_scene(rng: np.random.Generator, *, heldout: bool = False) -> tuple[np.ndarray, str, dict]:
    """Draws one scene.

    Args:
      rng: a NumPy generator; the scene is a function of its state.
      heldout: whether to draw a held-out composition (see `sample_layout`).

    Returns:
      (image, caption, metadata): image uint8 [64, 64, 3]; the canonical
      caption; metadata with `num_objects`, `relation` ("" for one object),
      `objects` (dicts of colour/shape/size/x/y/radius/bbox/rgb, in mention
      order), `background` and `has_heldout_pair`.
    """
    objects, relation = sample_layout(rng, heldout=heldout)
    image, rgbs, kind = render(rng, objects)
    object_dicts = [
        {
            "colour": obj.colour,
            "shape": obj.shape,
            "size": obj.size,
            "x": obj.x,
            "y": obj.y,
            "radius": obj.radius,
            "bbox": obj.bbox,
            "rgb": rgb,
        }
        for obj, rgb in zip(objects, rgbs)
    ]
    metadata = {
        "num_objects": len(objects),
        "relation": relation or "",
        "objects": object_dicts,
        "background": kind,
        "has_heldout_pair": any((o.colour, o.shape) in HELDOUT_PAIRS for o in objects),
    }
    return image, caption_of(objects, relation), metadata


def example_rng(split: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `split`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    return np.random.default_rng([zlib.crc32(split.encode("utf-8")), index])


def generate_example(split: str, index: int) -> tuple[np.ndarray, str, dict]:
    """Example `index` of `split` as (image, caption, metadata) with an `id`."""
    image, caption, metadata = generate_scene(example_rng(split, index), heldout=split == "heldout")
    metadata["id"] = f"{split}-{index:05d}"
    return image, caption, metadata


def generate_split(split: str, num_examples: int | None = None) -> Iterator[tuple[np.ndarray, str, dict]]:
    """Yields (image, caption, metadata) for the first examples of `split`."""
    count = SPLIT_SIZES[split] if num_examples is None else num_examples
    for index in range(count):
        yield generate_example(split, index)


def split_captions(split: str, num_examples: int | None = None) -> Iterator[str]:
    """The captions of `generate_split(split, ...)`, without rendering images."""
    count = SPLIT_SIZES[split] if num_examples is None else num_examples
    for index in range(count):
        objects, relation = sample_layout(example_rng(split, index), heldout=split == "heldout")
        yield caption_of(objects, relation)
