"""DINO's objective: the multi-crop cross-entropy equals the reference formula, centering is an
EMA of batch means, the collapse measures tell the two collapses apart, and the loss_fn trains
a DINO model through the one engine with its teacher moved only by the EMA hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vfm_course.data import BatchLoader, MultiCropConfig
from vfm_course.models import DINO, DINOConfig, vit_config
from vfm_course.objectives import (
    collapse_stats,
    dino_after_step,
    dino_cross_entropy,
    dino_loss_fn,
    koleo_loss,
    max_entropy,
    teacher_targets,
    update_center,
)
from vfm_course.train import TrainConfig, fit


def reference_dino_loss(student_output, teacher_output, center, ncrops, s_temp, t_temp):
    """The formula of DINOLoss.forward in facebookresearch/dino (main_dino.py), restated
    without the package: chunk the student by crop, softmax the centred teacher at its
    temperature, sum -q * log_softmax(s) over every pair of different crops, mean over pairs."""
    student_out = (student_output / s_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / t_temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


def tiny_dino(**overrides) -> DINO:
    torch.manual_seed(0)
    encoder = vit_config("vit_course_tiny", num_classes=0, patch_size=8, depth=1, embed_dim=24)
    crops = MultiCropConfig(n_local=2)
    return DINO(DINOConfig(encoder=encoder, out_dim=16, hidden_dim=32, crops=crops, **overrides))


@pytest.mark.parametrize("n_local", [0, 1, 4])
def test_cross_entropy_equals_the_reference_on_shared_inputs(n_local):
    g = torch.Generator().manual_seed(n_local)
    B, K, V = 5, 12, 2 + n_local
    student = torch.randn(V * B, K, generator=g) * 3
    teacher = torch.randn(2 * B, K, generator=g) * 3
    center = torch.randn(1, K, generator=g)
    ours = dino_cross_entropy(student, teacher_targets(teacher, center, 0.04), 0.1, n_global=2)
    ref = reference_dino_loss(student, teacher, center, V, 0.1, 0.04)
    torch.testing.assert_close(ours, ref)


def test_cross_entropy_skips_only_the_same_view_pairs():
    """2 global + 1 local view: the four pairs written out, (0, 0) and (1, 1) left out."""
    B, K = 3, 4
    student = torch.randn(3 * B, K)
    q = torch.softmax(torch.randn(2 * B, K), -1)
    log_p = F.log_softmax(student / 0.1, -1).view(3, B, K)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = sum((-q.view(2, B, K)[a] * log_p[v]).sum(-1).mean() for a, v in pairs) / 4
    torch.testing.assert_close(dino_cross_entropy(student, q, 0.1, 2), expected)


def test_cross_entropy_checks_its_shapes():
    with pytest.raises(ValueError, match="n_global"):
        dino_cross_entropy(torch.randn(8, 4), torch.softmax(torch.randn(3, 4), -1), 0.1, 2)
    with pytest.raises(ValueError, match="multiple"):
        dino_cross_entropy(torch.randn(7, 4), torch.softmax(torch.randn(4, 4), -1), 0.1, 2)


def test_centering_is_an_ema_of_batch_means_and_sharpening_lowers_entropy():
    center = torch.full((1, 3), 2.0)
    out = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    update_center(center, out, 0.9)
    torch.testing.assert_close(center, 0.9 * 2.0 + 0.1 * torch.tensor([[2.0, 3.0, 4.0]]))
    # Centring removes what every image shares: a shift common to all rows changes nothing.
    logits = torch.randn(6, 5)
    common = torch.randn(1, 5)
    torch.testing.assert_close(
        teacher_targets(logits + common, common, 0.1),
        teacher_targets(logits, torch.zeros(1, 5), 0.1),
    )
    # A lower teacher temperature gives peakier targets.
    cool = collapse_stats(teacher_targets(logits, torch.zeros(1, 5), 0.04))["entropy"]
    warm = collapse_stats(teacher_targets(logits, torch.zeros(1, 5), 1.0))["entropy"]
    assert cool < warm


def test_collapse_stats_tell_the_two_collapses_apart():
    K = 8
    uniform = torch.full((16, K), 1.0 / K)
    one_dim = F.one_hot(torch.zeros(16, dtype=torch.long), K).float()
    healthy = F.one_hot(torch.arange(16) % K, K).float()
    u, o, h = collapse_stats(uniform), collapse_stats(one_dim), collapse_stats(healthy)
    assert u["entropy"] == pytest.approx(math.log(K)) and u["dim_std"] == pytest.approx(0)
    assert o["entropy"] == pytest.approx(0, abs=1e-6) and o["dim_std"] == pytest.approx(0)
    assert h["entropy"] == pytest.approx(0, abs=1e-6) and h["dim_std"] > 0.3
    assert max_entropy(K) == pytest.approx(math.log(K))


def test_loss_fn_trains_through_fit_and_the_teacher_moves_only_by_ema():
    model = tiny_dino(momentum_teacher=0.5)
    teacher0 = [p.clone() for p in model.teacher.parameters()]
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loader = BatchLoader(x, torch.zeros(32, dtype=torch.long), 8, shuffle=True, seed=0)
    cfg = TrainConfig(steps=3, progress=False, log_every=1)
    history = fit(model, dino_loss_fn(), loader, cfg, after_step=dino_after_step(3))
    assert len(history.loss) == 3 and all(math.isfinite(v) for v in history.loss)
    assert set(history.logs) == {"entropy", "dim_std"}
    assert model.center.abs().sum() > 0  # the centre moved away from its zero start
    moved = [
        not torch.equal(a, b) for a, b in zip(teacher0, model.teacher.parameters(), strict=True)
    ]
    assert any(moved)
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_loss_fn_gives_the_teacher_no_gradient_and_leaves_the_centre_alone_without_centering():
    model = tiny_dino(centering=False)
    x = torch.rand(4, 3, 32, 32)
    loss, logs = dino_loss_fn()(model, x)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None for p in model.student.parameters())
    assert torch.equal(model.center, torch.zeros_like(model.center))
    assert 0 <= logs["entropy"] <= max_entropy(16) + 1e-6


def test_loss_fn_refuses_a_model_without_a_dino_config():
    with pytest.raises(TypeError, match="DINOConfig"):
        dino_loss_fn()(torch.nn.Linear(2, 2), torch.rand(2, 3, 32, 32))


def test_koleo_is_minus_the_mean_log_nearest_neighbour_distance_on_the_sphere():
    # Orthogonal unit vectors are sqrt(2) apart; the scale of a row does not matter.
    eye = torch.eye(4) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    assert koleo_loss(eye).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    # Row 2 is opposite row 0 (2 apart), so every row's nearest neighbour is sqrt(2) away.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = torch.tensor([math.sqrt(2), math.sqrt(2), math.sqrt(2)])
    assert koleo_loss(x).item() == pytest.approx(-torch.log(d).mean().item(), abs=1e-6)
    # Nearly collapsed features cost far more than spread ones.
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(16, 8, generator=g)
    collapsed = torch.ones(16, 8) + 1e-3 * torch.randn(16, 8, generator=g)
    assert koleo_loss(collapsed) > koleo_loss(spread) + 3
    with pytest.raises(ValueError, match="at least 2 rows"):
        koleo_loss(torch.rand(1, 8))


def test_loss_fn_with_koleo_adds_it_to_the_dino_loss_and_logs_it():
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    plain_loss, plain_logs = dino_loss_fn()(tiny_dino(), x)
    torch.manual_seed(1)
    model = tiny_dino(koleo_weight=0.5)
    loss, logs = dino_loss_fn()(model, x)
    assert "koleo" not in plain_logs and math.isfinite(logs["koleo"])
    # Same seed, same views and weights: the difference is the weighted KoLeo term.
    assert loss.item() == pytest.approx(plain_loss.item() + 0.5 * logs["koleo"], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.backbone.cls_token.grad is not None
    with pytest.raises(ValueError, match="koleo_weight"):
        tiny_dino(koleo_weight=-1.0)
