"""The shapes world: a seeded, offline image generator for every lesson's default data.

Six shape classes in six colours on cluttered, noisy backgrounds, drawn by the anti-aliased
signed-distance rasterizer in :mod:`vfm_course.data.raster`. :func:`generate_shapes` gives one shape
per image with a label and a caption ("a large red star at the top left", for mini-CLIP);
:func:`vfm_course.data.scenes.generate_scenes` puts several per image, with boxes and masks.

Design choices, each against a shortcut a model could take instead of learning shape:

- colour, size, position and rotation are drawn independently of the class;
- ``size`` is the radius of the circle with the *same area*, so area says nothing about the
  class (every unit shape is rescaled by its measured area);
- placement margins are the same for every class, so position says nothing either.

Determinism: image ``i`` depends only on ``seed``, ``i`` and the config, not on ``n`` (random
numbers come from one stream per block of 256 images), so a smaller ``n`` gives a prefix of a
larger one, and the same call gives bit-identical arrays. Generation is vectorised over a
block of images (no Python loop per pixel), so a lesson's dataset takes seconds, not minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.validate import check_choice, check_positive_int, is_int, is_number
from .raster import (
    add_clutter,
    add_noise,
    coverage,
    local_coords,
    paint,
    sample_background,
    sd_circle,
    sd_cross,
    sd_heart,
    sd_square,
    sd_star,
    sd_triangle,
)

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (235, 215, 50),
    "green": (50, 170, 70),
    "blue": (50, 100, 225),
    "purple": (150, 70, 200),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZE_WORDS: tuple[str, ...] = ("small", "large")
POSITION_WORDS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "mix")
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} {where}",
    "a photo of a {size} {colour} {shape} {where}",
    "there is a {size} {colour} {shape} {where}",
    "{where} is a {size} {colour} {shape}",
)

_UNIT_SDFS = (sd_circle, sd_square, sd_triangle, sd_star, sd_cross, sd_heart)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32) / 255.0  # (6, 3)
_CHUNK = 256  # images per random stream (and the most wasted work when n is not a multiple)
# Centre-to-border distance in units of size, the same for every class: the equal-area circle
# plus room. Circles, squares, crosses and hearts always fit; a triangle or star can lose the
# tip of a point at the border (which is fine: position then still says nothing about class).
_MARGIN = 1.25


def _unit_stats() -> tuple[np.ndarray, np.ndarray]:
    """Measure each unit shape's area and circumradius on a fine grid (once, at import)."""
    g = np.linspace(-1.5, 1.5, 601, dtype=np.float32)
    x, y = np.meshgrid(g, g)
    areas, radii = [], []
    for sdf in _UNIT_SDFS:
        inside = sdf(x, y) < 0
        areas.append(inside.sum() * float(g[1] - g[0]) ** 2)
        radii.append(float(np.hypot(x, y)[inside].max()))
    return np.array(areas), np.array(radii)


_AREAS, _RADII = _unit_stats()
_AREA_SCALE = np.sqrt(np.pi / _AREAS).astype(np.float32)  # local units -> equal-area radius 1
EXTENTS = _RADII * _AREA_SCALE  # circumradius per unit of size, per class (1.0 for the circle)


@dataclass(frozen=True)
class ShapesConfig:
    """How the shapes world looks. Colour, size, position and rotation are drawn independently
    of the class, so only the outline tells the classes apart (colour alone is at chance).

    ``size_range`` is the equal-area radius as a fraction of ``image_size``; ``stretch`` the
    largest area-preserving aspect change (0.1: up to x * 1.1 and y / 1.1); ``colour_jitter``
    the per-channel shift of the palette colour; ``background`` one of :data:`BACKGROUNDS`
    ("mix" picks one of the three per image); ``noise_std`` Gaussian pixel noise, in [0, 1]
    intensity units; ``clutter`` the most distractor strokes per image (0 to ``clutter``,
    uniformly), drawn beneath the shapes and never labelled.
    """

    image_size: int = 32
    size_range: tuple[float, float] = (0.11, 0.21)
    rotate: bool = True
    stretch: float = 0.10
    colour_jitter: float = 0.10
    background: str = "mix"
    noise_std: float = 0.05
    clutter: int = 2

    def __post_init__(self) -> None:
        check_positive_int(self.image_size, "image_size")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        sr = self.size_range
        if not (
            isinstance(sr, tuple)
            and len(sr) == 2
            and all(isinstance(v, (int, float)) for v in sr)
            and 0 < sr[0] <= sr[1] <= 0.3
        ):
            raise ValueError(
                f"size_range must be a tuple (min, max) of fractions of the image side with"
                f" 0 < min <= max <= 0.3, got {sr!r}"
            )
        for name, top in (("stretch", 0.5), ("colour_jitter", 0.5), ("noise_std", 0.5)):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= top:
                raise ValueError(f"{name} must be between 0 and {top}, got {value}")
        check_choice(self.background, "background", BACKGROUNDS)
        if not isinstance(self.rotate, bool):
            raise ValueError(f"rotate must be True or False, got {self.rotate!r}")
        if not is_int(self.clutter):
            raise ValueError(f"clutter must be an integer >= 0, got {self.clutter!r}")
        if self.clutter < 0:
            raise ValueError(f"clutter must be an integer >= 0, got {self.clutter}")


