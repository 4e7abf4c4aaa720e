"""Lesson 02 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch

from vfm_course.course.exercises.vit import check_patchify, check_sincos_pos_embed_2d
from vfm_course.layers import patchify, sincos_pos_embed_1d, sincos_pos_embed_2d


def channel_first_patchify(imgs, p):
    B, C, H, W = imgs.shape
    grid = imgs.reshape(B, C, H // p, p, W // p, p)  # (B, C, Gh, P, Gw, P)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), -1)


def plain_reshape_patchify(imgs, p):
    B, C, H, W = imgs.shape
    return imgs.reshape(B, (H // p) * (W // p), -1)


def unfinished(*args):
    raise NotImplementedError


def test_patchify_checker(capsys):
    assert check_patchify(patchify)
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(AssertionError, match=r"\(C, P, P\) order"):
        check_patchify(channel_first_patchify)
    with pytest.raises(AssertionError, match="plain reshape"):
        check_patchify(plain_reshape_patchify)
    with pytest.raises(AssertionError, match="shape"):
        check_patchify(lambda x, p: x)
    with pytest.raises(AssertionError, match="not finished"):
        check_patchify(unfinished)


def swapped_sincos(D, G):
    ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    ex = sincos_pos_embed_1d(D // 2, xs.reshape(-1).float())
    ey = sincos_pos_embed_1d(D // 2, ys.reshape(-1).float())
    return torch.cat([ey, ex], dim=1)


def test_sincos_checker(capsys):
    assert check_sincos_pos_embed_2d(lambda D, G: sincos_pos_embed_2d(D, G))
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="rows and columns are swapped"):
        check_sincos_pos_embed_2d(swapped_sincos)
    with pytest.raises(AssertionError, match="wrong values"):
        check_sincos_pos_embed_2d(lambda D, G: sincos_pos_embed_2d(D, G) * 0.5)
    with pytest.raises(AssertionError, match="not finished"):
        check_sincos_pos_embed_2d(unfinished)
