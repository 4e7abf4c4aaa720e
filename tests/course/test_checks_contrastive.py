"""Lesson 03 checker passes the reference and fails known-wrong NT-Xent answers with the right hint.

The wrong answers are written the way a learner would write them, independently of the checker.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import unfinished
from vfm_course.course.exercises.contrastive import check_nt_xent
from vfm_course.objectives import nt_xent_loss


def masked_nt_xent(z1, z2, t, normalize=True, drop_self=True, scale=None, anchors="all"):
    """The usual SimCLR implementation (mask the diagonal with -inf), with switchable mistakes."""
    B = len(z1)
    z = torch.cat([z1, z2])
    if normalize:
        z = F.normalize(z, dim=1)
    sim = z @ z.T * (1 / t if scale is None else scale)
    if drop_self:
        sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool), float("-inf"))
    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(B)])
    losses = F.cross_entropy(sim, targets, reduction="none")
    return {"all": losses.mean(), "first": losses[:B].mean(), "sum": losses.sum()}[anchors]


def clip_style(z1, z2, t):
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    logits = z1 @ z2.T / t
    labels = torch.arange(len(z1))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_reference_and_masked_version_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_nt_xent(nt_xent_loss)
    assert capsys.readouterr().out.startswith("✓")
    assert check_nt_xent(masked_nt_xent)  # the -inf-mask formulation is equally right
    assert check_nt_xent(lambda z1, z2, t: masked_nt_xent(z1.double(), z2.double(), t))


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, normalize=False), "L2-normalise"),
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, drop_self=False), "2B-way"),
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, scale=t), "don't multiply"),
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, scale=1.0), "temperature seems to be ignored"),
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, anchors="first"), "only the B views of z1"),
        (lambda z1, z2, t: masked_nt_xent(z1, z2, t, anchors="sum"), "instead of summing"),
        (clip_style, "CLIP-style"),
        (lambda z1, z2, t: nt_xent_loss(z1, z2, t) + 0.1, "max \\|yours - reference\\|"),
        (lambda z1, z2, t: nt_xent_loss(z1, z2, t).reshape(1), "shape \\(\\)"),
        (lambda z1, z2, t: z1.sum() / 0, "NaN or inf"),
        (unfinished, "not finished"),
        (lambda z1, z2, t: z1 @ z2, "raised RuntimeError"),
    ],
)
def test_wrong_answers_fail_with_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_nt_xent(answer)
