"""Attention kernels and module: parity with torch SDPA, nn.MultiheadAttention, timm; bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vfm_course.layers import (
    Attention,
    causal_mask,
    chunked_attention,
    load_from_torch_mha,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    split_heads,
)

ATOL, RTOL = 1e-5, 1e-5


def qkv(*batch: int, L: int = 7, S: int = 11, d: int = 16, dv: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*batch, L, d, generator=g),
        torch.randn(*batch, S, d, generator=g),
        torch.randn(*batch, S, dv, generator=g),
    )


def masks(L: int = 7, S: int = 11, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bool_mask = torch.rand(L, S, generator=g) > 0.3
    bool_mask[:, 0] = True  # every query sees at least one key
    return {
        "bool": bool_mask,
        "float": torch.randn(L, S, generator=g),
        "float_inf": torch.zeros(L, S).masked_fill(~bool_mask, float("-inf")),
        "padding": padding_mask(torch.tensor([11, 4]), S),  # (B, 1, 1, S)
        "per_head": torch.rand(2, 3, L, S, generator=g) > 0.2,
    }


# --- explicit kernel vs torch SDPA --------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
@pytest.mark.parametrize(("L", "S"), [(7, 11), (11, 7), (1, 1), (16, 16)])
def test_explicit_matches_sdpa(batch: tuple[int, ...], L: int, S: int) -> None:
    q, k, v = qkv(*batch, L=L, S=S)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )


@pytest.mark.parametrize("kind", ["bool", "float", "float_inf", "padding", "per_head"])
def test_explicit_matches_sdpa_with_masks(kind: str) -> None:
    q, k, v = qkv(2, 3)
    mask = masks()[kind]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), want)


@pytest.mark.parametrize(("L", "S"), [(7, 7), (7, 11), (11, 7)])
def test_explicit_matches_sdpa_causal_and_scale(L: int, S: int) -> None:
    q, k, v = qkv(2, 3, L=L, S=S)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, scale=0.3),
        F.scaled_dot_product_attention(q, k, v, scale=0.3),
    )


def test_causal_mask_helper_equals_is_causal() -> None:
    q, k, v = qkv(2, L=5, S=8)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal_mask(5, 8)),
        scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def test_weights_rows_sum_to_one_and_fully_masked_rows_are_zero_like_sdpa() -> None:
    q, k, v = qkv(2, L=4, S=6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2] = False  # query 2 may attend to nothing
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert w.shape == (2, 4, 6)
    torch.testing.assert_close(w.sum(-1)[:, [0, 1, 3]], torch.ones(2, 3))
    assert torch.equal(w[:, 2], torch.zeros(2, 6)) and torch.equal(out[:, 2], torch.zeros(2, 8))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(chunked_attention(q, k, v, mask, chunk_size=4), out)
    # and no NaN gradient leaks out of the blocked row
    q.requires_grad_(True)
    scaled_dot_product_attention(q, k, v, mask).sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[:, 2], torch.zeros(2, 16))


# --- chunked (online softmax) vs explicit -------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 64])
def test_chunked_matches_explicit(chunk_size: int) -> None:
    q, k, v = qkv(2, 3)
    want = scaled_dot_product_attention(q, k, v)
    got = chunked_attention(q, k, v, chunk_size=chunk_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["bool", "float", "float_inf", "padding", "per_head"])
@pytest.mark.parametrize("chunk_size", [3, 5])
def test_chunked_matches_explicit_with_masks(kind: str, chunk_size: int) -> None:
    q, k, v = qkv(2, 3)
    mask = masks()[kind]
    want = scaled_dot_product_attention(q, k, v, mask)
    got = chunked_attention(q, k, v, mask, chunk_size=chunk_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("L", "S", "chunk_size"), [(7, 11, 3), (11, 7, 2), (16, 16, 5)])
def test_chunked_matches_sdpa_causal_and_scale(L: int, S: int, chunk_size: int) -> None:
    q, k, v = qkv(2, 3, L=L, S=S)
    for kwargs in [{"is_causal": True}, {"scale": 0.7}]:
        want = F.scaled_dot_product_attention(q, k, v, **kwargs)
        got = chunked_attention(q, k, v, chunk_size=chunk_size, **kwargs)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_chunked_handles_large_scores_and_half_precision() -> None:
    q, k, v = qkv(2, L=8, S=20)
    q = q * 30  # scores in the hundreds: exp overflows without the running max
    torch.testing.assert_close(
        chunked_attention(q, k, v, chunk_size=6), F.scaled_dot_product_attention(q, k, v)
    )
    qb, kb, vb = (t.bfloat16() for t in qkv(2, L=8, S=20))
    got = chunked_attention(qb, kb, vb, chunk_size=6)
    assert got.dtype == torch.bfloat16
    want = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float())
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_gradients_flow_and_match() -> None:
    q, k, v = (t.requires_grad_(True) for t in qkv(2, 3))
    mask = masks()["bool"]
    grad_out = torch.randn(2, 3, 7, 8)
    grads = {}
    for name, fn in {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "explicit": lambda: scaled_dot_product_attention(q, k, v, mask),
        "chunked": lambda: chunked_attention(q, k, v, mask, chunk_size=4),
    }.items():
        grads[name] = torch.autograd.grad(fn(), (q, k, v), grad_out)
    for name in ("explicit", "chunked"):
        for got, want in zip(grads[name], grads["sdpa"], strict=True):
            assert got.abs().sum() > 0
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# --- heads ---------------------------------------------------------------------------------------


def test_split_merge_round_trip_and_layout() -> None:
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])  # head 1 owns channels 4..7
    assert torch.equal(merge_heads(heads), x)


# --- the module ----------------------------------------------------------------------------------


def test_attention_matches_timm_with_strict_state_dict() -> None:
    from timm.models.vision_transformer import Attention as TimmAttention

    torch.manual_seed(0)
    ours, theirs = Attention(48, num_heads=3).eval(), TimmAttention(48, 3, qkv_bias=True).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 10, 48)
    mask = masks(10, 10)["bool"]
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        torch.testing.assert_close(ours(x, mask), theirs(x, attn_mask=mask))


@pytest.mark.parametrize("bias", [True, False])
def test_attention_matches_torch_mha(bias: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(48, 4, batch_first=True, bias=bias).eval()
    ours = load_from_torch_mha(Attention(48, num_heads=4, qkv_bias=bias), mha).eval()
    x = torch.randn(3, 9, 48)
    allowed = masks(9, 9)["bool"]
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(ours(x), want, atol=ATOL, rtol=RTOL)
        # torch MHA's boolean mask is True where attention is *blocked*: the opposite of SDPA.
        want = mha(x, x, x, attn_mask=~allowed, need_weights=False)[0]
        torch.testing.assert_close(ours(x, allowed), want, atol=ATOL, rtol=RTOL)


def test_attention_impls_agree_and_store_attn() -> None:
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 12, 32)
    mask = masks(12, 12)["bool"]
    outs = {}
    for impl in ("sdpa", "explicit", "chunked"):
        attn.attn_impl = impl
        outs[impl] = attn(x, mask)
    torch.testing.assert_close(outs["explicit"], outs["sdpa"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(outs["chunked"], outs["sdpa"], atol=ATOL, rtol=RTOL)
    assert attn.attn_weights is None
    attn.store_attn = True
    torch.testing.assert_close(attn(x, mask), outs["sdpa"], atol=ATOL, rtol=RTOL)
    w = attn.attn_weights
    assert w.shape == (2, 4, 12, 12) and not w.requires_grad
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 12))


def test_attention_gradients_reach_every_parameter() -> None:
    attn = Attention(16, num_heads=2, attn_impl="chunked")
    attn(torch.randn(2, 5, 16)).pow(2).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="width 100 is not divisible by 3 heads"):
        Attention(100, num_heads=3)
    with pytest.raises(ValueError, match="width 10 is not divisible by 4 heads"):
        split_heads(torch.randn(2, 3, 10), 4)
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        Attention(16, 2, attn_impl="flash")
    attn = Attention(16, num_heads=2)
    with pytest.raises(ValueError, match="x must have 3 dimensions, got 2"):
        attn(torch.randn(5, 16))
    with pytest.raises(ValueError, match="x has width 8 but this Attention was built for dim 16"):
        attn(torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        attn(torch.ones(2, 5, 16, dtype=torch.long))
    with pytest.raises(
        ValueError, match="does not broadcast to the score shape .* \\(2, 2, 5, 5\\)"
    ):
        attn(torch.randn(2, 5, 16), torch.ones(4, 4, dtype=torch.bool))
    q, k, v = qkv(2)
    with pytest.raises(ValueError, match="same head width d .* q has d=16, k has d=8"):
        scaled_dot_product_attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match="k has S=11, v has S=10"):
        chunked_attention(q, k, v[:, :10])
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        chunked_attention(q, k, v, chunk_size=0)
    with pytest.raises(ValueError, match="attn_mask of shape \\(3, 11\\) does not broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 11, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be bool .* or float"):
        chunked_attention(q, k, v, torch.ones(7, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="either attn_mask or is_causal=True, not both"):
        scaled_dot_product_attention(q, k, v, masks()["bool"], is_causal=True)
    with pytest.raises(ValueError, match="embed_dim=32"):
        load_from_torch_mha(attn, nn.MultiheadAttention(32, 2))
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_from_torch_mha(Attention(16, 2, qkv_bias=False), nn.MultiheadAttention(16, 2))
