"""Attention from scratch: explicit, multi-head, masked, and memory-efficient (online softmax).

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need")::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V

``scaled_dot_product_attention`` writes that formula out and builds the full (L, S) score matrix.
``chunked_attention`` computes the same numbers while walking over key/value chunks with an
online softmax (Milakov & Gimelshein 2018), so only an (L, chunk) slice of scores ever exists:
the idea behind memory-efficient attention (Rabe & Staats 2021) and FlashAttention (Dao et al.
2022), in plain PyTorch. ``Attention`` is multi-head self-attention with timm's parameter names,
so weights load one-to-one from ``timm.models.vision_transformer.Attention`` and, through
``load_from_torch_mha``, from ``torch.nn.MultiheadAttention``.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True where
a query *may attend* to a key; a float mask is *added* to the scores (use ``-inf`` to block).
Either must broadcast to the score shape (..., L, S). ``is_causal=True`` lets query i see keys
0..i (top-left aligned, as in torch). A query row whose keys are all blocked gets zero weights and
a zero output, as torch's SDPA does (softmax of an all ``-inf`` row would be NaN).
"""

from __future__ import annotations

import math

import torch

from ..core.validate import check_positive_int, check_tensor

ATTN_IMPLS = ("sdpa", "explicit", "chunked")


def causal_mask(
    L: int, S: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (L, S) mask, True on and below the diagonal: query i may attend keys 0..i."""
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S)


def padding_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    """Boolean (B, 1, 1, S) key mask from per-sequence lengths: True for real tokens.

    The two singleton dimensions broadcast over heads and queries: padded keys are hidden from
    every query of every head.
    """
    check_tensor(lengths, "lengths", ndim=1)
    keep = torch.arange(S, device=lengths.device) < lengths[:, None]  # (B, S)
    return keep[:, None, None, :]  # (B, 1, 1, S)


def _check_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[tuple[int, ...], int, int]:
    """Validate q (..., L, d), k (..., S, d), v (..., S, dv); return (batch shape, L, S)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, floating=True)
        if t.ndim < 2:
            raise ValueError(
                f"{name} must have at least 2 dimensions (..., tokens, width), "
                f"got shape {tuple(t.shape)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head width d to take dot products: "
            f"q has d={q.shape[-1]}, k has d={k.shape[-1]}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of tokens S (one value per key): "
            f"k has S={k.shape[-2]}, v has S={v.shape[-2]}"
        )
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch/head) dimensions of q {tuple(q.shape)}, k {tuple(k.shape)} and "
            f"v {tuple(v.shape)} do not broadcast together"
        ) from None
    return tuple(batch), q.shape[-2], k.shape[-2]


def check_attn_mask(attn_mask: object, is_causal: bool, score_shape: tuple[int, ...]) -> None:
    """Validate an SDPA-style mask against the (..., L, S) score shape it must broadcast to."""
    if attn_mask is None:
        return
    if is_causal:
        raise ValueError(
            "pass either attn_mask or is_causal=True, not both (as torch's SDPA): "
            "combine them yourself, e.g. attn_mask & causal_mask(L, S)"
        )
    check_tensor(attn_mask, "attn_mask")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            f"attn_mask must be bool (True = may attend) or float (added to the scores), "
            f"got {attn_mask.dtype}"
        )
    try:
        ok = torch.broadcast_shapes(attn_mask.shape, score_shape) == torch.Size(score_shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the "
            f"score shape (..., L, S) = {tuple(score_shape)}"
        )


