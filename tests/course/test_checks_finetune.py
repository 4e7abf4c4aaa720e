"""Lesson 05 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import unfinished
from vfm_course.course.exercises.finetune import (
    check_distillation_loss,
    check_fgsm,
    check_lora_forward,
    lora_forward_reference,
)
from vfm_course.layers import LoRALinear

# ----------------------------------------------------------------------------- LoRA forward


def test_lora_reference_equals_the_package_layer():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 5), r=2, alpha=6.0)
    nn.init.normal_(layer.lora_B)  # B starts at zero; make the update visible
    x = torch.randn(3, 4, 8)
    expected = layer(x)
    base = layer.base_layer
    got = lora_forward_reference(
        x, base.weight, base.bias, layer.lora_A, layer.lora_B, layer.scaling
    )
    torch.testing.assert_close(got, expected)


def test_lora_forward_checker(capsys) -> None:
    assert check_lora_forward(lora_forward_reference)
    assert capsys.readouterr().out.startswith("✓")
    wrong = {
        "not scaled": lambda x, w, b, A, B, s: F.linear(x, w, b) + x @ A.T @ B.T,
        "divided the update": lambda x, w, b, A, B, s: F.linear(x, w, b) + x @ A.T @ B.T / s,
        "bias is missing": lambda x, w, b, A, B, s: x @ w.T + s * (x @ A.T @ B.T),
        "only the low-rank update": lambda x, w, b, A, B, s: (
            s * (F.linear(x, w, b) + x @ A.T @ B.T)
        ),
        "base layer alone": lambda x, w, b, A, B, s: F.linear(x, w, b),
        "raised RuntimeError": lambda x, w, b, A, B, s: F.linear(x, w, b) + s * (x @ B @ A),
        "wrong values": lambda x, w, b, A, B, s: F.linear(x, w, b) + s * x @ A.T @ B.T + 0.1,
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            check_lora_forward(fn)


# ----------------------------------------------------------------------------- distillation


def kd(s, t, y, T, a, *, kl_reduction="batchmean", factor=None, soft_teacher=True):
    log_ps = F.log_softmax(s / T, dim=-1)
    log_pt = F.log_softmax(t.detach() / (T if soft_teacher else 1.0), dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction=kl_reduction, log_target=True)
    return a * (T**2 if factor is None else factor) * kl + (1 - a) * F.cross_entropy(s, y)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the mistake being tested
def test_distillation_checker(capsys) -> None:
    assert check_distillation_loss(kd)  # written with F.kl_div: the same number
    assert capsys.readouterr().out.startswith("✓")
    wrong = {
        "misses its factor T\\^2": lambda s, t, y, T, a: kd(s, t, y, T, a, factor=1.0),
        "T\\^2 \\(T squared\\), not T": lambda s, t, y, T, a: kd(s, t, y, T, a, factor=T),
        "teacher's logits by the temperature": lambda s, t, y, T, a: kd(
            s, t, y, T, a, soft_teacher=False
        ),
        "averaged over classes too": lambda s, t, y, T, a: kd(s, t, y, T, a, kl_reduction="mean"),
        "the other way round": lambda s, t, y, T, a: kd(s, t, y, T, 1 - a),
        "wrong way round": lambda s, t, y, T, a: (
            kd(t, s, y, T, a)  # KL(student || teacher)
            - (1 - a) * F.cross_entropy(t, y)
            + (1 - a) * F.cross_entropy(s, y)
        ),
        "return one number": lambda s, t, y, T, a: F.cross_entropy(s, y, reduction="none"),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            check_distillation_loss(fn)


# ----------------------------------------------------------------------------- FGSM


def reference_fgsm(model, images, labels, epsilon, *, bug: str | None = None):
    was_training = model.training
    if bug != "train_mode":
        model.eval()
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    if bug != "mode_not_restored":
        model.train(was_training)
    step = epsilon * (grad if bug == "raw_gradient" else grad.sign())
    out = images - step if bug == "descent" else images + step
    return out if bug == "no_clamp" else out.clamp(0, 1)


def test_fgsm_checker(capsys) -> None:
    assert check_fgsm(reference_fgsm)
    assert capsys.readouterr().out.startswith("✓")
    hints = {
        "descent": "moved \\*down\\* the loss",
        "no_clamp": "valid pixel range",
        "raw_gradient": "gradient's sign",
        "train_mode": "changed the model .*running_mean",
        "mode_not_restored": "train mode before your function and in eval mode after",
    }
    for bug, hint in hints.items():
        with pytest.raises(AssertionError, match=hint):
            check_fgsm(lambda m, x, y, e, bug=bug: reference_fgsm(m, x, y, e, bug=bug))


# Each checker rejects a known-wrong (or unfinished) answer with the hint that names the mistake.
WRONG_ANSWERS = [
    pytest.param(check_lora_forward, (unfinished,), "not finished", id="lora_forward-0"),
    pytest.param(check_distillation_loss, (unfinished,), "not finished", id="distillation_loss-1"),
    pytest.param(check_fgsm, (unfinished,), "not finished", id="fgsm-2"),
    pytest.param(
        check_fgsm,
        (lambda m, x, y, e: reference_fgsm(m, x, y, e)[0],),
        "return the perturbed images",
        id="fgsm-3",
    ),
]


@pytest.mark.parametrize("checker, answer, hint", WRONG_ANSWERS)
def test_checker_names_the_mistake(checker, answer, hint) -> None:
    with pytest.raises(AssertionError, match=hint):
        checker(*answer)
