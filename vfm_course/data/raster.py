"""Anti-aliased rasterization with signed distance functions: the pen behind ``shapes``.

A signed distance function (SDF) gives, for every point, the distance to a shape's outline:
negative inside, positive outside. Drawing with one is a single expression: a pixel whose centre
lies ``d`` pixels outside the edge is covered by about ``0.5 - d`` of its area (clipped to
[0, 1]). That is the analytic anti-aliasing of font and shader renderers, and it needs no
supersampling, so whole batches of images render as a handful of vectorized numpy operations.
The formulas follow Inigo Quilez's catalogue of exact 2-D distance functions
(https://iquilezles.org/articles/distfunctions2d/).

Conventions. Everything works on float32 arrays; the only random functions are the backdrop
ones at the end (backgrounds, clutter, noise), which take the caller's ``numpy`` Generator.
Unit shapes are defined in *local* coordinates ``(x, y)`` with y pointing up and the shape's
centroid at the origin; :func:`local_coords` maps image pixels (row 0 at the top) into that
frame. Arrays of images are (n, H, W, 3) float32 in [0, 1] until :func:`to_uint8`.
"""

from __future__ import annotations

import numpy as np

_SQRT3 = np.float32(np.sqrt(3.0))


def pixel_centers(size: int) -> np.ndarray:
    """Pixel-centre coordinates ``0.5, 1.5, ..., size - 0.5``: float32 (size,)."""
    return np.arange(size, dtype=np.float32) + np.float32(0.5)