@dataclass(frozen=True, eq=False)
class ShapesData:
    """One shape per image. ``images`` uint8 (n, H, W, 3); ``labels`` and ``colours`` int64 (n,)
    index :data:`SHAPE_CLASSES` and :data:`COLOUR_NAMES`; ``sizes`` float32 (n,) the equal-area
    radius in pixels; ``centers`` float32 (n, 2) as (x, y) pixels from the top-left corner;
    ``angles`` float32 (n,) radians; ``captions`` one sentence per image."""

    images: np.ndarray
    labels: np.ndarray
    colours: np.ndarray
    sizes: np.ndarray
    centers: np.ndarray
    angles: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.labels)


# --- words --------------------------------------------------------------------------------------


# The course world of lessons 02-06: larger, upright shapes on plain grey backgrounds, without
# clutter strokes or pixel noise. The README's "How the course world was chosen" says how each
# choice was measured. No clutter or noise also because self-supervised objectives learn
# whatever solves their own task: two views of a cluttered image share its strokes and
# background pattern, which identify the image without saying anything about its shape.
COURSE_WORLD = ShapesConfig(
    size_range=(0.22, 0.3), rotate=False, background="plain", noise_std=0.0, clutter=0
)


def size_word(size: float, config: ShapesConfig) -> str:
    """'small' below the middle of ``config.size_range`` (``size`` in pixels), else 'large'."""
    middle = 0.5 * sum(config.size_range) * config.image_size
    return "small" if size < middle else "large"


def position_phrase(x: float, y: float, image_size: int) -> str:
    """Where a centre (x, y) in pixels sits: 'at the top left', 'on the right', 'in the center'.

    Bands split at 40% and 60% of the side (not thirds) so that large shapes, whose centres
    stay further from the border, are not almost always 'in the center'.
    """
    lo, hi = 0.4 * image_size, 0.6 * image_size
    col = "left" if x < lo else "right" if x > hi else ""
    row = "top" if y < lo else "bottom" if y > hi else ""
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the center"


def make_caption(
    label: int,
    colour: int,
    size: float,
    center: tuple[float, float],
    config: ShapesConfig,
    template: int = 0,
) -> str:
    """Caption from :data:`CAPTION_TEMPLATES` naming shape, colour, size word and position."""
    return CAPTION_TEMPLATES[template].format(
        size=size_word(size, config),
        colour=COLOUR_NAMES[colour],
        shape=SHAPE_CLASSES[label],
        where=position_phrase(center[0], center[1], config.image_size),
    )


# --- drawing ------------------------------------------------------------------------------------


def sample_objects(rng: np.random.Generator, m: int, config: ShapesConfig) -> dict[str, np.ndarray]:
    """Draw ``m`` independent shapes' parameters, as a dict of arrays of length m.

    Keys: ``labels``, ``colours`` int64 (m,); ``sizes`` float32 (m,) equal-area radius in
    pixels; ``angles`` float32 (m,) radians; ``aspects`` float32 (m,) x-stretch (y gets its
    inverse); ``centers`` float32 (m, 2) as (x, y) pixels; ``tints`` float64 (m, 3).
    """
    s = config.image_size
    lo, hi = config.size_range
    log_stretch = math.log1p(config.stretch)
    labels = rng.integers(0, len(SHAPE_CLASSES), m)
    colours = rng.integers(0, len(COLOUR_NAMES), m)
    sizes = rng.uniform(lo * s, hi * s, m).astype(np.float32)
    # Drawn even when rotate=False, so that switching one knob keeps the other draws.
    angles = rng.uniform(0, 2 * np.pi, m).astype(np.float32) * np.float32(config.rotate)
    aspects = np.exp(rng.uniform(-log_stretch, log_stretch, m)).astype(np.float32)
    margin = _MARGIN * sizes[:, None]  # (m, 1): the same for every class, see module docstring
    centers = (margin + rng.random((m, 2)) * (s - 2 * margin)).astype(np.float32)  # (m, 2)
    tints = rng.uniform(-config.colour_jitter, config.colour_jitter, (m, 3))
    return {
        "labels": labels,
        "colours": colours,
        "sizes": sizes,
        "angles": angles,
        "aspects": aspects,
        "centers": centers,
        "tints": tints,
    }


