"""Lesson 06's focal-loss checker passes the reference and learner-style versions, and fails
known-wrong heatmap losses with the hint that names the mistake.

The answers are written the way a learner would write them (one `torch.where` over the cells),
independently of the checker's own variants.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import unfinished
from vfm_course.course.exercises.centernet import check_centernet_focal_loss
from vfm_course.dense import centernet_focal_loss


def focal(bug: str | None = None, alpha: float = 2.0, beta: float = 4.0):
    def my_focal_loss(logits, heatmap):
        p = logits.sigmoid()
        pos = heatmap > 0.5 if bug == "threshold" else heatmap == 1
        if bug == "naive_log":
            log_p, log_not_p = torch.log(p), torch.log(1 - p)
        elif bug == "clamped":  # CenterNet's official code
            q = p.clamp(1e-4, 1 - 1e-4)
            log_p, log_not_p = torch.log(q), torch.log(1 - q)
        else:
            log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        cell = torch.where(
            pos, (1 - p) ** alpha * log_p, (1 - heatmap) ** beta * p**alpha * log_not_p
        )
        n = logits.numel() if bug == "mean" else (heatmap == 1).sum().clamp(min=1)
        return (cell.sum() if bug == "sign" else -cell.sum()) / n

    return my_focal_loss


def test_reference_and_learner_versions_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_centernet_focal_loss(centernet_focal_loss)
    assert check_centernet_focal_loss(focal())
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize(
    "answer, hint",
    [
        (focal("threshold"), "only the exact centres"),
        (focal(alpha=0.0), "focusing factors are missing"),
        (focal(beta=0.0), r"reduced penalty \(1 - Y\)\^beta is missing"),
        (focal("mean"), "not by the number of cells"),
        (focal("sign"), "must be positive"),
        (focal("naive_log"), "your loss is inf"),
        (focal("clamped"), "CenterNet's own code clamps p"),
        (lambda logits, heat: centernet_focal_loss(logits, heat).reshape(1), "0-d tensor"),
        (unfinished, "not finished"),
    ],
)
def test_wrong_answers_fail_with_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_centernet_focal_loss(answer)


def test_the_heatmap_loss_is_pluggable_into_the_objective():
    from vfm_course.dense import centernet_loss

    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(2, 3 + 4, 5, 5, generator=g)
    targets = torch.zeros(2, 3 + 5, 5, 5)
    targets[:, 0, 2, 2] = 1.0
    targets[:, 3:5, 2, 2] = 2.0
    targets[:, 7, 2, 2] = 1.0
    default, parts = centernet_loss(outputs, targets)
    mine, mine_parts = centernet_loss(outputs, targets, heatmap_loss=focal())
    assert torch.allclose(default, mine) and parts == pytest.approx(mine_parts)
    doubled, _ = centernet_loss(outputs, targets, heatmap_loss=lambda o, t: 2 * focal()(o, t))
    assert torch.allclose(doubled - default, torch.tensor(parts["heatmap"]))