def local_coords(
    size: int, centers: np.ndarray, angles: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map every pixel of ``n`` square images of side ``size`` into each shape's local frame.

    ``centers`` (n, 2) float are shape centres as (x, y) in pixels; ``angles`` (n,) rotate the
    shape counter-clockwise (radians); ``scales`` (n, 2) are pixels per local unit along the
    shape's own x and y axes. Returns ``(x, y)``, each float32 (n, H, W) with H = W = ``size``.
    """
    c = pixel_centers(size)
    dx = c[None, None, :] - centers[:, 0, None, None].astype(np.float32)  # (n, 1, W)
    dy = centers[:, 1, None, None].astype(np.float32) - c[None, :, None]  # (n, H, 1); y up
    cos = np.cos(angles).astype(np.float32)[:, None, None]
    sin = np.sin(angles).astype(np.float32)[:, None, None]
    # Undo the rotation (rotate the pixel grid by -angle), then undo the scale.
    x = (cos * dx + sin * dy) / scales[:, 0, None, None].astype(np.float32)  # (n, H, W)
    y = (cos * dy - sin * dx) / scales[:, 1, None, None].astype(np.float32)  # (n, H, W)
    return x, y


def coverage(distance_px: np.ndarray) -> np.ndarray:
    """Fraction of each pixel inside the shape, from the signed distance in pixels (same shape).

    The 1-pixel linear ramp ``0.5 - d`` is the box-filter anti-aliasing of a straight edge
    through the pixel; coverage > 0.5 exactly when the pixel centre is inside (d < 0).
    """
    return np.clip(np.float32(0.5) - distance_px, 0.0, 1.0)


# --- unit shapes: area-agnostic, centred on their centroid (y up), roughly unit size ---------


def sd_circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit circle."""
    return np.hypot(x, y) - np.float32(1.0)


def sd_box(x: np.ndarray, y: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    """Axis-aligned rectangle with half-sizes ``half_w`` x ``half_h`` (exact inside and out)."""
    qx = np.abs(x) - np.float32(half_w)
    qy = np.abs(y) - np.float32(half_h)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def sd_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Square of side 2."""
    return sd_box(x, y, 1.0, 1.0)


def sd_triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Equilateral triangle, apex up, circumradius 1 (Quilez's ``sdEquilateralTriangle``)."""
    r = _SQRT3 / 2  # half the side length for circumradius 1
    px = np.abs(x) - r  # fold onto the right half
    py = y + r / _SQRT3
    # Reflect points past the right edge's normal so one segment's distance serves both edges.
    fold = px + _SQRT3 * py > 0
    px, py = (
        np.where(fold, (px - _SQRT3 * py) / 2, px),
        np.where(fold, (-_SQRT3 * px - py) / 2, py),
    )
    px = px - np.clip(px, -2 * r, 0)
    return -np.hypot(px, py) * np.sign(py)


def sd_star(x: np.ndarray, y: np.ndarray, inner: float = 0.5) -> np.ndarray:
    """Five-pointed star, one point up, outer radius 1, inner radius ``inner`` (``sdStar5``).

    A fat star (inner 0.5, the classic is 0.38) keeps its points visible at 32 x 32 pixels.
    """
    k1x, k1y = np.float32(0.809016994375), np.float32(-0.587785252292)  # (cos 36, -sin 36)
    px, py = np.abs(x), y
    # Two mirror folds map the plane onto one arm's wedge (the star's 10-fold symmetry).
    d = np.maximum(k1x * px + k1y * py, 0)
    px, py = px - 2 * d * k1x, py - 2 * d * k1y
    d = np.maximum(-k1x * px + k1y * py, 0)
    px, py = px + 2 * d * k1x, py - 2 * d * k1y
    px, py = np.abs(px), py - 1
    bax, bay = np.float32(-inner * k1y), np.float32(inner * k1x - 1)  # tip -> inner corner
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0, 1)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def sd_cross(x: np.ndarray, y: np.ndarray, arm: float = 0.35) -> np.ndarray:
    """Plus sign: union (min) of two bars of half-width ``arm`` and half-length 1.

    min() is the exact distance outside a union and close enough inside for a 1-pixel ramp.
    """
    return np.minimum(sd_box(x, y, 1.0, arm), sd_box(x, y, arm, 1.0))


def sd_heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Heart, lobes up, about 1.2 wide (Quilez's ``sdHeart``, shifted onto its centroid)."""
    px, py = np.abs(x), y + np.float32(0.657)  # the formula's tip sits at the origin
    lobe = np.hypot(px - 0.25, py - 0.75) - np.float32(np.sqrt(2.0) / 4)
    m = 0.5 * np.maximum(px + py, 0)
    body = np.sqrt(np.minimum(px * px + (py - 1) ** 2, (px - m) ** 2 + (py - m) ** 2))
    return np.where(px + py > 1, lobe, body * np.sign(px - py))


def sd_segment(
    px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Capsule (thick line segment) in pixel coordinates, for clutter strokes.

    ``px`` (1, 1, W) and ``py`` (1, H, 1) are pixel centres; ``a``, ``b`` (n, 2) the endpoints as
    (x, y) pixels; ``radius`` (n,) the half-thickness in pixels. Returns float32 (n, H, W).
    """
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]  # (n, 1, 1)
    bax, bay = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
    pax, pay = px - ax, py - ay  # (n, 1, W), (n, H, 1)
    h = np.clip((pax * bax + pay * bay) / np.maximum(bax * bax + bay * bay, 1e-6), 0, 1)
    dist = np.hypot(pax - bax * h, pay - bay * h)  # (n, H, W)
    return (dist - radius[:, None, None]).astype(np.float32)


# --- backgrounds and compositing ---------------------------------------------------------------


def smooth_field(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly upsample coarse random colours (n, g, g, 3) to blotchy (n, H, W, 3) float32.

    Separable interpolation is two small matrix products, far faster than resizing per image.
    """
    g = grid.shape[1]
    pos = (pixel_centers(size) / size) * (g - 1)  # each pixel's position on the coarse grid
    lo = np.minimum(np.floor(pos).astype(np.int64), g - 2)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((size, g), dtype=np.float32)  # (H, g) interpolation matrix
    weights[np.arange(size), lo] = 1 - frac
    weights[np.arange(size), lo + 1] = frac
    return np.einsum("hi,nijc,wj->nhwc", weights, grid.astype(np.float32), weights)


def linear_gradient(
    start: np.ndarray, end: np.ndarray, angles: np.ndarray, size: int
) -> np.ndarray:
    """Blend colour ``start`` (n, 3) into ``end`` (n, 3) along direction ``angles`` (n,).

    Returns float32 (n, H, W, 3).
    """
    c = pixel_centers(size) / size - 0.5
    t = (
        np.cos(angles)[:, None, None] * c[None, None, :]
        + np.sin(angles)[:, None, None] * c[None, :, None]
    )  # (n, H, W), in [-0.71, 0.71]
    t = (np.clip(t / np.sqrt(2.0) + 0.5, 0, 1)).astype(np.float32)[..., None]  # (n, H, W, 1)
    return start[:, None, None, :] * (1 - t) + end[:, None, None, :] * t


def paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` (n, 3) over ``canvas`` (n, H, W, 3) in place with ``alpha`` (n, H, W)."""
    a = alpha[..., None]  # (n, H, W, 1)
    canvas *= 1 - a
    canvas += a * colour[:, None, None, :].astype(np.float32)


def sample_background(
    rng: np.random.Generator, m: int, size: int, kind: int | None = None
) -> np.ndarray:
    """Dull backgrounds: float32 (m, H, W, 3). ``kind`` 0 plain, 1 linear gradient, 2 blotchy
    noise (a random 4 x 4 colour grid, upsampled); ``None`` picks one per image.

    Greys of 0.05-0.55 with a slight tint keep saturated object colours visible on every kind.
    """

    def dull(*shape: int) -> np.ndarray:
        grey = rng.uniform(0.05, 0.55, (*shape, 1))
        return (grey + rng.uniform(-0.06, 0.06, (*shape, 3))).astype(np.float32)

    kinds = rng.integers(0, 3, m) if kind is None else np.full(m, kind)
    # Every kind's parameters are drawn for every image: the stream stays aligned across kinds.
    plain, start, end, grid = dull(m), dull(m), dull(m), dull(m, 4, 4)
    angles = rng.uniform(0, 2 * np.pi, m)
    canvas = np.empty((m, size, size, 3), dtype=np.float32)
    k = kinds == 0
    canvas[k] = plain[k, None, None, :]
    k = kinds == 1
    canvas[k] = linear_gradient(start[k], end[k], angles[k], size)
    k = kinds == 2
    canvas[k] = smooth_field(grid[k], size)
    return canvas


def add_clutter(
    rng: np.random.Generator, canvas: np.ndarray, max_strokes: int, palette: np.ndarray
) -> None:
    """Paint 0..``max_strokes`` thin strokes per image on ``canvas`` (m, H, W, 3), in place.

    Stroke colours are ``palette`` (K, 3) rows, jittered: distractors in the objects' colours.
    """
    m, size = len(canvas), canvas.shape[1]
    counts = rng.integers(0, max_strokes + 1, m)
    px, py = pixel_centers(size)[None, None, :], pixel_centers(size)[None, :, None]
    for j in range(max_strokes):
        a = rng.random((m, 2)) * size  # (m, 2) start points
        angle, length = rng.uniform(0, 2 * np.pi, m), rng.uniform(0.15, 0.45, m) * size
        b = a + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (m, 2)
        radius = rng.uniform(0.45, 0.9, m)
        rgb = palette[rng.integers(0, len(palette), m)] + rng.uniform(-0.1, 0.1, (m, 3))
        on = np.flatnonzero(counts > j)
        alpha = coverage(sd_segment(px, py, a[on], b[on], radius[on]))
        sub = canvas[on]  # fancy indexing copies: paint the copy, then write it back
        paint(sub, alpha, np.clip(rgb[on], 0, 1))
        canvas[on] = sub


def add_noise(rng: np.random.Generator, canvas: np.ndarray, std: float) -> np.ndarray:
    """Add Gaussian pixel noise of ``std`` to float images and quantize: uint8, same shape."""
    noise = rng.standard_normal(canvas.shape, dtype=np.float32)
    return to_uint8(canvas + np.float32(std) * noise)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any shape) to uint8 with rounding (values outside are clipped)."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
