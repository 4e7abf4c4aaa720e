"""A classifier from an encoder and the freezing helpers (probe, partial, full)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import K, images, labels, small_vit, trainable_names
from vfm_course.models import (
    classifier_from_encoder,
    count_trainable,
    train_all,
    train_head_only,
    train_last_blocks,
)


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_classifier_keeps_encoder_weights_and_pooling(pool: str) -> None:
    encoder = small_vit(num_classes=0, global_pool=pool).eval()
    before = copy.deepcopy(encoder.state_dict())
    model = classifier_from_encoder(encoder, K)
    x = images()
    assert model(x).shape == (4, K)
    assert model.cfg.global_pool == pool
    torch.testing.assert_close(
        model.forward_head(model.forward_features(x), pre_logits=True), encoder(x)
    )
    for k, v in encoder.state_dict().items():  # the encoder is copied, not changed
        assert torch.equal(v, before[k])
    assert not model.training


def test_classifier_replaces_an_existing_head() -> None:
    encoder = small_vit(num_classes=10)
    model = classifier_from_encoder(encoder, 3)
    assert model.head.weight.shape == (3, encoder.embed_dim)
    assert torch.equal(model.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)


def test_classifier_bad_input() -> None:
    with pytest.raises(TypeError, match="course VisionTransformer"):
        classifier_from_encoder(nn.Linear(3, 3), K)
    with pytest.raises(ValueError, match="num_classes"):
        classifier_from_encoder(small_vit(), 0)


def test_freezing_helpers_choose_the_right_parameters() -> None:
    model = small_vit()
    D = model.embed_dim
    train_head_only(model)
    assert trainable_names(model) == {"head.weight", "head.bias"}
    assert count_trainable(model) == D * K + K
    train_last_blocks(model, 2)
    names = trainable_names(model)
    assert {n.split(".")[1] for n in names if n.startswith("blocks.")} == {"1", "2"}
    assert {"norm.weight", "norm.bias", "head.weight", "head.bias"} <= names
    assert not any(n.startswith(("patch_embed", "cls_token", "pos_embed")) for n in names)
    per_block = sum(p.numel() for p in model.blocks[0].parameters())
    assert count_trainable(model) == 2 * per_block + 2 * D + D * K + K
    train_last_blocks(model, 0)
    assert trainable_names(model) == {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    train_all(model)
    assert count_trainable(model) == model.num_params()
    # Only what trains gets gradients.
    train_last_blocks(model, 1)
    F.cross_entropy(model(images()), labels()).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == trainable_names(model)


def test_full_fine_tuning_keeps_a_sincos_table_fixed() -> None:
    model = train_all(small_vit(pos_embed="sincos"))
    assert not model.pos_embed.requires_grad
    assert count_trainable(model) == model.num_params() - model.pos_embed.numel()


@pytest.mark.parametrize("k", [-1, 4, 2.0, True])
def test_partial_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="from 0 to the model's depth 3"):
        train_last_blocks(small_vit(), k)


def test_freezing_helpers_bad_input() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        train_head_only(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        count_trainable("model")
