"""Lesson 07's exercises: DINO's teacher targets (centering and sharpening) and its multi-crop
cross-entropy (which teacher view is compared with which student view)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...objectives.dino import dino_cross_entropy, teacher_targets
from .checking import call_learner, diagnose, expect_tensor, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import rand_expr, randn_expr

# --- lesson 07: centering and sharpening -------------------------------------------------------


def check_dino_targets(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(teacher_out, center, teacher_temp)`` -> the teacher's targets (n * B, K):
    ``softmax((teacher_out - center) / teacher_temp)`` over the K prototypes."""
    import torch.nn.functional as F

    ex = "check_dino_targets"
    g = torch.Generator().manual_seed(707)
    cases = [(6, 5, 0.04), (4, 9, 0.5), (3, 3, 0.1)]
    for rows, K, t in cases:
        out_t = randn(g, rows, K)
        # A centre with a clear per-prototype pattern, so an answer that ignores it shows.
        center = 2 * randn(g, 1, K)
        out = expect_tensor(
            ex,
            call_learner(ex, fn, out_t, center, t),
            (rows, K),
            "return one probability distribution per row: the same shape as teacher_out",
        )
        wrong = {
            "the centre is not subtracted: centering is teacher_out - center, before the "
            "softmax": F.softmax(out_t / t, dim=-1),
            "add the centre? it must be subtracted (the running mean output is taken away, "
            "so no prototype wins for every image)": F.softmax((out_t + center) / t, dim=-1),
            "the centre is subtracted after dividing by the temperature: centre first, then "
            "divide, (teacher_out - center) / teacher_temp": F.softmax(out_t / t - center, dim=-1),
            "divide by the temperature, don't multiply: a small temperature must sharpen the "
            "distribution": F.softmax((out_t - center) * t, dim=-1),
            "the temperature is ignored: sharpening divides the centred logits by "
            "teacher_temp": F.softmax(out_t - center, dim=-1),
            "the softmax runs over the batch (dim=0): each row (one image's view) must be a "
            "distribution over the K prototypes, softmax(..., dim=-1)": F.softmax(
                (out_t - center) / t, dim=0
            ),
            "these are log-probabilities: the targets are probabilities, softmax not "
            "log_softmax": F.log_softmax((out_t - center) / t, dim=-1),
        }
        diagnose(
            ex,
            out,
            teacher_targets(out_t, center, t),
            wrong,
            f"for {rows} rows, K = {K}, teacher_temp = {t}",
        )
    return passed(f"centred, sharpened targets match the reference in {len(cases)} cases")


# --- lesson 07: the multi-crop cross-entropy ---------------------------------------------------


def _pairing_variant(
    student_out: torch.Tensor, targets: torch.Tensor, t: float, n_global: int, bug: str
) -> torch.Tensor:
    """DINO's cross-entropy with one known mistake in the pairing or the reductions."""
    import torch.nn.functional as F

    B = targets.shape[0] // n_global
    log_p = F.log_softmax(student_out / t, dim=-1).view(-1, B, student_out.shape[-1])  # (V,B,K)
    if bug == "softmax":
        log_p = F.softmax(student_out / t, dim=-1).view_as(log_p)
    if bug == "no_temp":
        log_p = F.log_softmax(student_out, dim=-1).view_as(log_p)
    q = targets.view(n_global, B, -1)  # (n_global, B, K)
    V = log_p.shape[0]
    if bug == "matched":  # teacher view a with student view a only
        pairs = [(a, a) for a in range(n_global)]
    elif bug == "globals_only":
        pairs = [(a, v) for a in range(n_global) for v in range(n_global) if v != a]
    elif bug == "all_pairs":
        pairs = [(a, v) for a in range(n_global) for v in range(V)]
    else:
        pairs = [(a, v) for a in range(n_global) for v in range(V) if v != a]
    terms = [(-q[a] * log_p[v]).sum(dim=-1) for a, v in pairs]  # each (B,)
    if bug == "sum_pairs":
        return sum(term.mean() for term in terms)
    if bug == "sum_batch":
        return sum(term.sum() for term in terms) / len(terms)
    return sum(term.mean() for term in terms) / len(terms)


