"""Multi-crop: two global views at full size, local views at their small size, every value in
[0, 1], each image's views cut from that image, and reproducible from a generator."""

from __future__ import annotations

import pytest
import torch

from vfm_course.data import AugmentConfig, MultiCropConfig, multi_crop


def test_shapes_ranges_and_order():
    x = torch.rand(5, 3, 32, 32)
    views = multi_crop(x, MultiCropConfig(n_local=3, local_size=16))
    assert [tuple(v.shape) for v in views] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)
    assert MultiCropConfig(n_local=3).n_crops == 5


def test_views_come_from_their_own_image():
    """Plain augmentations (no colour change) of images of constant, different colours: every
    view of image i is image i's colour."""
    plain = AugmentConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    cfg = MultiCropConfig(n_local=2, global_augment=plain, local_augment=plain)
    colours = torch.rand(4, 3, 1, 1)
    views = multi_crop(colours.expand(4, 3, 32, 32).contiguous(), cfg)
    for v in views:
        torch.testing.assert_close(v, colours.expand_as(v), atol=1e-5, rtol=0)


def test_local_views_are_small_crops():
    """A local view covers at most 40% of the area: of an image half black, half white
    (left/right), a global view is whole-image-like far more often than a local one."""
    x = torch.zeros(256, 3, 32, 32)
    x[..., 16:] = 1.0
    g = torch.Generator().manual_seed(0)
    plain = AugmentConfig(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    cfg = MultiCropConfig(
        n_local=1,
        global_augment=AugmentConfig(**{**plain.__dict__, "crop_scale": (0.4, 1.0)}),
        local_augment=AugmentConfig(**{**plain.__dict__, "crop_scale": (0.05, 0.4)}),
    )
    views = multi_crop(x, cfg, generator=g)
    mixed = [((v.mean((1, 2, 3)) > 0.1) & (v.mean((1, 2, 3)) < 0.9)).float().mean() for v in views]
    assert mixed[0] > mixed[2] and mixed[1] > mixed[2]


def test_same_generator_same_views():
    x = torch.rand(3, 3, 32, 32)
    a = multi_crop(x, generator=torch.Generator().manual_seed(1))
    b = multi_crop(x, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_config_checks():
    with pytest.raises(ValueError, match="n_global"):
        MultiCropConfig(n_global=1)
    with pytest.raises(ValueError, match="n_local"):
        MultiCropConfig(n_local=-1)
    with pytest.raises(ValueError, match="local_size"):
        multi_crop(torch.rand(2, 3, 8, 8), MultiCropConfig(local_size=16))
