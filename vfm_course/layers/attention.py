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
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_choice, check_positive_int, check_tensor

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


def _check_mask(attn_mask: object, is_causal: bool, score_shape: tuple[int, ...]) -> None:
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
    _check_mask(attn_mask, is_causal, (*batch, L, S))
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
    _check_mask(attn_mask, is_causal, (*batch, L, S))
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


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, h, L, d) with d = D // h: head i gets channels [i*d, (i+1)*d)."""
    check_tensor(x, "x", ndim=3)
    check_positive_int(num_heads, "num_heads")
    B, L, D = x.shape
    _check_heads(D, num_heads)
    x = x.reshape(B, L, num_heads, D // num_heads)  # (B, L, h, d)
    return x.transpose(1, 2)  # (B, h, L, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d) -> (B, L, D) with D = h * d, the inverse of ``split_heads``."""
    check_tensor(x, "x", ndim=4)
    B, h, L, d = x.shape
    x = x.transpose(1, 2)  # (B, L, h, d)
    return x.reshape(B, L, h * d)  # (B, L, D); reshape copies, since the transpose is a view


def _check_heads(dim: int, num_heads: int) -> None:
    if dim % num_heads != 0:
        raise ValueError(
            f"width {dim} is not divisible by {num_heads} heads: each head gets width // heads "
            f"channels, so pick a head count that divides the width"
        )


class Attention(nn.Module):
    """Multi-head self-attention, parameter-compatible with timm's ``vision_transformer.Attention``.

    forward: x (B, L, D) -> (B, L, D). ``attn_mask`` (optional) broadcasts to (B, h, L, L), with
    the SDPA convention (bool True = may attend; float is added). ``attn_impl`` picks the kernel:
    ``"sdpa"`` (``F.scaled_dot_product_attention``, fastest), ``"explicit"`` or ``"chunked"``
    (this module's from-scratch kernels). Set ``store_attn = True`` to keep the attention weights
    of the last forward in ``attn_weights`` (B, h, L, L), detached (computed with the explicit
    kernel, since the fused one never forms them).
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_impl: str = "sdpa"
    ) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_heads, "num_heads")
        _check_heads(dim, num_heads)
        check_choice(attn_impl, "attn_impl", ATTN_IMPLS)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_impl = attn_impl
        self.store_attn = False
        self.attn_weights: torch.Tensor | None = None
        # One matmul makes q, k and v for every head: rows [W_q; W_k; W_v] (timm and torch layout).
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor(x, "x", ndim=3, floating=True)
        B, L, D = x.shape
        if D != self.dim:
            raise ValueError(f"x has width {D} but this Attention was built for dim {self.dim}")
        _check_mask(attn_mask, False, (B, self.num_heads, L, L))
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # (B, L, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, L, d)

        if self.store_attn:
            out, weights = scaled_dot_product_attention(q, k, v, attn_mask, return_weights=True)
            self.attn_weights = weights.detach()  # (B, h, L, L)
        elif self.attn_impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif self.attn_impl == "explicit":
            out = scaled_dot_product_attention(q, k, v, attn_mask)
        else:
            out = chunked_attention(q, k, v, attn_mask)
        # out: (B, h, L, d)
        return self.proj(merge_heads(out))  # (B, L, D)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, attn_impl={self.attn_impl!r}"


def load_from_torch_mha(attn: Attention, mha: nn.MultiheadAttention) -> Attention:
    """Copy an ``nn.MultiheadAttention``'s weights into ``attn`` (in place); return ``attn``.

    Afterwards ``attn(x)`` equals ``mha(x, x, x, need_weights=False)[0]`` for a ``batch_first``
    mha. The layouts agree: ``in_proj_weight`` stacks [W_q; W_k; W_v] by rows, and within each
    block head i owns rows [i*d, (i+1)*d), just as timm's reshape (B, L, 3, h, d) reads ``qkv``.
    Note torch's MHA mask convention is the opposite of SDPA's: its boolean ``attn_mask`` is
    True where attention is *blocked*, so ``mha(..., attn_mask=~m)`` matches ``attn(x, m)``.
    """
    if not isinstance(attn, Attention):
        raise TypeError(f"attn must be a vfm_course Attention, got {type(attn).__name__}")
    if not isinstance(mha, nn.MultiheadAttention):
        raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
    if mha.embed_dim != attn.dim or mha.num_heads != attn.num_heads:
        raise ValueError(
            f"shape mismatch: mha has embed_dim={mha.embed_dim}, num_heads={mha.num_heads}; "
            f"attn has dim={attn.dim}, num_heads={attn.num_heads}"
        )
    if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("only plain self-attention MHA (no kdim/vdim, add_bias_kv, add_zero_attn)")
    if mha.in_proj_bias is not None and attn.qkv.bias is None:
        raise ValueError("mha has an in_proj_bias: build Attention(..., qkv_bias=True) to hold it")
    with torch.no_grad():
        attn.qkv.weight.copy_(mha.in_proj_weight)  # (3D, D)
        if attn.qkv.bias is not None:
            if mha.in_proj_bias is None:
                attn.qkv.bias.zero_()
            else:
                attn.qkv.bias.copy_(mha.in_proj_bias)  # (3D,)
        attn.proj.weight.copy_(mha.out_proj.weight)  # (D, D)
        if mha.out_proj.bias is None:
            attn.proj.bias.zero_()
        else:
            attn.proj.bias.copy_(mha.out_proj.bias)  # (D,)
    return attn
