"""LoRA: equal to the base layer at init, base plus the scaled low-rank update after, equal to
peft, and mergeable."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import K, images, labels, randomise_lora_B, small_vit, trainable_names
from vfm_course.data import BatchLoader
from vfm_course.layers import LoRALinear, apply_lora, lora_layers, merge_lora, unmerge_lora
from vfm_course.models import (
    count_trainable,
)
from vfm_course.train import TrainConfig, fit


def test_lora_linear_starts_at_the_base_layer() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    lora = LoRALinear(copy.deepcopy(base), r=2, alpha=4.0)
    x = torch.randn(3, 7, 8)
    assert torch.equal(lora(x), base(x))
    assert lora.scaling == 2.0 and lora.lora_A.shape == (2, 8) and lora.lora_B.shape == (5, 2)
    assert lora.lora_A.abs().sum() > 0 and lora.lora_B.abs().sum() == 0
    assert not any(p.requires_grad for p in lora.base_layer.parameters())


def test_lora_linear_is_base_plus_low_rank_update() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    lora = LoRALinear(copy.deepcopy(base), r=3, alpha=6.0)
    nn.init.normal_(lora.lora_B)
    x = torch.randn(4, 8)
    want = base(x) + (6.0 / 3) * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), want)
    assert torch.linalg.matrix_rank(lora.delta_weight().detach()) == 3


def test_lora_at_init_equals_the_base_model() -> None:
    model = small_vit().eval()
    base = copy.deepcopy(model)
    apply_lora(model, ("qkv", "proj", "fc1", "fc2"), r=4, alpha=8.0)
    x = images()
    assert torch.equal(model(x), base(x))


def test_lora_merged_and_unmerged_agree() -> None:
    model = apply_lora(small_vit().eval(), ("qkv", "proj", "fc1"), r=4, alpha=8.0, dropout=0.1)
    randomise_lora_B(model)
    qkv = model.blocks[0].attn.qkv.base_layer.weight.clone()
    x = images()
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        assert all(layer.merged for layer in lora_layers(model).values())
        merged = model(x)
        unmerge_lora(model)
        again = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.blocks[0].attn.qkv.base_layer.weight, qkv)
    assert not torch.equal(unmerged, small_vit().eval()(x))  # the adapters did change the output


def test_lora_merge_twice_and_unmerge_unmerged_are_refused() -> None:
    model = apply_lora(small_vit(), r=2)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    with pytest.raises(RuntimeError, match="not merged"):
        model.blocks[0].attn.qkv.unmerge()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(small_vit())


@pytest.mark.parametrize("targets", [("qkv",), ("qkv", "proj"), ("qkv", "proj", "fc1", "fc2")])
def test_lora_parameter_count_and_gradients(targets: tuple[str, ...]) -> None:
    r = 4
    model = apply_lora(small_vit(), targets, r=r)
    D, F_ = model.embed_dim, int(model.embed_dim * 4.0)
    shapes = {"qkv": (D, 3 * D), "proj": (D, D), "fc1": (D, F_), "fc2": (F_, D)}
    per_block = sum(r * (i + o) for t, (i, o) in shapes.items() if t in targets)
    head = D * K + K
    assert count_trainable(model) == len(model.blocks) * per_block + head
    assert len(lora_layers(model)) == len(model.blocks) * len(targets)
    randomise_lora_B(model)  # with B = 0, A would get no gradient at the first step
    F.cross_entropy(model(images()), labels()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)
    assert all(n.endswith((".lora_A", ".lora_B")) or n.startswith("head.") for n in with_grad)


@pytest.mark.parametrize(
    ("targets", "pattern"),
    [
        (("qkv", "proj"), r".*\.attn\.(qkv|proj)"),
        (("qkv", "proj", "fc1", "fc2"), r"blocks\..*\.(qkv|proj|fc1|fc2)"),
    ],
)
def test_lora_matches_peft(targets: tuple[str, ...], pattern: str) -> None:
    """Same base weights, same A and B (B non-zero) -> the same logits as peft's LoRA.

    The pattern keeps peft off ``patch_embed.proj``, a convolution that the course never adapts.
    """
    peft = pytest.importorskip("peft")
    base = small_vit().eval()
    ours = apply_lora(copy.deepcopy(base), targets, r=4, alpha=8.0)
    randomise_lora_B(ours)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=pattern, lora_dropout=0.0)
    theirs = peft.get_peft_model(copy.deepcopy(base), config).eval()
    inner = theirs.base_model.model
    for name, layer in lora_layers(ours).items():
        ref = inner.get_submodule(name)
        assert ref.scaling["default"] == layer.scaling
        with torch.no_grad():
            ref.lora_A["default"].weight.copy_(layer.lora_A)
            ref.lora_B["default"].weight.copy_(layer.lora_B)
    adapted = {
        n.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        for n, _ in theirs.named_parameters()
        if ".lora_A." in n
    }
    assert adapted == set(lora_layers(ours))
    x = images(8)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert (got - want).abs().max() <= 1e-5
    with torch.no_grad():
        merge_lora(ours)
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)


def test_lora_bad_input() -> None:
    with pytest.raises(ValueError, match="rank r must be a positive integer"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match="rank r"):
        apply_lora(small_vit(), r=-2)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(4, 4), dropout=1.0)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv2d(3, 3, 1))
    with pytest.raises(
        ValueError, match=r"no linear layer named \['qvk'\].*fc1, fc2, head, proj, qkv"
    ):
        apply_lora(small_vit(), ("qvk",))
    with pytest.raises(ValueError, match="non-empty list"):
        apply_lora(small_vit(), "qkv")
    with pytest.raises(ValueError, match="match no parameter"):
        apply_lora(small_vit(), trainable=("heads",))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(apply_lora(small_vit()))


def test_lora_trains_in_fit_and_leaves_the_base_weights() -> None:
    model = apply_lora(small_vit(depth=1), ("qkv", "proj"), r=2)
    base = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    cfg = TrainConfig(steps=3, lr=1e-2, progress=False, device="cpu")
    fit(model, loss_fn, BatchLoader(images(16), labels(16), 8), cfg)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in base.items())
    assert all(not torch.equal(params[n], v) for n, v in adapters.items())
