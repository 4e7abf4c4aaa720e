"""Multi-head attention: split the width into heads, attend in each, merge back, project.

:class:`Attention` has timm's parameter names (``qkv``, ``proj``) and can load the weights of
``nn.MultiheadAttention`` (:func:`load_from_torch_mha`); its kernel is one of
:data:`~vfm_course.layers.attention.ATTN_IMPLS`. Shapes: x (B, L, D) -> (B, L, D); heads
(B, h, L, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_choice, check_heads, check_positive_int, check_tensor
from .attention import ATTN_IMPLS, check_attn_mask, chunked_attention, scaled_dot_product_attention


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, h, L, d) with d = D // h: head i gets channels [i*d, (i+1)*d)."""
    check_tensor(x, "x", ndim=3)
    check_positive_int(num_heads, "num_heads")
    B, L, D = x.shape
    check_heads(D, num_heads)
    x = x.reshape(B, L, num_heads, D // num_heads)  # (B, L, h, d)
    return x.transpose(1, 2)  # (B, h, L, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d) -> (B, L, D) with D = h * d, the inverse of ``split_heads``."""
    check_tensor(x, "x", ndim=4)
    B, h, L, d = x.shape
    x = x.transpose(1, 2)  # (B, L, h, d)
    return x.reshape(B, L, h * d)  # (B, L, D); reshape copies, since the transpose is a view


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
        check_heads(dim, num_heads)
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
        check_attn_mask(attn_mask, False, (B, self.num_heads, L, L))
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
