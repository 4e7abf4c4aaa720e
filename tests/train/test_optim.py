"""Layer-wise lr decay: scales equal to timm's, frozen parameters left out, usable in fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import images, labels, small_vit, trainable_names
from vfm_course.data import BatchLoader
from vfm_course.layers import apply_lora
from vfm_course.models import (
    to_timm,
)
from vfm_course.train import TrainConfig, fit, layer_decay_optimizer, layer_decay_param_groups


def lr_scales(groups: list[dict], model: nn.Module) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("pool", ["avg", "token"])
@pytest.mark.parametrize("decay", [0.75, 0.5, 1.0])
def test_layer_decay_matches_timm(pool: str, decay: float) -> None:
    from timm.optim import create_optimizer_v2

    model = small_vit(global_pool=pool)
    timm_model = to_timm(model)
    theirs = create_optimizer_v2(timm_model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=decay)
    want = lr_scales(theirs.param_groups, timm_model)
    groups = layer_decay_param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=decay)
    got = lr_scales(groups, model)
    assert got.keys() == want.keys()
    # timm groups the final `norm` (class-token pooling) with the last block; BEiT and MAE, which
    # this course follows, give it the head's full lr. With mean pooling there is no such norm.
    differ = {"norm.weight", "norm.bias"} if pool == "token" else set()
    for name in got.keys() - differ:
        assert got[name][0] == pytest.approx(want[name][0], rel=1e-12), name
        assert got[name][1] == want[name][1], name
    for name in differ:
        assert got[name] == (1.0, 0.0) and want[name] == (decay, 0.0)
    depth = len(model.blocks)
    assert got["blocks.0.attn.qkv.weight"][0] == pytest.approx(decay**depth)
    assert got["cls_token"][0] == pytest.approx(decay ** (depth + 1))
    assert all(g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) for g in groups)


def test_layer_decay_skips_frozen_parameters() -> None:
    model = apply_lora(small_vit(), r=2)
    groups = layer_decay_param_groups(model, lr=1e-3, layer_decay=0.5)
    scales = lr_scales(groups, model)
    assert scales.keys() == trainable_names(model)
    assert scales["blocks.2.attn.qkv.lora_A"] == (0.5, 0.05)
    assert scales["head.weight"] == (1.0, 0.05)


def test_layer_decay_plugs_into_fit() -> None:
    model = small_vit(depth=2)
    x, y = images(32), labels(32)
    optimizer = layer_decay_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    before = model.blocks[0].attn.qkv.weight.clone()

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    cfg = TrainConfig(steps=3, lr=123.0, warmup_steps=1, progress=False, device="cpu")
    history = fit(model, loss_fn, BatchLoader(x, y, 16), cfg, optimizer=optimizer)
    assert len(history.loss) == 1 and math.isfinite(history.loss[0])
    assert not torch.equal(model.blocks[0].attn.qkv.weight, before)
    for g in optimizer.param_groups:  # fit scaled each group's own lr, not cfg.lr
        assert g["initial_lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert g["lr"] / g["initial_lr"] == pytest.approx(
            optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"]
        )


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, True, "0.7"])
def test_layer_decay_bad_decay(decay: object) -> None:
    with pytest.raises(ValueError, match=r"layer_decay must be (in|a number in) \(0, 1\]"):
        layer_decay_param_groups(small_vit(), lr=1e-3, layer_decay=decay)


def test_layer_decay_bad_input() -> None:
    with pytest.raises(TypeError, match="needs a ViT"):
        layer_decay_param_groups(nn.Linear(2, 2), lr=1e-3)
    with pytest.raises(ValueError, match="learning rate"):
        layer_decay_param_groups(small_vit(), lr=0.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        layer_decay_param_groups(small_vit().requires_grad_(False), lr=1e-3)
