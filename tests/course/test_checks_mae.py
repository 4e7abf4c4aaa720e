"""Lesson 04 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.mae import (
    check_insert_mask_tokens,
    check_mae_loss,
    check_random_masking,
)
from vfm_course.layers import gather_tokens, insert_mask_tokens, num_kept


def reference_masking(x, mask_ratio, noise, *, bug: str | None = None):
    """MAE's random_masking, optionally with one known mistake."""
    B, N, D = x.shape
    keep = num_kept(N, mask_ratio)
    if bug == "wrong_count":
        keep = int(N * mask_ratio)  # the number to remove, not to keep
    ids_shuffle = torch.argsort(noise, dim=1, descending=bug == "highest")
    ids_restore = ids_shuffle if bug == "no_second_argsort" else torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    if bug == "original_order":
        ids_keep = ids_keep.sort(dim=1).values
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, N_keep, D)
    mask = torch.ones(B, N)
    mask[:, :keep] = 0
    if bug != "shuffled_mask":
        mask = torch.gather(mask, 1, ids_restore)
    if bug == "inverted_mask":
        mask = 1 - mask
    return kept, mask, ids_restore


def test_random_masking_checker(capsys) -> None:
    assert check_random_masking(reference_masking)
    assert capsys.readouterr().out.startswith("✓")
    hints = {
        "wrong_count": "you kept 12 tokens .* expected .* = 4",
        "highest": "highest noise",
        "original_order": "original order",
        "no_second_argsort": "forgot the second argsort",
        "shuffled_mask": "still in shuffled order",
        "inverted_mask": "mask is inverted",
    }
    for bug, hint in hints.items():
        with pytest.raises(AssertionError, match=hint):
            check_random_masking(lambda x, r, n, bug=bug: reference_masking(x, r, n, bug=bug))


def reference_loss(pred, target, mask):
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()


def test_mae_loss_checker(capsys) -> None:
    assert check_mae_loss(reference_loss)
    assert capsys.readouterr().out.startswith("✓")
    per_patch = lambda p, t: ((p - t) ** 2).mean(dim=-1)
    wrong = {
        "averaged over all patches": lambda p, t, m: per_patch(p, t).mean(),
        "averaged over the visible patches": lambda p, t, m: (
            (per_patch(p, t) * (1 - m)).sum() / (1 - m).sum()
        ),
        "summed the masked patches": lambda p, t, m: (per_patch(p, t) * m).sum(),
        "summed the squared errors over everything": lambda p, t, m: (
            ((p - t) ** 2) * m[..., None]
        ).sum(),
        r"\.mean\(dim=-1\)\), don't sum": lambda p, t, m: (
            (((p - t) ** 2).sum(-1) * m).sum() / m.sum()
        ),
        "wrong values": lambda p, t, m: reference_loss(p, t, m) * 1.1,
        "return one number": lambda p, t, m: per_patch(p, t),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            check_mae_loss(fn)


# Each checker rejects a known-wrong (or unfinished) answer with the hint that names the mistake.
def decoder_tokens(x, mask_token, ids_restore, num_prefix, *, bug: str | None = None):
    """The MAE decoder's input written out, optionally with one known mistake."""
    B, N = ids_restore.shape
    front, visible = x[:, :num_prefix], x[:, num_prefix:]
    fill = mask_token.expand(B, N - visible.shape[1], -1)
    seq = torch.cat([fill, visible] if bug == "mask_first" else [visible, fill], dim=1)
    if bug == "cls_unshuffled":  # the class token inside the unshuffle: N + 1 tokens
        return gather_tokens(torch.cat([front, seq], dim=1), ids_restore)
    if bug != "no_unshuffle":
        ids = ids_restore.argsort(dim=1) if bug == "shuffle_again" else ids_restore
        seq = gather_tokens(seq, ids)
    return seq if bug == "no_prefix" else torch.cat([front, seq], dim=1)


def test_insert_mask_tokens_checker(capsys) -> None:
    assert check_insert_mask_tokens(insert_mask_tokens)
    assert check_insert_mask_tokens(decoder_tokens)
    assert capsys.readouterr().out.startswith("✓")
    hints = {
        "mask_first": "go \\*after\\* the visible tokens",
        "no_unshuffle": "still in shuffled order",
        "shuffle_again": "applies the shuffle again",
        "no_prefix": "Keep the first num_prefix tokens",
        "cls_unshuffled": "Keep the first num_prefix tokens",
    }
    for bug, hint in hints.items():
        with pytest.raises(AssertionError, match=hint):
            check_insert_mask_tokens(lambda *a, bug=bug: decoder_tokens(*a, bug=bug))
    with pytest.raises(AssertionError, match="not finished"):
        check_insert_mask_tokens(unfinished)


WRONG_ANSWERS = [
    pytest.param(
        check_random_masking,
        (lambda x, r, n: reference_masking(x, r, n)[:2],),
        "return three things",
        id="random_masking-0",
    ),
    pytest.param(check_random_masking, (unfinished,), "not finished", id="random_masking-1"),
    pytest.param(
        check_random_masking,
        (lambda x, r, n: x[:, :, 99],),
        "raised IndexError",
        id="random_masking-2",
    ),
    pytest.param(check_mae_loss, (unfinished,), "not finished", id="mae_loss-3"),
]


@pytest.mark.parametrize("checker, answer, hint", WRONG_ANSWERS)
def test_checker_names_the_mistake(checker, answer, hint) -> None:
    with pytest.raises(AssertionError, match=hint):
        checker(*answer)