def check_dino_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(student_out, targets, student_temp, n_global)`` -> DINO's loss: the mean over
    the pairs (teacher view a, student view v), v != a, of the batch-mean cross-entropy
    ``-sum_k targets_a[k] * log_softmax(student_out_v / student_temp)[k]``.

    ``student_out`` (V * B, K) and ``targets`` (n_global * B, K) are view-major."""
    ex = "check_dino_loss"
    g = torch.Generator().manual_seed(708)
    cases = [(2, 6, 3, 5, 0.1), (2, 2, 4, 3, 0.5), (3, 5, 2, 4, 0.2)]  # n_global, V, B, K, temp
    for n_global, V, B, K, t in cases:
        student_out = 2 * randn(g, V * B, K)
        targets = torch.softmax(3 * randn(g, n_global * B, K), dim=-1)
        out = expect_tensor(
            ex,
            call_learner(ex, fn, student_out, targets, t, n_global),
            (),
            "return one number (a 0-d tensor): the mean over pairs of the batch-mean cross-entropy",
        )
        variant = {
            bug: _pairing_variant(student_out, targets, t, n_global, bug)
            for bug in (
                "all_pairs",
                "matched",
                "globals_only",
                "softmax",
                "no_temp",
                "sum_pairs",
                "sum_batch",
            )
        }
        wrong = {
            "a teacher view is also compared with the student's copy of the same view: skip "
            "v == a (matching a view with itself teaches nothing)": variant["all_pairs"],
            "each teacher view is compared only with the student's copy of that same view: "
            "pair teacher view a with every *other* student view v != a": variant["matched"],
            "the local views are left out: the student's every view (global and local, "
            "V in all) is compared with each teacher view except its own": variant["globals_only"],
            "the student's side must be log-probabilities: log_softmax(student_out / "
            "student_temp), not softmax": variant["softmax"],
            "the student's temperature is ignored: divide student_out by student_temp before "
            "the log_softmax": variant["no_temp"],
            "the pairs' losses are summed: average them over the n_global * (V - 1) pairs": variant[
                "sum_pairs"
            ],
            "each pair's cross-entropy is summed over the batch: take its mean over the B "
            "images": variant["sum_batch"],
        }
        case = f"for n_global = {n_global}, V = {V} views, B = {B}, K = {K}, temp {t}"
        diagnose(ex, out, dino_cross_entropy(student_out, targets, t, n_global), wrong, case)
    return passed(f"DINO's multi-crop cross-entropy matches the reference in {len(cases)} cases")


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "07_self_distillation"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell


def _targets_expr(rows: int, k: int) -> str:
    return f"_torch.softmax(3 * {randn_expr(rows, k)}, dim=-1)"


EXERCISES = (
    Exercise(
        name="dino_targets",
        notebook=NOTEBOOK,
        functions=("dino_targets",),
        cells=("ex-dino_targets",),
        checker=check_dino_targets,
        references=(teacher_targets,),
        hidden=(
            HiddenCase(
                "teacher_temp 0.04", f"dino_targets({randn_expr(8, 6)}, {randn_expr(1, 6)}, 0.04)"
            ),
            HiddenCase(
                "teacher_temp 0.7",
                f"dino_targets({randn_expr(4, 10)}, 3 * {rand_expr(1, 10)}, 0.7)",
            ),
        ),
        seed=7701,
        forbidden=("dino_loss_fn", "teacher_targets"),
    ),
    Exercise(
        name="dino_loss",
        notebook=NOTEBOOK,
        functions=("dino_loss",),
        cells=("ex-dino_loss",),
        checker=check_dino_loss,
        references=(dino_cross_entropy,),
        hidden=(
            HiddenCase(
                "2 global + 4 local views",
                f"dino_loss({randn_expr(18, 7)}, {_targets_expr(6, 7)}, 0.1, 2)",
            ),
            HiddenCase(
                "3 global views, no local ones",
                f"dino_loss({randn_expr(6, 5)}, {_targets_expr(6, 5)}, 0.3, 3)",
            ),
        ),
        seed=7702,
        forbidden=("dino_loss_fn", "dino_cross_entropy"),
    ),
)
