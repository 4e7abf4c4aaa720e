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
    check_lora_merge,
    check_pgd,
    lora_merge_reference,
    lora_unmerge_reference,
    pgd_reference,
)
from vfm_course.layers import LoRALinear

# ----------------------------------------------------------------------------- LoRA merge


def test_lora_merge_reference_equals_the_package_layer():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 5), r=2, alpha=6.0)
    nn.init.normal_(layer.lora_B)  # B starts at zero; make the update visible
    pretrained = layer.base_layer.weight.detach().clone()
    merged = lora_merge_reference(pretrained, layer.lora_A, layer.lora_B, layer.scaling)
    layer.merge()
    torch.testing.assert_close(merged, layer.base_layer.weight)
    restored = lora_unmerge_reference(merged, layer.lora_A, layer.lora_B, layer.scaling)
    torch.testing.assert_close(restored, pretrained)


def _merge(w, A, B, s):
    return w + s * B @ A


def _unmerge(w, A, B, s):
    return w - s * B @ A


def _merge_in_place(w, A, B, s):
    w += s * B @ A
    return w


def test_lora_merge_checker(capsys) -> None:
    assert check_lora_merge(lora_merge_reference, lora_unmerge_reference)
    assert capsys.readouterr().out.startswith("✓")
    wrong_merge = {
        "not scaled": lambda w, A, B, s: w + B @ A,
        "divided the update": lambda w, A, B, s: w + B @ A / s,
        "subtracts the update": _unmerge,
        "update alone": lambda w, A, B, s: s * B @ A,
        "not the pretrained weight": lambda w, A, B, s: s * (w + B @ A),
        "pretrained weight unchanged": lambda w, A, B, s: w.clone(),
        r"shape \(out, in\)": lambda w, A, B, s: w.T + s * A.T @ B.T,
        "raised RuntimeError": lambda w, A, B, s: w + s * A @ B,
        "changed the weight it was given": _merge_in_place,
        r"max \|yours - reference\|": lambda w, A, B, s: w + s * B @ A + 0.1,
    }
    for hint, fn in wrong_merge.items():
        with pytest.raises(AssertionError, match=hint):
            check_lora_merge(fn, _unmerge)
    wrong_unmerge = {
        "added the update again": _merge,
        "without its scaling": lambda w, A, B, s: w - B @ A,
        "merged weight unchanged": lambda w, A, B, s: w.clone(),
        "your unmerge changed the weight": lambda w, A, B, s: w.sub_(s * B @ A),
    }
    for hint, fn in wrong_unmerge.items():
        with pytest.raises(AssertionError, match=hint):
            check_lora_merge(_merge, fn)


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


# ----------------------------------------------------------------------------- PGD


def my_pgd(model, images, labels, epsilon, steps, generator, *, bug: str | None = None):
    """PGD written the way the lesson suggests: the FGSM step in a loop, projected."""
    step = epsilon if bug == "full_step" else 2.5 * epsilon / steps
    if bug == "global_rng":
        noise = torch.rand(images.shape)
    else:
        noise = torch.rand(images.shape, generator=generator)
    x_adv = images.clone() if bug == "no_start" else (images + epsilon * (2 * noise - 1))
    x_adv = x_adv.clamp(0, 1)
    for _ in range(steps):
        x_adv = reference_fgsm(model, x_adv, labels, -step if bug == "descent" else step)
        if bug != "no_projection":
            x_adv = torch.min(torch.max(x_adv, images - epsilon), images + epsilon)
    return x_adv[0] if bug == "one_image" else x_adv


def test_pgd_checker(capsys) -> None:
    assert check_pgd(pgd_reference)
    assert check_pgd(my_pgd)  # clip to [0, 1], then to the ball: the same as the package
    assert capsys.readouterr().out.startswith("✓")
    hints = {
        "full_step": "each step moved by epsilon",
        "no_start": "starts at the clean images",
        "descent": "moved \\*down\\* the loss",
        "no_projection": "project back into the ball",
        "global_rng": "same seeded generator gave different images",
        "one_image": "return the perturbed images",
    }
    for bug, hint in hints.items():
        with pytest.raises(AssertionError, match=hint):
            check_pgd(lambda m, x, y, e, n, g, bug=bug: my_pgd(m, x, y, e, n, g, bug=bug))

    def train_mode(m, x, y, e, n, g):
        m.train()
        return my_pgd(m, x, y, e, n, g)

    with pytest.raises(AssertionError, match="eval mode after|train mode after"):
        check_pgd(train_mode)


# Each checker rejects a known-wrong (or unfinished) answer with the hint that names the mistake.
WRONG_ANSWERS = [
    pytest.param(check_lora_merge, (unfinished, _unmerge), "not finished", id="lora_merge-0"),
    pytest.param(check_lora_merge, (_merge, unfinished), "not finished", id="lora_merge-1"),
    pytest.param(check_distillation_loss, (unfinished,), "not finished", id="distillation_loss-1"),
    pytest.param(check_fgsm, (unfinished,), "not finished", id="fgsm-2"),
    pytest.param(check_pgd, (unfinished,), "not finished", id="pgd-4"),
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
