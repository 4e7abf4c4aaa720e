"""Lesson 05's exercises: a LoRA forward, distillation loss, FGSM."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...objectives.adversarial import fgsm
from ...objectives.distillation import distillation_loss
from .checking import call_learner, diagnose, expect_tensor, fail, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    SEEDED_MLP_EXPR,
    rand_expr,
    randn_expr,
)

# --- lesson 05: fine-tuning --------------------------------------------------------------------


def check_lora_forward(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(x, weight, bias, lora_A, lora_B, scaling)`` -> ``x W^T + b + s (x A^T) B^T``.

    x (..., in), weight (out, in), bias (out,), lora_A (r, in), lora_B (out, r) -> (..., out):
    a frozen linear layer plus LoRA's scaled low-rank update (Hu et al. 2021).
    """
    import torch.nn.functional as F

    ex = "check_lora_forward"
    g = torch.Generator().manual_seed(501)
    cases = [((2, 5), 8, 6, 2, 2.0), ((3,), 4, 7, 1, 0.5), ((2, 3, 4), 10, 5, 3, 4.0)]
    for lead, d_in, d_out, r, s in cases:
        x, weight, bias = randn(g, *lead, d_in), randn(g, d_out, d_in), randn(g, d_out)
        lora_A, lora_B = randn(g, r, d_in), randn(g, d_out, r)
        out = call_learner(ex, fn, x, weight, bias, lora_A, lora_B, s)
        out = expect_tensor(
            ex,
            out,
            (*lead, d_out),
            "the output has the base layer's shape (..., out): x @ weight.T + bias, plus the "
            "update (x @ lora_A.T) @ lora_B.T",
        )
        base = F.linear(x, weight, bias)  # (..., out)
        update = (x @ lora_A.T) @ lora_B.T  # (..., out)
        wrong = {
            "the update is not scaled: multiply (x A^T) B^T by scaling (= alpha / r)": base
            + update,
            "you divided the update by scaling: multiply by it (scaling = alpha / r is "
            "already the factor)": base + update / s,
            "the bias is missing: the base layer is x @ weight.T + bias": x @ weight.T + s * update,
            "scaling multiplies only the low-rank update, not the frozen base layer": s
            * (base + update),
            "that is the base layer alone: add the low-rank update s * (x A^T) B^T": base,
        }
        case = f"for x {tuple(x.shape)}, r={r}, scaling={s}"
        diagnose(ex, out, base + s * update, wrong, case)
    return passed(f"the LoRA forward matches the reference on {len(cases)} shapes and ranks")


def _kd_variant(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, a: float, bug: str):
    """Distillation loss with one known mistake (or none, ``bug=""``)."""
    import torch.nn.functional as F

    log_ps = F.log_softmax(s / (1.0 if bug == "student_no_T" else T), dim=-1)  # (B, K)
    log_pt = F.log_softmax(t / (1.0 if bug == "teacher_no_T" else T), dim=-1)  # (B, K)
    if bug == "reversed":
        kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean()  # KL(student || teacher)
    elif bug == "elementwise_mean":
        kl = (log_pt.exp() * (log_pt - log_ps)).mean()  # also divides by K
    elif bug == "cross_entropy_soft":
        kl = -(log_pt.exp() * log_ps).sum(-1).mean()  # KL plus the teacher's entropy
    else:
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    factor = 1.0 if bug == "no_T2" else (T if bug == "T1" else T**2)
    ce = F.cross_entropy(s / T if bug == "ce_soft" else s, y)
    if bug == "swapped":
        return (1 - a) * factor * kl + a * ce
    return a * factor * kl + (1 - a) * ce


