"""Segmentation from class-token attention: the top-mass threshold keeps the smallest set of
patches holding the asked share, IoU is the Jaccard index, and an attention that falls on the
object scores higher than one that falls beside it."""

from __future__ import annotations

import pytest
import torch

import vfm_course.eval.attention_masks as am
from tests.helpers import small_vit
from vfm_course.eval import (
    attention_iou,
    attention_on_object,
    attention_scores,
    cls_attention,
    mask_iou,
    patch_mask_to_pixels,
    top_mass_mask,
)


def test_top_mass_keeps_the_smallest_set_reaching_the_mass():
    attn = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    keep = top_mass_mask(attn, 0.6)
    # Row 0: 0.5 alone is below 0.6, 0.5 + 0.3 reaches it. Row 1: three quarters are needed.
    assert keep[0].tolist() == [True, False, True, False]
    assert keep[1].sum() == 3
    assert top_mass_mask(attn, 1.0).all()
    # Unnormalised rows (the class token's own share left out) are scaled first.
    assert torch.equal(top_mass_mask(attn * 0.3, 0.6), keep)
    with pytest.raises(ValueError, match="mass"):
        top_mass_mask(attn, 0.0)


def test_mask_iou_and_pixel_masks():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b).item() == pytest.approx(4 / 12)
    assert mask_iou(b & False, b & False).item() == 1.0
    pixels = patch_mask_to_pixels(torch.tensor([[True, False, False, True]]), (2, 2), 4)
    assert pixels[0].tolist() == [[True, True, False, False]] * 2 + [[False, False, True, True]] * 2
    with pytest.raises(TypeError, match="bool"):
        mask_iou(a.float(), b)


def test_cls_attention_rows_are_the_class_token_over_the_patches():
    vit = small_vit(num_classes=0)
    x = torch.rand(2, 3, 32, 32)
    attn = cls_attention(vit, x)
    assert attn.shape == (2, 3, 64)
    full = vit.get_attention_maps(x)[-1]
    torch.testing.assert_close(attn, full[:, :, 0, 1:])


def test_attention_on_the_object_scores_higher_than_beside_it(monkeypatch):
    vit = small_vit(num_classes=0, patch_size=8)  # a 4x4 grid
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True  # the object fills the top-left 2x2 patches
    on = torch.zeros(1, 3, 16)
    on[..., [0, 1, 4, 5]] = 1.0
    off = torch.zeros(1, 3, 16)
    off[..., [10, 11, 14, 15]] = 1.0

    scores = {}
    for name, attn in (("on", on), ("off", off)):
        monkeypatch.setattr(am, "cls_attention", lambda m, x, a=attn: a)
        scores[name] = attention_iou(vit, torch.rand(1, 3, 32, 32), masks)
    # Even attention over the object's 4 patches: 60% of the mass is 3 of them, IoU 3 / 4.
    assert scores["on"]["iou_mean_attention"] == pytest.approx(0.75)
    assert scores["on"]["iou_best_head"] == pytest.approx(0.75)
    assert scores["off"]["iou_mean_attention"] == pytest.approx(0.0)
    assert scores["on"]["iou_all_patches"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="masks"):
        attention_iou(vit, torch.rand(2, 3, 32, 32), masks)


def test_attention_on_object_weighs_patches_by_their_coverage(monkeypatch):
    vit = small_vit(num_classes=0, patch_size=8)  # a 4x4 grid
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, :8, :12] = True  # patch 0 whole, patch 1 half: 1.5 patches of 16
    uniform = torch.full((2, 3, 16), 0.05)  # unnormalised rows (the CLS share left out)
    focused = torch.zeros(2, 3, 16)
    focused[:, 0, 0] = 1.0  # head 0 on the fully covered patch
    focused[:, 1:, 1] = 1.0  # heads 1 and 2 on the half-covered one
    scores = {}
    for name, attn in (("uniform", uniform), ("focused", focused)):
        monkeypatch.setattr(am, "cls_attention", lambda m, x, a=attn: a)
        scores[name] = attention_on_object(vit, torch.rand(2, 3, 32, 32), masks)
    assert scores["uniform"]["object_area"] == pytest.approx(1.5 / 16)
    assert scores["uniform"]["lift"] == pytest.approx(1.0)
    # Heads averaged: (1 + 0.5 + 0.5) / 3 of the mass on the object; the best head has all of it.
    assert scores["focused"]["object_mass"] == pytest.approx(2 / 3)
    assert scores["focused"]["lift"] == pytest.approx((2 / 3) / (1.5 / 16))
    assert scores["focused"]["lift_best_head"] == pytest.approx(16 / 1.5)
    with pytest.raises(TypeError, match="bool"):
        attention_on_object(vit, torch.rand(2, 3, 32, 32), masks.float())


def test_attention_scores_are_both_scores_from_one_pass(monkeypatch):
    vit = small_vit(num_classes=0, patch_size=8)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.7
    expected = {**attention_iou(vit, x, masks, mass=0.5), **attention_on_object(vit, x, masks)}
    calls = []
    real = am.cls_attention
    monkeypatch.setattr(am, "cls_attention", lambda m, i: calls.append(1) or real(m, i))
    assert attention_scores(vit, x, masks, mass=0.5) == pytest.approx(expected)
    assert len(calls) == 1
