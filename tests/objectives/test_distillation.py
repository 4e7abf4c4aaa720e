"""Distillation loss: equal to Hinton et al.'s formula written out, no gradient to the teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import K, images, labels, small_vit
from vfm_course.data import BatchLoader
from vfm_course.objectives import (
    distillation_loss,
    distillation_loss_fn,
)
from vfm_course.train import TrainConfig, fit


def reference_kd(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float):
    """Hinton et al. 2015 written out row by row, in float64."""
    s, t = s.double(), t.double()
    total_kl, total_ce = 0.0, 0.0
    for i in range(len(s)):
        p = torch.exp(t[i] / T) / torch.exp(t[i] / T).sum()
        q = torch.exp(s[i] / T) / torch.exp(s[i] / T).sum()
        total_kl += sum(p[k] * math.log(p[k] / q[k]) for k in range(len(p)))
        total_ce += -math.log(torch.exp(s[i, y[i]]) / torch.exp(s[i]).sum())
    n = len(s)
    return alpha * T**2 * total_kl / n + (1 - alpha) * total_ce / n


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_distillation_loss_matches_references(T: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(int(T * 10 + alpha * 100))
    s, t = torch.randn(16, 7, generator=g) * 3, torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    got = distillation_loss(s, t, y, T, alpha)
    assert got.ndim == 0
    assert got.item() == pytest.approx(float(reference_kd(s, t, y, T, alpha)), rel=1e-5, abs=1e-6)
    # torch's kl_div(input=log q, target=p) computes KL(p || q).
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    want = alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(got, want)


def test_distillation_gradient_skips_the_teacher() -> None:
    s = torch.randn(4, K, requires_grad=True)
    t = torch.randn(4, K, requires_grad=True)
    distillation_loss(s, t, labels(), 3.0, 0.7).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    # Equal logits and alpha = 1: the student already matches, the gradient is zero.
    s2 = t.detach().clone().requires_grad_(True)
    distillation_loss(s2, t, labels(), 3.0, 1.0).backward()
    assert s2.grad.abs().max() < 1e-6


def test_distillation_bad_input() -> None:
    s, t, y = torch.randn(4, K), torch.randn(4, K), labels()
    for T in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            distillation_loss(s, t, y, temperature=T)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
            distillation_loss(s, t, y, alpha=a)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, torch.randn(4, K + 1), y)
    with pytest.raises(ValueError, match="4 images/logits but 3 labels"):
        distillation_loss(s, t, y[:3])
    with pytest.raises(TypeError, match="integer class ids"):
        distillation_loss(s, t, y.float())
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss_fn(small_vit(), temperature=0)


def test_distillation_loss_fn_trains_student_only() -> None:
    teacher, student = small_vit(seed=1, depth=1), small_vit(seed=2, depth=1)
    teacher.train()
    frozen = copy.deepcopy(teacher.state_dict())
    x, y = images(16), labels(16)
    loss_fn = distillation_loss_fn(teacher, temperature=2.0, alpha=0.5)
    cfg = TrainConfig(steps=2, progress=False, device="cpu")
    fit(student, loss_fn, BatchLoader(x, y, 8), cfg)
    assert not teacher.training
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