def check_distillation_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha)`` -> the scalar
    ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)``, the KL
    summed over classes and averaged over the batch (Hinton et al. 2015)."""
    from ...objectives.distillation import distillation_loss

    ex = "check_distillation_loss"
    g = torch.Generator().manual_seed(502)
    cases = [(4, 6, 4.0, 0.5), (8, 3, 2.0, 0.9), (5, 10, 3.0, 0.3), (3, 5, 1.5, 1.0)]
    for B, K, T, a in cases:
        s, t = 3 * randn(g, B, K), 3 * randn(g, B, K)
        y = torch.randint(K, (B,), generator=g)
        out = call_learner(ex, fn, s, t, y, T, a)
        out = expect_tensor(
            ex, out, (), "return one number (shape ()): the KL and the cross-entropy are means"
        )
        expected = distillation_loss(s, t, y, T, a)
        wrong = {
            "the soft-target term misses its factor T^2, which keeps its gradients as large as "
            "the label term's whatever the temperature": _kd_variant(s, t, y, T, a, "no_T2"),
            "multiply the soft-target term by T^2 (T squared), not T": _kd_variant(
                s, t, y, T, a, "T1"
            ),
            "the KL is the wrong way round: KL(teacher || student) = sum p_teacher * "
            "(log p_teacher - log p_student), the teacher's probabilities weight the "
            "sum": _kd_variant(s, t, y, T, a, "reversed"),
            "divide the teacher's logits by the temperature too: both distributions are "
            "softened": _kd_variant(s, t, y, T, a, "teacher_no_T"),
            "divide the student's logits by the temperature too (inside the KL term): both "
            "distributions are softened": _kd_variant(s, t, y, T, a, "student_no_T"),
            "the label term uses the softened logits: the cross-entropy with the labels is on "
            "the student's plain logits (temperature 1)": _kd_variant(s, t, y, T, a, "ce_soft"),
            "alpha weights the teacher (soft-target) term and 1 - alpha the labels, not the "
            "other way round": _kd_variant(s, t, y, T, a, "swapped"),
            "the KL is averaged over classes too: sum over the K classes, then average over "
            "the batch (F.kl_div's reduction='batchmean')": _kd_variant(
                s, t, y, T, a, "elementwise_mean"
            ),
            "that is the soft cross-entropy -sum p_t log p_s, not the KL: subtract the teacher's "
            "own entropy (sum p_t log p_t), or use F.kl_div": _kd_variant(
                s, t, y, T, a, "cross_entropy_soft"
            ),
        }
        if a == 1.0:  # only the soft term counts: the label-term mistakes look right here
            wrong = {k: v for k, v in wrong.items() if "label term" not in k}
        case = f"for B={B}, K={K}, temperature={T}, alpha={a}"
        diagnose(ex, out, expected, wrong, case)
    return passed(
        f"the distillation loss matches the reference on {len(cases)} temperatures and alphas"
    )


def _fgsm_models(g: torch.Generator) -> list[tuple[str, torch.nn.Module]]:
    """Small seeded models for the FGSM check; one with BatchNorm left in train mode."""
    from torch import nn

    def seeded(model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        return model

    mlp = seeded(nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 4)))
    cnn = seeded(
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, 4),
        )
    )
    with torch.no_grad():  # running statistics unlike any batch's, so train mode shows
        cnn[1].running_mean.copy_(torch.randn(6, generator=g))
        cnn[1].running_var.copy_(0.5 + torch.rand(6, generator=g))
    return [("a small MLP in eval mode", mlp.eval()), ("a CNN with BatchNorm in train mode", cnn)]


def check_fgsm(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(model, images, labels, epsilon)`` -> ``clamp(x + eps * sign(grad_x CE), 0, 1)``,
    computed with the model in eval mode and the model's mode restored afterwards."""
    import torch.nn.functional as F

    from ...core.inference import eval_mode
    from ...objectives.adversarial import fgsm

    ex = "check_fgsm"
    g = torch.Generator().manual_seed(503)
    models = _fgsm_models(g)
    cases = [(0, 3, 0.1), (1, 4, 0.05), (0, 2, 0.3), (1, 3, 0.02)]
    for m, B, eps in cases:
        what, model = models[m]
        was_training = model.training
        x = torch.rand(B, 3, 4, 4, generator=g)
        y = torch.randint(4, (B,), generator=g)
        expected = fgsm(model, x, y, eps)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = call_learner(ex, fn, model, x, y, eps)
        if model.training != was_training:
            fail(
                ex,
                f"the model was in {'train' if was_training else 'eval'} mode before your "
                f"function and in {'train' if model.training else 'eval'} mode after",
                "put it back as you found it: `with eval_mode(model): ...` does that for you",
            )
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
        model.load_state_dict(state)
        if changed:
            fail(
                ex,
                f"the attack changed the model ({', '.join(changed)})",
                "run the model in eval mode during the attack (`with eval_mode(model):`), so "
                "BatchNorm neither uses the batch's statistics nor updates its running ones",
            )
        out = expect_tensor(ex, out, tuple(x.shape), "return the perturbed images, (B, C, H, W)")
        xg = x.clone().requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            grad = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]
        step = eps * grad.sign()
        wrong = {
            "the images moved *down* the loss: an attack adds epsilon * sign(gradient) to "
            "increase the loss": (x - step).clamp(0, 1),
            "the result leaves the valid pixel range: clamp it to [0, 1]": x + step,
            "use the gradient's sign, not the gradient itself: every pixel moves by exactly "
            "epsilon (the steepest step under an L-infinity budget)": (x + eps * grad).clamp(0, 1),
            "that is the perturbation alone: return the perturbed images x + epsilon * "
            "sign(gradient), clamped": step,
        }
        diagnose(ex, out, expected, wrong, f"on {what}, epsilon={eps}")
    return passed(f"FGSM matches the reference on {len(cases)} models and budgets")


