"""DINO's model: the head's weight-normalised last layer, the teacher as an EMA copy of the
student with its cosine momentum schedule, multi-size views through one backbone, and the
checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from vfm_course.data import MultiCropConfig
from vfm_course.models import (
    DINO,
    DINO_PRESETS,
    DINOConfig,
    DINOHead,
    build_model,
    encode_views,
    teacher_momentum,
    vit_config,
)
from vfm_course.models.classifier import backbone
from vfm_course.train.checkpoint import load_weights, read_checkpoint, save_checkpoint


def tiny_cfg(**overrides) -> DINOConfig:
    encoder = vit_config("vit_course_tiny", num_classes=0, patch_size=8, depth=1, embed_dim=24)
    return DINOConfig(
        encoder=encoder, out_dim=16, hidden_dim=32, crops=MultiCropConfig(n_local=2), **overrides
    )


def test_head_last_layer_rows_have_unit_norm_and_the_norm_is_frozen():
    torch.manual_seed(0)
    head = DINOHead(32, 20, hidden_dim=24, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(torch.rand(20, 1) * 10)  # rescaling v changes nothing
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))
    assert not head.last_layer.weight_g.requires_grad
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 20)
    assert out.abs().max() <= 1 + 1e-5  # each logit is a cosine: unit input, unit rows
    names = {n for n, _ in head.named_parameters()}
    assert names == {
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
        "last_layer.weight_g", "last_layer.weight_v",
    }  # fmt: skip
    trainable = DINOHead(32, 20, norm_last_layer=False).last_layer.weight_g
    assert trainable.requires_grad


def test_momentum_schedule_is_a_half_cosine_from_base_to_one():
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)
    values = [teacher_momentum(s, 100, 0.9) for s in range(101)]
    assert values == sorted(values)
    assert teacher_momentum(25, 100, 0.9) == pytest.approx(
        1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2
    )


def test_teacher_starts_as_the_student_and_follows_it_by_ema():
    torch.manual_seed(0)
    model = DINO(tiny_cfg())
    pairs = zip(model.teacher.named_parameters(), model.student.parameters(), strict=True)
    for (name, t), s in pairs:
        assert torch.equal(t, s) and not t.requires_grad
        assert s.requires_grad == (name != "head.last_layer.weight_g")  # the frozen norm
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    for t0, t, s in zip(
        before, model.teacher.parameters(), model.student.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)
    model.update_teacher(1.0)  # momentum 1: the teacher stays where it is
    with pytest.raises(ValueError, match="momentum"):
        model.update_teacher(1.5)


def test_gradient_reaches_the_student_only():
    torch.manual_seed(0)
    model = DINO(tiny_cfg())
    views = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32), torch.rand(3, 3, 16, 16)]
    loss = model(views).sum() + model.forward_teacher(views[:2]).sum()
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.backbone.patch_embed.proj.weight.grad is not None


def test_views_of_two_sizes_go_through_one_backbone():
    torch.manual_seed(0)
    model = DINO(tiny_cfg())
    big = torch.rand(2, 3, 32, 32)
    small = torch.rand(2, 3, 16, 16)
    out = encode_views(model.student.backbone, [big, big, small])
    assert out.shape == (6, 24)
    torch.testing.assert_close(out[:2], model.student.backbone(big))  # the usual forward
    assert model([big, big, small]).shape == (6, 16)
    with pytest.raises(ValueError, match="divisible"):
        encode_views(model.student.backbone, [torch.rand(2, 3, 12, 12)])


def test_encoder_is_the_teacher_backbone_and_a_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = DINO(tiny_cfg())
    assert backbone(model) is model.teacher.backbone
    with torch.no_grad():
        model.center.fill_(0.5)
    path = tmp_path / "dino.safetensors"
    save_checkpoint(path, model, model.cfg)
    ckpt = read_checkpoint(path)
    rebuilt = build_model(ckpt["config"])
    load_weights(rebuilt, ckpt["model"], str(path))
    assert rebuilt.cfg == model.cfg
    assert torch.equal(rebuilt.center, model.center)


def test_presets_and_config_checks():
    assert DINO_PRESETS["dino_course_tiny"].encoder.patch_size == 8
    assert not DINO_PRESETS["dino_course_tiny_no_center"].centering
    no_sharpen = DINO_PRESETS["dino_course_tiny_no_sharpen"]
    assert no_sharpen.teacher_temp == no_sharpen.student_temp
    with pytest.raises(ValueError, match="num_classes=0"):
        DINOConfig(encoder=vit_config("vit_course_tiny"))
    with pytest.raises(ValueError, match="center_momentum"):
        tiny_cfg(center_momentum=1.5)


def test_head_with_batchnorm_standardises_hidden_units_over_the_batch():
    torch.manual_seed(0)
    head = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6, use_bn=True)
    assert [type(m).__name__ for m in head.mlp] == [
        "Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear",
    ]  # fmt: skip
    # Inputs that differ only by a tiny amount around a common vector still give clearly
    # different outputs: the BatchNorm removes what the images share.
    x = torch.randn(1, 16) + 1e-3 * torch.randn(8, 16)
    plain = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6)
    assert head(x).std(dim=0).mean() > 10 * plain(x).std(dim=0).mean()
