"""FGSM and PGD: the signed-gradient step, the epsilon ball, eval mode restored; adversarial
training."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import K, images, labels
from vfm_course.core import eval_mode
from vfm_course.data import COURSE_WORLD, BatchLoader, load_shapes
from vfm_course.models import (
    SmallCNN,
)
from vfm_course.objectives import (
    adversarial_loss_fn,
    fgsm,
    pgd,
    robust_accuracy,
)
from vfm_course.train import TrainConfig, fit


@pytest.fixture(scope="module")
def shapes_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for about two seconds on the pretraining shapes world (test
    accuracy 1.0 when measured; it has BatchNorm, so eval mode matters)."""
    x, y = load_shapes("train", 1500, COURSE_WORLD, cache_dir=None)
    x_test, y_test = load_shapes("test", 300, COURSE_WORLD, cache_dir=None)
    torch.manual_seed(0)
    model = SmallCNN(width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x_test, y_test


def test_shapes_images_are_in_the_attack_bounds() -> None:
    x, _ = load_shapes("test", 50, cache_dir=None)  # the hard default world
    assert x.min() >= 0 and x.max() <= 1


def test_fgsm_is_the_signed_gradient_step(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:64], y[:64]
    eps = 0.03
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    want = (x + eps * xr.grad.sign()).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    adv = fgsm(model, x, y, eps)
    torch.testing.assert_close(adv, want, atol=0, rtol=0)
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= eps + 1e-6


def test_pgd_stays_in_the_ball_and_the_valid_range(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:64], y[:64]
    for eps, steps in [(0.02, 5), (0.1, 10), (0.5, 3)]:
        adv = pgd(model, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > 0
    unbounded = pgd(model, x, y, 0.5, steps=3, bounds=None)
    assert unbounded.min() < 0 or unbounded.max() > 1  # only the ball, no clamp


def test_zero_epsilon_returns_the_input(shapes_model) -> None:
    model, x, y = shapes_model
    assert torch.equal(fgsm(model, x[:8], y[:8], 0.0), x[:8])
    assert torch.equal(pgd(model, x[:8], y[:8], 0.0), x[:8])
    assert torch.equal(pgd(model, x[:8], y[:8], 0, random_start=False), x[:8])


def test_pgd_is_at_least_as_strong_as_fgsm(shapes_model) -> None:
    model, x, y = shapes_model
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255]
    clean = robust_accuracy(model, x, y, [0.0], attack="fgsm")[0.0]
    fg = robust_accuracy(model, x, y, eps, attack="fgsm")
    pg = robust_accuracy(model, x, y, eps, attack="pgd", steps=10)
    assert clean > 0.9  # the model did learn
    assert fg[0.0] == pg[0.0] == clean
    for e in eps[1:]:
        assert pg[e] <= fg[e] + 1e-9, (e, pg, fg)
    assert fg[eps[-1]] < clean and pg[eps[-1]] < 0.5 * clean
    again = robust_accuracy(model, x, y, eps[-1:], attack="pgd")
    assert again == {eps[-1]: pg[eps[-1]]}  # seeded random starts: it repeats exactly


class DropBN(nn.Module):
    """Dropout and BatchNorm: both behave differently in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 32 * 32, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(x).flatten(1)))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_runs_in_eval_mode_restores_mode_and_leaves_parameters(attack: str) -> None:
    torch.manual_seed(0)
    model = DropBN().train()
    x, y = images(8), labels(8)
    stats = copy.deepcopy(model.bn.state_dict())

    def run() -> torch.Tensor:
        if attack == "fgsm":
            return fgsm(model, x, y, 0.05)
        return pgd(model, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(0))

    a, b = run(), run()
    assert model.training and model.drop.training  # mode restored
    assert torch.equal(a, b)  # no dropout noise in the attack
    for k, v in model.bn.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(v, stats[k]), k
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    run()
    assert not model.training  # eval stays eval


def test_attack_restores_mode_when_the_model_fails() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, K)).train()
    with pytest.raises(RuntimeError):
        fgsm(model, images(2), labels(2), 0.1)
    assert model.training
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_attack_bad_input(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="epsilon .* must be >= 0"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="epsilon .* must be >= 0"):
        pgd(model, x, y, -1)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            pgd(model, x, y, 0.1, steps=steps)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pgd(model, x, y, 0.1, step_size=0.0)
    with pytest.raises(ValueError, match=r"outside the valid range bounds=\(0.0, 1.0\)"):
        fgsm(model, x * 2 - 1, y, 0.1)
    with pytest.raises(ValueError, match="4 images/logits but 3 labels"):
        pgd(model, x, y[:3], 0.1)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        fgsm(model, x[0], y, 0.1)
    with pytest.raises(ValueError, match="attack must be one of"):
        robust_accuracy(model, x, y, [0.1], attack="cw")
    with pytest.raises(ValueError, match="epsilon"):
        robust_accuracy(model, x, y, [0.1, -0.1])
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_loss_fn(-0.1)
    with pytest.raises(ValueError, match="steps"):
        adversarial_loss_fn(0.1, steps=0)
    with pytest.raises(ValueError, match="clean_weight"):
        adversarial_loss_fn(0.1, clean_weight=2)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")  # min/max comparisons pass NaN silently: it must be caught
    with pytest.raises(ValueError, match="NaN or inf"):
        fgsm(model, nan, y, 0.1)


def test_an_epsilon_as_large_as_the_pixel_range_warns(shapes_model) -> None:
    model, x, y = shapes_model
    with pytest.warns(UserWarning, match=r"8/255"):
        fgsm(model, x[:2], y[:2], 8)  # meant 8/255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fgsm(model, x[:2], y[:2], 8 / 255)  # the usual budget: no warning


def test_adversarial_training_in_fit() -> None:
    model = DropBN()
    x, y = images(32), labels(32)
    loss_fn = adversarial_loss_fn(8 / 255, steps=2, clean_weight=0.5)
    calls = []

    def watched(m: nn.Module, batch):
        out = loss_fn(m, batch)
        calls.append(m.training)  # fit's train mode survives the attack inside the loss
        return out

    cfg = TrainConfig(steps=3, progress=False, device="cpu", log_every=1)
    history = fit(model, watched, BatchLoader(x, y, 16), cfg)
    assert calls == [True, True, True]
    assert len(history.logs["adv_acc"]) == 3 and all(math.isfinite(v) for v in history.loss)
