"""The shapes world: determinism, label contracts, captions, scenes' boxes and masks."""

import numpy as np
import pytest
import torch

from vfm_course.data import (
    COLOUR_NAMES,
    COURSE_WORLD,
    SCENES_CONFIG,
    SHAPE_CLASSES,
    ShapesConfig,
    generate_scenes,
    generate_shapes,
    shape_alpha,
    size_word,
)


@pytest.fixture(scope="module")
def shapes():
    return generate_shapes(3000, seed=5)


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(80, seed=2)


def _same(a, b) -> bool:
    return (
        all(
            np.array_equal(getattr(a, f), getattr(b, f))
            for f in ("images", "labels", "colours", "sizes", "centers", "angles")
        )
        and a.captions == b.captions
    )


def test_same_seed_same_bits_other_seed_differs():
    a, b = generate_shapes(200, seed=3), generate_shapes(200, seed=3)
    c = generate_shapes(200, seed=4)
    assert _same(a, b)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)


def test_smaller_n_is_a_prefix_across_blocks():
    big, small = generate_shapes(600, seed=1), generate_shapes(300, seed=1)  # blocks of 256
    assert np.array_equal(big.images[:300], small.images)
    assert big.captions[:300] == small.captions
    scenes_big, scenes_small = generate_scenes(70, seed=1), generate_scenes(66, seed=1)
    assert np.array_equal(scenes_big.masks[:66], scenes_small.masks)


def test_contract(shapes):
    n, s = len(shapes), 32
    assert shapes.images.shape == (n, s, s, 3) and shapes.images.dtype == np.uint8
    for name in ("labels", "colours"):
        arr = getattr(shapes, name)
        assert arr.shape == (n,) and arr.dtype == np.int64
        assert arr.min() == 0 and arr.max() == 5
    lo, hi = ShapesConfig().size_range
    assert shapes.sizes.min() >= lo * s and shapes.sizes.max() <= hi * s
    assert shapes.centers.shape == (n, 2)
    assert shapes.centers.min() > 0 and shapes.centers.max() < s
    counts = np.bincount(shapes.labels, minlength=6)
    assert counts.min() > 0.8 * n / 6  # classes are balanced
    assert len(shapes.captions) == n


def test_captions_name_shape_colour_size_and_position(shapes):
    config = ShapesConfig()
    for i in range(0, len(shapes), 7):
        words = shapes.captions[i].replace(",", "").split()
        assert SHAPE_CLASSES[shapes.labels[i]] in words
        assert COLOUR_NAMES[shapes.colours[i]] in words
        assert size_word(float(shapes.sizes[i]), config) in words
        x, y = shapes.centers[i]
        assert ("left" in words) == (x < 0.4 * 32)
        assert ("right" in words) == (x > 0.6 * 32)
        assert ("top" in words) == (y < 0.4 * 32)
        assert ("bottom" in words) == (y > 0.6 * 32)
        assert ("center" in words) == (0.4 * 32 <= x <= 0.6 * 32 and 0.4 * 32 <= y <= 0.6 * 32)
    assert len({c.split()[0] for c in shapes.captions}) >= 3  # several templates in use


