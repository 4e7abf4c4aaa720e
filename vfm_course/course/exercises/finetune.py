"""Lesson 05's exercises: LoRA merge and unmerge, the distillation loss, FGSM, PGD."""

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
from .robustness import check_fgsm, check_pgd, pgd_reference

# --- lesson 05: fine-tuning --------------------------------------------------------------------


def check_lora_merge(
    merge: Callable[..., torch.Tensor], unmerge: Callable[..., torch.Tensor]
) -> bool:
    """Check ``merge(weight, lora_A, lora_B, scaling)`` -> ``W + s B A`` and ``unmerge(...)`` ->
    ``W - s B A``.

    weight (out, in), lora_A (r, in), lora_B (out, r) -> a new (out, in) tensor, the input left
    as it was. The promise being checked is LoRA's: the merged weight computes exactly what the
    frozen layer plus its factored update computes, so inference costs nothing extra (Hu et al.
    2021, Sec. 4.1), and unmerging gives the pretrained weight back.
    """
    import torch.nn.functional as F

    ex = "check_lora_merge"
    g = torch.Generator().manual_seed(501)
    cases = [(8, 6, 2, 2.0), (4, 7, 1, 0.5), (10, 5, 3, 4.0)]
    for d_in, d_out, r, s in cases:
        weight, bias = randn(g, d_out, d_in), randn(g, d_out)
        lora_A, lora_B = randn(g, r, d_in), randn(g, d_out, r)
        x = randn(g, 3, d_in)
        case = f"for weight {tuple(weight.shape)}, r={r}, scaling={s}"
        shape_hint = (
            "the merged weight has the pretrained weight's shape (out, in): lora_B (out, r) "
            "times lora_A (r, in)"
        )
        merged = expect_tensor(
            ex, call_learner(ex, merge, weight, lora_A, lora_B, s), (d_out, d_in), shape_hint
        )
        delta = lora_B @ lora_A  # (out, in), rank <= r
        wrong = {
            "the update is not scaled: add scaling * lora_B @ lora_A (scaling = alpha / r)": weight
            + delta,
            "you divided the update by scaling: multiply by it (scaling = alpha / r is already "
            "the factor)": weight + delta / s,
            "that subtracts the update: merging adds it, W + scaling * B A": weight - s * delta,
            "that is the update alone: merging adds it to the pretrained weight": s * delta,
            "scaling multiplies only the low-rank update, not the pretrained weight": s
            * (weight + delta),
            "that is the pretrained weight unchanged: add scaling * lora_B @ lora_A": weight,
        }
        diagnose(ex, merged, weight + s * delta, wrong, f"of the merged weight {case}")
        # What merging promises: one plain linear layer computes the adapted layer.
        adapted = F.linear(x, weight, bias) + s * (x @ lora_A.T) @ lora_B.T  # (3, out)
        diagnose(ex, F.linear(x, merged, bias), adapted, {}, f"of x @ merged.T + b {case}")

        restored = expect_tensor(
            ex,
            call_learner(ex, unmerge, weight + s * delta, lora_A, lora_B, s),
            (d_out, d_in),
            shape_hint,
        )
        twice, unscaled = weight + 2 * s * delta, weight + (s - 1) * delta
        wrong = {
            "unmerge added the update again: it subtracts what merge added": twice,
            "unmerge removed the update without its scaling: subtract scaling * B A": unscaled,
            "unmerge returned the merged weight unchanged: subtract scaling * B A": weight
            + s * delta,
        }
        diagnose(ex, restored, weight, wrong, f"of unmerge(merged) {case}")

    # In place: the learner's own tensors, not copies, so an edit of the input shows.
    for name, fn in (("merge", merge), ("unmerge", unmerge)):
        w = randn(g, 5, 4)
        before = w.clone()
        call_learner(
            ex, lambda *args, fn=fn, w=w: fn(w, *args[1:]), w, randn(g, 2, 4), randn(g, 5, 2), 2.0
        )
        if not torch.equal(w, before):
            fail(
                ex,
                f"your {name} changed the weight it was given (an in-place `+=` or `-=`)",
                "return a new tensor, `weight + ...`: the caller decides whether to copy it into "
                "the layer, and a weight changed behind its back gets merged twice",
            )
    return passed(
        f"merge and unmerge match W +/- scaling * B A on {len(cases)} shapes and ranks, and "
        "x @ merged.T + b equals the frozen layer plus its low-rank update"
    )


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


def lora_merge_reference(weight, lora_A, lora_B, scaling):
    """(out, in) -> (out, in): the pretrained weight plus the scaled update, ``W + s B A``, the
    weight :meth:`vfm_course.layers.LoRALinear.merge` writes into its base layer."""
    return weight + scaling * lora_B @ lora_A  # (out, r) @ (r, in) -> (out, in), rank <= r


def lora_unmerge_reference(weight, lora_A, lora_B, scaling):
    """(out, in) -> (out, in): a merged weight minus the scaled update, ``W - s B A``."""
    return weight - scaling * lora_B @ lora_A


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "05_fine_tuning"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="lora_merge",
        notebook=NOTEBOOK,
        functions=("my_lora_merge", "my_lora_unmerge"),
        cells=("ex1-lora-merge",),
        checker=check_lora_merge,
        references=(lora_merge_reference, lora_unmerge_reference),
        hidden=(
            HiddenCase(
                "r=2, scaling 2",
                f"(lambda w, a, b: (my_lora_merge(w, a, b, 2.0), my_lora_unmerge(w, a, b, 2.0)))"
                f"({randn_expr(6, 8)}, {randn_expr(2, 8)}, {randn_expr(6, 2)})",
            ),
            HiddenCase(
                "r=1, scaling 0.5",
                f"(lambda w, a, b: (my_lora_merge(w, a, b, 0.5), my_lora_unmerge(w, a, b, 0.5)))"
                f"({randn_expr(7, 4)}, {randn_expr(1, 4)}, {randn_expr(7, 1)})",
            ),
        ),
        seed=7501,
        forbidden=("LoRALinear", "apply_lora", "merge_lora", "unmerge_lora"),
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
    Exercise(
        name="pgd",
        notebook=NOTEBOOK,
        functions=("my_pgd",),
        cells=("ex4-pgd",),
        checker=check_pgd,
        references=(pgd_reference,),
        hidden=(
            HiddenCase(
                "epsilon 0.1, 3 steps",
                f"my_pgd({SEEDED_MLP_EXPR}, {rand_expr(3, 3, 4, 4)}, "
                f"_torch.randint(3, (3,), generator=_g), 0.1, 3, _g)",
            ),
            HiddenCase(
                "epsilon 0.05, 5 steps",
                f"my_pgd({SEEDED_MLP_EXPR}, {rand_expr(2, 3, 4, 4)}, "
                f"_torch.randint(3, (2,), generator=_g), 0.05, 5, _g)",
            ),
        ),
        seed=7504,
        forbidden=("pgd", "adversarial_loss_fn", "robust_accuracy"),
    ),
)
