"""Lesson 07 checkers pass right answers and fail known-wrong DINO targets and losses with the
right hint. The answers are written the way a learner would write them (loops over views,
einsum), independently of the checker's own variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import unfinished
from vfm_course.course.exercises.self_distillation import check_dino_loss, check_dino_targets
from vfm_course.objectives.dino import dino_cross_entropy, teacher_targets


def learner_targets(teacher_out, center, temp, order="centre_first", sign=-1, dim=-1):
    if order == "centre_first":
        logits = (teacher_out + sign * center) / temp
    else:
        logits = teacher_out / temp + sign * center
    return torch.softmax(logits, dim=dim)


def test_targets_reference_and_a_learner_version_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_dino_targets(teacher_targets)
    assert capsys.readouterr().out.startswith("✓")
    assert check_dino_targets(learner_targets)
    assert check_dino_targets(lambda t, c, temp: torch.exp(F.log_softmax((t - c) / temp, dim=1)))


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (lambda t, c, temp: torch.softmax(t / temp, dim=-1), "centre is not subtracted"),
        (lambda t, c, temp: learner_targets(t, c, temp, sign=1), "must be subtracted"),
        (lambda t, c, temp: learner_targets(t, c, temp, order="divide_first"), "after dividing"),
        (lambda t, c, temp: torch.softmax((t - c) * temp, dim=-1), "don't multiply"),
        (lambda t, c, temp: torch.softmax(t - c, dim=-1), "temperature is ignored"),
        (lambda t, c, temp: learner_targets(t, c, temp, dim=0), "over the batch"),
        (lambda t, c, temp: F.log_softmax((t - c) / temp, dim=-1), "log-probabilities"),
        (lambda t, c, temp: teacher_targets(t, c, temp)[:1], "same shape"),
        (unfinished, "not finished"),
    ],
)
def test_targets_wrong_answers_get_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_dino_targets(answer)


def learner_loss(student_out, targets, temp, n_global, skip_same=True, local=True, mean=True):
    """A loop over (teacher view, student view) pairs, as a learner would write it."""
    B = targets.shape[0] // n_global
    views = student_out.chunk(student_out.shape[0] // B)
    teacher = targets.chunk(n_global)
    losses = []
    for a, q in enumerate(teacher):
        for v, s in enumerate(views):
            if (skip_same and v == a) or (not local and v >= n_global):
                continue
            losses.append(torch.einsum("bk,bk->b", -q, F.log_softmax(s / temp, dim=-1)).mean())
    return torch.stack(losses).mean() if mean else torch.stack(losses).sum()


def test_loss_reference_and_a_learner_version_pass() -> None:
    assert check_dino_loss(dino_cross_entropy)
    assert check_dino_loss(learner_loss)


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (lambda s, q, t, n: learner_loss(s, q, t, n, skip_same=False), "skip v == a"),
        (lambda s, q, t, n: learner_loss(s, q, t, n, local=False), "local views are left out"),
        (lambda s, q, t, n: learner_loss(s, q, t, n, mean=False), "summed"),
        (lambda s, q, t, n: learner_loss(s, q, 1.0, n), "temperature is ignored"),
        (
            lambda s, q, t, n: (
                sum(
                    (-qa * F.log_softmax(s[a * len(qa) : (a + 1) * len(qa)] / t, -1)).sum(-1).mean()
                    for a, qa in enumerate(q.chunk(n))
                )
                / n
            ),
            "same view",
        ),
        (lambda s, q, t, n: dino_cross_entropy(s, q, t, n) + 0.05, "max \\|yours - reference\\|"),
        (unfinished, "not finished"),
    ],
)
def test_loss_wrong_answers_get_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_dino_loss(answer)