def object_rgb(colours: np.ndarray, tints: np.ndarray) -> np.ndarray:
    """Palette colours plus their per-image tint: float32 (m, 3) in [0, 1]."""
    return np.clip(_PALETTE[colours] + tints, 0, 1).astype(np.float32)


def shape_alpha(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Anti-aliased coverage of each shape in ``p``: float32 (m, H, W) in [0, 1]."""
    labels = p["labels"]
    alpha = np.empty((len(labels), size, size), dtype=np.float32)
    for k, sdf in enumerate(_UNIT_SDFS):
        idx = np.flatnonzero(labels == k)
        if idx.size == 0:
            continue
        px_per_unit = p["sizes"][idx] * _AREA_SCALE[k]  # (m_k,)
        aspect = p["aspects"][idx]
        scales = px_per_unit[:, None] * np.stack([aspect, 1 / aspect], axis=1)  # (m_k, 2)
        x, y = local_coords(size, p["centers"][idx], p["angles"][idx], scales)
        # Local distances times the mean scale approximate pixel distances (exact unstretched).
        alpha[idx] = coverage(sdf(x, y) * px_per_unit[:, None, None])
    return alpha


def backdrop(rng: np.random.Generator, m: int, config: ShapesConfig) -> np.ndarray:
    """Everything behind the labelled shapes: background plus clutter, float32 (m, H, W, 3)."""
    kind = None if config.background == "mix" else BACKGROUNDS.index(config.background)
    canvas = sample_background(rng, m, config.image_size, kind)
    add_clutter(rng, canvas, config.clutter, _PALETTE)
    return canvas


def check_seed(seed: object) -> int:
    """Seeds are non-negative integers (numpy's SeedSequence rejects negative ones)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def check_shapes_config(config: object) -> ShapesConfig:
    """A config must be a ShapesConfig (a dict would fail later, less clearly)."""
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    return config


def shape_masks(n: int, config: ShapesConfig = ShapesConfig(), seed: int = 0) -> np.ndarray:
    """Bool (n, H, W), True where the shape of each image of ``generate_shapes(n, config, seed)``
    covers at least half a pixel: the same random streams, drawn in the same order, rebuild the
    shapes (nothing else is rendered), so the masks align with the images exactly."""
    check_positive_int(n, "n")
    seed, config = check_seed(seed), check_shapes_config(config)
    streams = (np.random.default_rng([seed, b, 0]) for b in range(math.ceil(n / _CHUNK)))
    size = config.image_size
    return np.concatenate(
        [shape_alpha(sample_objects(rng, _CHUNK, config), size) >= 0.5 for rng in streams]
    )[:n]


def generate_shapes(n: int, config: ShapesConfig = ShapesConfig(), seed: int = 0) -> ShapesData:
    """Render ``n`` images of one shape each, with labels and captions; see :class:`ShapesData`.

    The same ``(n, config, seed)`` gives bit-identical arrays; image i does not depend on n.
    """
    check_positive_int(n, "n")
    seed = check_seed(seed)
    config = check_shapes_config(config)
    parts = []
    for block in range(math.ceil(n / _CHUNK)):
        # One stream per block (tagged 0 for single shapes), always rendered whole and cut
        # afterwards, so that block b is the same for every n.
        rng = np.random.default_rng([seed, block, 0])
        p = sample_objects(rng, _CHUNK, config)
        p["templates"] = rng.integers(0, len(CAPTION_TEMPLATES), _CHUNK)
        canvas = backdrop(rng, _CHUNK, config)
        paint(canvas, shape_alpha(p, config.image_size), object_rgb(p["colours"], p["tints"]))
        p["images"] = add_noise(rng, canvas, config.noise_std)
        parts.append(p)
    cat = {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]}
    captions = [
        make_caption(int(lab), int(col), float(size), (float(c[0]), float(c[1])), config, int(t))
        for lab, col, size, c, t in zip(
            cat["labels"],
            cat["colours"],
            cat["sizes"],
            cat["centers"],
            cat["templates"],
            strict=True,
        )
    ]
    return ShapesData(
        images=cat["images"],
        labels=cat["labels"].astype(np.int64),
        colours=cat["colours"].astype(np.int64),
        sizes=cat["sizes"],
        centers=cat["centers"],
        angles=cat["angles"],
        captions=captions,
    )