def lora_forward_reference(x, weight, bias, lora_A, lora_B, scaling):
    """x (..., in) -> (..., out): the frozen layer plus the scaled low-rank update, the formula of
    :meth:`vfm_course.layers.LoRALinear.forward` with its weights passed in."""
    base = torch.nn.functional.linear(x, weight, bias)  # (..., out)
    return base + (x @ lora_A.T) @ lora_B.T * scaling  # (..., r) -> (..., out)


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "05_fine_tuning"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="lora_forward",
        notebook=NOTEBOOK,
        functions=("my_lora_forward",),
        cells=("ex1-lora-forward",),
        checker=check_lora_forward,
        references=(lora_forward_reference,),
        hidden=(
            HiddenCase(
                "r=2, scaling 2",
                f"my_lora_forward({randn_expr(2, 5, 8)}, {randn_expr(6, 8)}, {randn_expr(6)}, "
                f"{randn_expr(2, 8)}, {randn_expr(6, 2)}, 2.0)",
            ),
            HiddenCase(
                "r=1, scaling 0.5",
                f"my_lora_forward({randn_expr(3, 4)}, {randn_expr(7, 4)}, {randn_expr(7)}, "
                f"{randn_expr(1, 4)}, {randn_expr(7, 1)}, 0.5)",
            ),
        ),
        seed=7501,
        forbidden=("LoRALinear", "apply_lora", "merge_lora"),
    ),
    Exercise(
        name="distillation_loss",
        notebook=NOTEBOOK,
        functions=("my_distillation_loss",),
        cells=("ex2-distillation-loss",),
        checker=check_distillation_loss,
        references=(distillation_loss,),
        hidden=(
            HiddenCase(
                "T=4, alpha 0.5",
                f"my_distillation_loss(3 * {randn_expr(4, 6)}, 3 * {randn_expr(4, 6)}, "
                f"_torch.randint(6, (4,), generator=_g), 4.0, 0.5)",
            ),
            HiddenCase(
                "T=2, alpha 0.8",
                f"my_distillation_loss(2 * {randn_expr(5, 3)}, 2 * {randn_expr(5, 3)}, "
                f"_torch.randint(3, (5,), generator=_g), 2.0, 0.8)",
            ),
        ),
        seed=7502,
        forbidden=("distillation_loss_fn",),
    ),
    Exercise(
        name="fgsm",
        notebook=NOTEBOOK,
        functions=("my_fgsm",),
        cells=("ex3-fgsm",),
        checker=check_fgsm,
        references=(fgsm,),
        hidden=(
            HiddenCase(
                "epsilon 0.1",
                f"my_fgsm({SEEDED_MLP_EXPR}, {rand_expr(3, 3, 4, 4)}, "
                f"_torch.randint(3, (3,), generator=_g), 0.1)",
            ),
            HiddenCase(
                "epsilon 0.03",
                f"my_fgsm({SEEDED_MLP_EXPR}, {rand_expr(2, 3, 4, 4)}, "
                f"_torch.randint(3, (2,), generator=_g), 0.03)",
            ),
        ),
        seed=7503,
        forbidden=("pgd", "adversarial_loss_fn", "robust_accuracy"),
    ),
)