def _resolve_scale(scale: float | None, d: int) -> float:
    # 1/sqrt(d): q.k sums d products, so its variance grows like d; dividing by sqrt(d) keeps
    # the scores at unit scale and the softmax out of saturation (Vaswani et al. 2017, sec 3.2.1).
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def _add_mask(scores: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    if attn_mask is None:
        return scores
    if attn_mask.dtype == torch.bool:
        return scores.masked_fill(~attn_mask, float("-inf"))
    return scores + attn_mask.to(scores.dtype)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + mask) v, written out.

    q (..., L, d), k (..., S, d), v (..., S, dv) -> (..., L, dv); with ``return_weights`` also
    the attention weights (..., L, S), whose rows sum to 1 (0 for fully masked rows).
    ``scale`` defaults to 1/sqrt(d). Masks: see the module docstring.
    """
    batch, L, S = _check_qkv(q, k, v)
    check_attn_mask(attn_mask, is_causal, (*batch, L, S))
    if is_causal:
        attn_mask = causal_mask(L, S, device=q.device)  # (L, S)
    scale = _resolve_scale(scale, q.shape[-1])

    scores = (q @ k.transpose(-2, -1)) * scale  # (..., L, S): one dot product per query-key pair
    if attn_mask is None:
        weights = scores.softmax(dim=-1)  # (..., L, S): normalise over the keys
    else:
        scores = _add_mask(scores, attn_mask)
        # A row with every key blocked is all -inf and its softmax is 0/0 = NaN. Like torch's
        # SDPA, give it zero weights: compute the softmax on a harmless row, then zero it.
        blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., L, 1)
        weights = scores.masked_fill(blocked, 0.0).softmax(dim=-1).masked_fill(blocked, 0.0)
    out = weights @ v  # (..., L, dv): weighted average of the values
    return (out, weights) if return_weights else out


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    chunk_size: int = 128,
) -> torch.Tensor:
    """Memory-efficient attention: the same result, never holding the (L, S) score matrix.

    q (..., L, d), k (..., S, d), v (..., S, dv) -> (..., L, dv). Keys and values are read
    ``chunk_size`` at a time; an online softmax (Milakov & Gimelshein 2018) keeps per query a
    running max ``m``, a running denominator ``l`` and an unnormalised output ``acc``. When a new
    chunk raises the max from m to m', the old sums are rescaled by exp(m - m') so every term ends
    up as exp(s - final max), exactly as in one big softmax. Peak memory is O(L * chunk) instead
    of O(L * S) -- the trick of Rabe & Staats (2021) and, fused into one GPU kernel, of
    FlashAttention (Dao et al. 2022). This saves memory in the forward pass; under autograd the
    per-chunk intermediates are kept for backward (FlashAttention recomputes them instead).
    """
    batch, L, S = _check_qkv(q, k, v)
    check_positive_int(chunk_size, "chunk_size")
    check_attn_mask(attn_mask, is_causal, (*batch, L, S))
    scale = _resolve_scale(scale, q.shape[-1])
    # Running statistics in fp32 for half-precision inputs, as FlashAttention does.
    acc_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    query_idx = torch.arange(L, device=q.device)[:, None]  # (L, 1), for the causal mask
    q = q * scale  # scale the (L, d) queries once, not every (L, chunk) block of scores

    acc = q.new_zeros((*batch, L, v.shape[-1]), dtype=acc_dtype)  # sum_j exp(s_j - m) v_j
    row_max = q.new_full((*batch, L, 1), float("-inf"), dtype=acc_dtype)  # m
    row_sum = q.new_zeros((*batch, L, 1), dtype=acc_dtype)  # l = sum_j exp(s_j - m)
    for start in range(0, S, chunk_size):
        end = min(start + chunk_size, S)
        k_c, v_c = k[..., start:end, :], v[..., start:end, :]  # (..., c, d), (..., c, dv)
        s = (q @ k_c.transpose(-2, -1)).to(acc_dtype)  # (..., L, c)
        if attn_mask is not None:
            # A mask of key-width 1 broadcasts over all keys: use it whole for every chunk.
            s = _add_mask(s, attn_mask if attn_mask.shape[-1] == 1 else attn_mask[..., start:end])
        if is_causal:
            key_idx = torch.arange(start, end, device=q.device)[None, :]  # (1, c)
            s = s.masked_fill(key_idx > query_idx, float("-inf"))  # (..., L, c)

        # The max is only a shift for numerical safety: softmax(s) = softmax(s - m) for any m,
        # so it carries no gradient and can be detached (FlashAttention treats it the same way).
        new_max = torch.maximum(row_max, s.detach().amax(dim=-1, keepdim=True))  # (..., L, 1)
        # Rows that have seen only blocked keys so far keep max -inf; subtract 0 there instead,
        # so exp(-inf - (-inf)) = NaN never happens.
        safe_max = new_max.masked_fill(torch.isneginf(new_max), 0.0)  # (..., L, 1)
        # This chunk's unnormalised weights, computed in place: s is not needed any more.
        p = s.sub_(safe_max).exp_()  # (..., L, c)
        rescale = torch.exp(row_max - safe_max)  # (..., L, 1): old max -> new max
        row_sum = row_sum * rescale + p.sum(dim=-1, keepdim=True)
        acc = acc * rescale + p @ v_c.to(acc_dtype)  # (..., L, dv)
        row_max = new_max
        del s, p  # free this chunk's (L, c) block before the next chunk makes its own
    # Divide once at the end; fully blocked rows have l = 0 and acc = 0 -> output 0, like SDPA.
    out = acc / row_sum.masked_fill(row_sum == 0, 1.0)  # (..., L, dv)
    return out.to(q.dtype)
