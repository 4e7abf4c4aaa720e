"""Multi-object scenes of the shapes world, with boxes and masks: lesson 06's offline data.

Each image holds 1 to ``max_objects`` shapes of :mod:`vfm_course.data.shapes` (same classes,
colours, backgrounds, clutter and noise), painted in order so that later shapes occlude earlier
ones. Every label is derived from one *owner map*, the index of the topmost shape whose pixel
centre lies inside it, so the three views always agree: instance masks are ``owner == j``, the
semantic mask is the owner's class + 1, and each box is the extent of its instance mask.

Placement rejects a shape that would hide too much of another (centres at least 0.6 of the sum
of their circumradii apart, and no earlier centre under a later shape), so occlusion is partial;
a shape left with fewer than 4 visible pixels is dropped from the labels anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.validate import check_positive_int
from .raster import add_noise, paint
from .shapes import (
    EXTENTS,
    ShapesConfig,
    backdrop,
    check_seed,
    check_shapes_config,
    object_rgb,
    sample_objects,
    shape_alpha,
)

SCENES_CONFIG = ShapesConfig(image_size=64, size_range=(0.06, 0.13), clutter=3)

_CHUNK = 64  # scenes per random stream, rendered whole, so scene i never depends on n
_TRIES = 16  # candidate placements per object before it is left out
_MIN_VISIBLE = 4  # pixels


@dataclass(frozen=True, eq=False)
class ScenesData:
    """Several shapes per image, later ones occluding earlier ones.

    ``images`` uint8 (n, H, W, 3); ``masks`` int64 (n, H, W) semantic: 0 background, class + 1
    where a shape is visible. Per image i (lists of length n; k_i objects, in painting order):
    ``boxes[i]`` float32 (k_i, 4) xyxy in pixels on pixel *edges*, the extent of the visible
    pixels (a mask spanning columns 3..7 gives x1 = 3, x2 = 8; torchvision's
    ``masks_to_boxes`` would give x2 = 7); ``labels[i]`` and ``colours[i]`` int64 (k_i,);
    ``instance_masks[i]`` bool (k_i, H, W), the visible pixels of each object.
    """

    images: np.ndarray
    masks: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    colours: list[np.ndarray]
    instance_masks: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def _place(
    rng: np.random.Generator, m: int, max_objects: int, config: ShapesConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pick each scene's objects from a bulk of candidates by rejection.

    Returns the chosen parameters, each (m, max_objects, ...), and ``present`` bool
    (m, max_objects): slot j of scene i holds an object.
    """
    counts = rng.integers(1, max_objects + 1, m)
    flat = sample_objects(rng, m * max_objects * _TRIES, config)
    cand = {k: v.reshape(m, max_objects, _TRIES, *v.shape[1:]) for k, v in flat.items()}
    stretch = np.maximum(cand["aspects"], 1 / cand["aspects"])
    extent = cand["sizes"] * EXTENTS[cand["labels"]] * stretch  # (m, max_objects, _TRIES)
    choice = np.zeros((m, max_objects), dtype=np.int64)
    present = np.zeros((m, max_objects), dtype=bool)
    for i in range(m):
        placed: list[tuple[float, float, float]] = []  # (x, y, extent) of accepted objects
        for j in range(counts[i]):
            for t in range(_TRIES):
                x, y = cand["centers"][i, j, t]
                e = float(extent[i, j, t])
                if all(
                    np.hypot(x - px, y - py) >= max(0.6 * (e + pe), e + 1.0)
                    for px, py, pe in placed
                ):
                    placed.append((x, y, e))
                    choice[i, j], present[i, j] = t, True
                    break
    rows, slots = np.arange(m)[:, None], np.arange(max_objects)[None, :]
    chosen = {k: v[rows, slots, choice] for k, v in cand.items()}  # (m, max_objects, ...)
    return chosen, present


def _render_chunk(
    rng: np.random.Generator, m: int, max_objects: int, config: ShapesConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Paint ``m`` scenes. Returns uint8 images (m, H, W, 3), the owner map int64 (m, H, W)
    (-1 for background), the slot parameters and ``present`` (see :func:`_place`)."""
    s = config.image_size
    chosen, present = _place(rng, m, max_objects, config)
    canvas = backdrop(rng, m, config)
    owner = np.full((m, s, s), -1, dtype=np.int64)
    for j in range(max_objects):
        idx = np.flatnonzero(present[:, j])
        if idx.size == 0:
            continue
        p = {k: v[idx, j] for k, v in chosen.items()}
        alpha = shape_alpha(p, s)  # (m_j, H, W)
        sub, own = canvas[idx], owner[idx]
        paint(sub, alpha, object_rgb(p["colours"], p["tints"]))
        own[alpha > 0.5] = j  # the pixel centre is inside: this shape now owns the pixel
        canvas[idx], owner[idx] = sub, own
    return add_noise(rng, canvas, config.noise_std), owner, chosen, present


def _box(mask: np.ndarray) -> np.ndarray:
    """xyxy on pixel edges around the True pixels of one (H, W) mask: float32 (4,)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def generate_scenes(
    n: int, config: ShapesConfig = SCENES_CONFIG, seed: int = 0, max_objects: int = 4
) -> ScenesData:
    """Render ``n`` scenes of 1 to ``max_objects`` shapes with boxes and masks.

    See :class:`ScenesData` for the contract. The same arguments give bit-identical arrays,
    and scene i does not depend on ``n``.
    """
    check_positive_int(n, "n")
    check_positive_int(max_objects, "max_objects")
    if max_objects > 8:
        raise ValueError(f"max_objects must be at most 8 (scenes get crowded), got {max_objects}")
    seed = check_seed(seed)
    config = check_shapes_config(config)
    images, masks = [], []
    boxes, labels, colours, instances = [], [], [], []
    for block in range(math.ceil(n / _CHUNK)):
        rng = np.random.default_rng([seed, block, 1])  # tag 1: scenes
        imgs, owner, chosen, present = _render_chunk(rng, _CHUNK, max_objects, config)
        kept = min(_CHUNK, n - block * _CHUNK)  # the last block is cut to n
        for i in range(kept):
            ids = np.array(
                [j for j in np.flatnonzero(present[i]) if (owner[i] == j).sum() >= _MIN_VISIBLE],
                dtype=np.int64,
            )
            # Lookup table from owner index to semantic value; owner -1 (background) reads the
            # last entry, which stays 0, and so do dropped objects.
            lut = np.zeros(max_objects + 1, dtype=np.int64)
            lut[ids] = chosen["labels"][i, ids] + 1
            masks.append(lut[owner[i]])
            inst = owner[i][None] == ids[:, None, None]  # (k_i, H, W)
            instances.append(inst)
            boxes.append(np.stack([_box(mk) for mk in inst]) if len(ids) else np.zeros((0, 4)))
            labels.append(chosen["labels"][i, ids].astype(np.int64))
            colours.append(chosen["colours"][i, ids].astype(np.int64))
        images.append(imgs[:kept])
    return ScenesData(
        images=np.concatenate(images),
        masks=np.stack(masks),
        boxes=[b.astype(np.float32) for b in boxes],
        labels=labels,
        colours=colours,
        instance_masks=instances,
    )
