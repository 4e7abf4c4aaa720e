from __future__ import annotations

import pytest
import torch

from vfm_course.data import COURSE_WORLD, generate_shapes, images_to_tensor
from vfm_course.eval import PATCH_KINDS, patch_kinds

BG, IN, EDGE = (PATCH_KINDS.index(k) for k in ("background", "interior", "edge"))


def test_patch_kinds_on_a_drawn_image() -> None:
    """An 8x8 image of 2x2 patches: a flat tinted background, a square filling patch (1, 1)
    exactly, and one pixel of the square's colour poking into patch (1, 2)."""
    img = torch.empty(1, 3, 8, 8)
    img[:] = torch.tensor([0.30, 0.32, 0.28])[None, :, None, None]  # tinted: channels differ
    img[0, :, 2:4, 2:4] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[0, :, 2, 4] = torch.tensor([0.9, 0.1, 0.1])
    kinds = patch_kinds(img, 2).reshape(4, 4)
    expected = torch.full((4, 4), BG)
    expected[1, 1] = IN
    expected[1, 2] = EDGE
    assert torch.equal(kinds, expected)


def test_patch_kinds_on_the_course_world_agrees_with_the_shapes_records() -> None:
    """Every image has background patches, and the patches that are not background cover the
    shape's centre: the kinds follow the generator's records, not a threshold."""
    data = generate_shapes(64, COURSE_WORLD, seed=3)
    kinds = patch_kinds(images_to_tensor(data.images), 4)  # (64, 64)
    assert kinds.shape == (64, 64)
    assert (kinds == BG).any(1).all() and (kinds == EDGE).any(1).all()
    centre = torch.as_tensor(data.centers).long() // 4  # (64, 2) patch column, row
    at_centre = kinds[torch.arange(64), centre[:, 1] * 8 + centre[:, 0]]
    assert (at_centre != BG).all()


def test_patch_kinds_refuses_a_background_that_is_not_plain() -> None:
    img = torch.zeros(2, 3, 8, 8)
    img[1, 0, -1, -1] = 0.5
    with pytest.raises(ValueError, match=r"plain backgrounds .* images \[1\]"):
        patch_kinds(img, 2)