def test_colour_is_independent_of_shape(shapes):
    table = np.zeros((6, 6))
    np.add.at(table, (shapes.colours, shapes.labels), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 52.6  # 25 degrees of freedom, p = 0.001
    # Guessing each colour's most common shape is no better than chance.
    assert table.max(1).sum() / table.sum() < 0.25


@pytest.mark.parametrize("label", range(6))
def test_every_class_has_the_same_area_and_sits_on_its_centre(label):
    sizes = np.array([14.0, 20.0], dtype=np.float32)
    p = {
        "labels": np.full(2, label),
        "sizes": sizes,
        "angles": np.array([0.0, 1.0], dtype=np.float32),
        "aspects": np.ones(2, dtype=np.float32),
        "centers": np.full((2, 2), 64.0, dtype=np.float32),
    }
    alpha = shape_alpha(p, 128)
    area = alpha.sum(axis=(1, 2))
    np.testing.assert_allclose(area, np.pi * sizes**2, rtol=0.03)
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    for a in alpha:
        assert abs((a * xs).sum() / a.sum() - 64) < 0.5
        assert abs((a * ys).sum() / a.sum() - 64) < 0.5


def test_no_rotation_means_zero_angles():
    data = generate_shapes(20, ShapesConfig(rotate=False, background="plain", clutter=0))
    assert np.all(data.angles == 0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"image_size": 8}, "at least 16"),
        ({"size_range": (0.2, 0.1)}, "size_range"),
        ({"size_range": [0.1, 0.2]}, "tuple"),
        ({"background": "stripes"}, "background"),
        ({"noise_std": 2.0}, "noise_std"),
        ({"clutter": -1}, "clutter"),
        ({"rotate": "yes"}, "rotate"),
    ],
)
def test_bad_config_is_explained(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ShapesConfig(**kwargs)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        generate_shapes(0)
    with pytest.raises(ValueError, match="seed"):
        generate_shapes(3, seed=-1)
    with pytest.raises(TypeError, match="ShapesConfig"):
        generate_shapes(3, config={"image_size": 32})
    with pytest.raises(ValueError, match="max_objects"):
        generate_scenes(3, max_objects=9)


def test_scenes_contract_and_determinism(scenes):
    n, s = len(scenes), SCENES_CONFIG.image_size
    assert scenes.images.shape == (n, s, s, 3) and scenes.images.dtype == np.uint8
    assert scenes.masks.shape == (n, s, s) and scenes.masks.dtype == np.int64
    assert scenes.masks.min() == 0 and scenes.masks.max() <= 6
    counts = [len(k) for k in scenes.labels]
    assert min(counts) >= 1 and max(counts) == 4
    again = generate_scenes(80, seed=2)
    assert np.array_equal(again.images, scenes.images)
    assert np.array_equal(again.masks, scenes.masks)
    assert all(np.array_equal(a, b) for a, b in zip(again.boxes, scenes.boxes, strict=True))
    assert not np.array_equal(generate_scenes(80, seed=3).images, scenes.images)


def test_scene_boxes_and_masks_agree(scenes):
    for i in range(len(scenes)):
        boxes, labels, inst = scenes.boxes[i], scenes.labels[i], scenes.instance_masks[i]
        k = len(labels)
        assert boxes.shape == (k, 4) and boxes.dtype == np.float32
        assert inst.shape == (k, 64, 64) and inst.dtype == bool
        assert inst.sum(0).max() <= 1  # instances are disjoint (occlusion is resolved)
        semantic = (inst * (labels[:, None, None] + 1)).sum(0)
        assert np.array_equal(semantic, scenes.masks[i])
        for box, mask in zip(boxes, inst, strict=True):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            extent = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]  # pixel edges
            np.testing.assert_allclose(box, extent, atol=1.0)
            assert mask.sum() >= 4


def test_scene_objects_show_their_colour(scenes):
    # The visible pixels of an object are, on average, close to its palette colour.
    from vfm_course.data import COLOURS

    for i in range(10):
        for colour, mask in zip(scenes.colours[i], scenes.instance_masks[i], strict=True):
            mean = scenes.images[i][mask].mean(0)
            target = np.array(COLOURS[COLOUR_NAMES[colour]])
            assert np.abs(mean - target).max() < 60


def test_shape_masks_cover_each_image_s_own_shape() -> None:
    """The masks line up with the rendered images: the mask covers about the shape's area
    (pi r^2 for the equal-area radius r), the pixels under it differ from the image's plain
    background, and those outside it are the background."""
    from vfm_course.data import load_shape_masks, load_shapes, shape_masks

    data = generate_shapes(300, COURSE_WORLD, seed=3)
    masks = shape_masks(300, COURSE_WORLD, seed=3)
    assert masks.shape == (300, 32, 32) and masks.dtype == bool
    ratio = masks.sum(axis=(1, 2)) / (np.pi * data.sizes**2)
    assert np.all(np.abs(ratio - 1) < 0.2), ratio.min()
    img = data.images.astype(np.float64)
    diff = np.abs(img - img[:, :1, :1, :]).sum(axis=-1)  # distance to the corner's colour
    inside = np.array([diff[i][masks[i]].mean() for i in range(300)])
    outside = np.array([diff[i][~masks[i]].mean() for i in range(300)])
    assert inside.min() > 5 * outside.max()
    # Another image's mask does not fit: the masks are per image, not one shared template.
    assert (masks[0] != masks[1]).any()
    # The loader's masks belong to the loader's images (the split's seed) and do not depend on n.
    x, _ = load_shapes("test", 40, COURSE_WORLD, cache_dir=None)  # (40, 3, 32, 32) in [0, 1]
    m = load_shape_masks("test", 40, COURSE_WORLD)
    assert torch.equal(m, load_shape_masks("test", 300, COURSE_WORLD)[:40])
    d = (x - x[:, :, :1, :1]).abs().sum(dim=1)  # (40, 32, 32)
    assert min(d[i][m[i]].mean() for i in range(40)) > 5 * max(
        d[i][~m[i]].mean() for i in range(40)
    )
    with pytest.raises(ValueError, match="split"):
        load_shape_masks("val", 4, COURSE_WORLD)
