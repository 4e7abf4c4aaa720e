"""Lesson 02 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.vit import check_patchify, check_sincos_pos_embed_2d
from vfm_course.layers import patchify, sincos_pos_embed_1d, sincos_pos_embed_2d


def channel_first_patchify(imgs, p):
    B, C, H, W = imgs.shape
    grid = imgs.reshape(B, C, H // p, p, W // p, p)  # (B, C, Gh, P, Gw, P)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), -1)


def plain_reshape_patchify(imgs, p):
    B, C, H, W = imgs.shape
    return imgs.reshape(B, (H // p) * (W // p), -1)


def test_patchify_checker(capsys):
    assert check_patchify(patchify)
    assert capsys.readouterr().out.startswith("✓")


def swapped_sincos(D, G):
    ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    ex = sincos_pos_embed_1d(D // 2, xs.reshape(-1).float())
    ey = sincos_pos_embed_1d(D // 2, ys.reshape(-1).float())
    return torch.cat([ey, ex], dim=1)


def test_sincos_checker(capsys):
    assert check_sincos_pos_embed_2d(lambda D, G: sincos_pos_embed_2d(D, G))
    assert "✓" in capsys.readouterr().out


# Each checker rejects a known-wrong (or unfinished) answer with the hint that names the mistake.
WRONG_ANSWERS = [
    pytest.param(check_patchify, (channel_first_patchify,), r"\(C, P, P\) order", id="patchify-0"),
    pytest.param(check_patchify, (plain_reshape_patchify,), "plain reshape", id="patchify-1"),
    pytest.param(check_patchify, (lambda x, p: x,), "shape", id="patchify-2"),
    pytest.param(check_patchify, (unfinished,), "not finished", id="patchify-3"),
    pytest.param(
        check_sincos_pos_embed_2d,
        (swapped_sincos,),
        "rows and columns are swapped",
        id="sincos_pos_embed_2d-4",
    ),
    pytest.param(
        check_sincos_pos_embed_2d,
        (lambda D, G: sincos_pos_embed_2d(D, G) * 0.5,),
        "wrong values",
        id="sincos_pos_embed_2d-5",
    ),
    pytest.param(
        check_sincos_pos_embed_2d, (unfinished,), "not finished", id="sincos_pos_embed_2d-6"
    ),
]


@pytest.mark.parametrize("checker, answer, hint", WRONG_ANSWERS)
def test_checker_names_the_mistake(checker, answer, hint) -> None:
    with pytest.raises(AssertionError, match=hint):
        checker(*answer)
