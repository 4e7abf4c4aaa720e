"""Lesson 03 CLIP-loss checker: passes the reference, fails known-wrong answers with their hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import unfinished
from vfm_course.course.exercises.contrastive import check_clip_loss
from vfm_course.objectives import clip_loss


def _ce(logits, targets, reduction="mean"):
    return F.cross_entropy(logits, targets, reduction=reduction)


def by_hand(logits):
    """A learner's correct answer written differently: log-softmax and the diagonal."""
    diag_i2t = logits.log_softmax(dim=1).diagonal()
    diag_t2i = logits.log_softmax(dim=0).diagonal()
    return -(diag_i2t.mean() + diag_t2i.mean()) / 2


def image_to_text_only(logits):
    return _ce(logits, torch.arange(len(logits)))


def forgot_transpose(logits):
    t = torch.arange(len(logits))
    return (_ce(logits, t) + _ce(logits, t)) / 2


def text_to_image_only(logits):
    return _ce(logits.T, torch.arange(len(logits)))


def added_directions(logits):
    t = torch.arange(len(logits))
    return _ce(logits, t) + _ce(logits.T, t)


def summed_over_batch(logits):
    t = torch.arange(len(logits))
    return (_ce(logits, t, "sum") + _ce(logits.T, t, "sum")) / 2


def zero_targets(logits):
    t = torch.zeros(len(logits), dtype=torch.long)
    return (_ce(logits, t) + _ce(logits.T, t)) / 2


def softmax_first(logits):
    t = torch.arange(len(logits))
    return (_ce(logits.softmax(-1), t) + _ce(logits.T.softmax(-1), t)) / 2


def per_pair(logits):
    t = torch.arange(len(logits))
    return (_ce(logits, t, "none") + _ce(logits.T, t, "none")) / 2


def test_reference_and_hand_written_answers_pass(capsys) -> None:
    assert check_clip_loss(clip_loss)
    assert check_clip_loss(by_hand)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (image_to_text_only, "only the image->text direction"),
        (forgot_transpose, "only the image->text direction"),
        (text_to_image_only, "only the text->image direction"),
        (added_directions, "you added the two directions"),
        (summed_over_batch, "you summed over the batch"),
        (zero_targets, "the targets must be the diagonal"),
        (softmax_first, "pass it the raw logits"),
        (per_pair, r"output has shape \(5,\), expected \(\)"),
        (lambda logits: 2 * clip_loss(logits) + 1, "wrong values for a 5x5"),
        (unfinished, "not finished"),
    ],
)
def test_wrong_answers_fail_with_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_clip_loss(answer)
