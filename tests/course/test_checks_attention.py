"""Lesson 01 checkers pass the reference and fail known-wrong answers with the right hint."""

import math

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.attention import (
    check_attention,
    check_online_softmax_attention,
    check_split_merge_heads,
)
from vfm_course.layers import (
    chunked_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)

# --- check_attention ----------------------------------------------------------------------------


def good_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def no_scale(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def wrong_dim(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-2) @ v


def mask_ignored(q, k, v, mask=None):
    return good_attention(q, k, v)


def mask_inverted(q, k, v, mask=None):
    return good_attention(q, k, v, None if mask is None else ~mask)


def returns_weights(q, k, v, mask=None):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)


def crashes(q, k, v, mask=None):
    return q @ k  # forgot the transpose


def in_place_float64(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])  # edits its input: the checker must not be fooled by that
    scores = (q @ k.transpose(-2, -1)).double()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v.double()


def test_check_attention_passes_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_attention(good_attention) is True
    assert check_attention(in_place_float64) is True
    assert check_attention(lambda q, k, v, m=None: scaled_dot_product_attention(q, k, v, m))
    assert capsys.readouterr().out.startswith("✓ attention matches")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_scale, "forget the 1/sqrt\\(d\\) scale"),
        (wrong_dim, "softmax over the wrong dimension"),
        (mask_ignored, "mask seems to be ignored"),
        (mask_inverted, "mask looks inverted"),
        (returns_weights, "output has shape \\(2, 3, 5, 5\\), expected \\(2, 3, 5, 8\\)"),
        (unfinished, "exercise not finished yet"),
        (crashes, "your function raised RuntimeError.*return q @ k"),
        (42, "expected a function, got int"),
    ],
)
def test_check_attention_fails_wrong_answers(fn, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_attention(fn)


# --- check_split_merge_heads --------------------------------------------------------------------


def split_no_transpose(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, num_heads, L, D // num_heads)


def merge_no_transpose(x):
    B, h, L, d = x.shape
    return x.reshape(B, L, h * d)


def merge_with_view(x):
    B, h, L, d = x.shape
    return x.transpose(1, 2).view(B, L, h * d)


def test_check_split_merge_passes_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_split_merge_heads(split_heads, merge_heads) is True
    assert capsys.readouterr().out.startswith("✓ ")


@pytest.mark.parametrize(
    ("split_fn", "merge_fn", "message"),
    [
        (split_no_transpose, merge_heads, "reshaped straight to \\(B, h, L, d\\)"),
        (split_heads, merge_no_transpose, "transpose\\(1, 2\\) back"),
        (split_heads, merge_with_view, "not contiguous: use .reshape"),
        (unfinished, merge_heads, "exercise not finished yet"),
        (split_heads, unfinished, "exercise not finished yet"),
    ],
)
def test_check_split_merge_fails_wrong_answers(split_fn, merge_fn, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_split_merge_heads(split_fn, merge_fn)


# --- check_online_softmax_attention -------------------------------------------------------------


def online(q, k, v, chunk_size, rescale_acc=True, rescale_sum=True, scale=True):
    """A learner-style online-softmax attention with switchable mistakes."""
    if scale:
        q = q / math.sqrt(q.shape[-1])
    acc = torch.zeros(*q.shape[:-1], v.shape[-1])
    m = torch.full((*q.shape[:-1], 1), float("-inf"))
    total = torch.zeros(*q.shape[:-1], 1)
    for start in range(0, k.shape[-2], chunk_size):
        s = q @ k[..., start : start + chunk_size, :].transpose(-2, -1)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p, r = torch.exp(s - m_new), torch.exp(m - m_new)
        total = (total * r if rescale_sum else total) + p.sum(-1, keepdim=True)
        acc = (acc * r if rescale_acc else acc) + p @ v[..., start : start + chunk_size, :]
        m = m_new
    return acc / total


def full_matrix(q, k, v, chunk_size):
    return scaled_dot_product_attention(q, k, v)  # right values, but holds the (L, S) matrix


def test_check_online_passes_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_online_softmax_attention(online) is True
    assert check_online_softmax_attention(
        lambda q, k, v, c: chunked_attention(q, k, v, None, chunk_size=c)
    )
    assert capsys.readouterr().out.startswith("✓ online-softmax attention matches")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda q, k, v, c: online(q, k, v, c, rescale_acc=False), "rescale the accumulated"),
        (lambda q, k, v, c: online(q, k, v, c, rescale_sum=False), "rescale the running denom"),
        (lambda q, k, v, c: online(q, k, v, c, scale=False), "1/sqrt\\(d\\) scale"),
        (full_matrix, "peak memory .* close to the explicit"),
        (unfinished, "exercise not finished yet"),
    ],
)
def test_check_online_fails_wrong_answers(fn, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_online_softmax_attention(fn)
