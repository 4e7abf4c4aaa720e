"""The transformer block of a ViT: pre-norm attention and MLP, each in a residual branch.

``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``. Normalising *inside* the residual branch
("pre-LN", Xiong et al. 2020) leaves an identity path from input to output, so gradients reach
early layers undamped and the model trains without the learning-rate warm-up that the original
post-LN Transformer needed. The ViT paper uses this layout (Dosovitskiy et al. 2021, Eq. 2-3).

Names follow timm (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.act``, ``mlp.fc2``) so a
block's weights load into ``timm.models.vision_transformer.Block`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.validate import check_choice, check_positive_int
from .multihead import Attention

# timm's ViT LayerNorm epsilon (PyTorch's default is 1e-5); matching it keeps logits identical.
LN_EPS = 1e-6

# The Linear-weight schemes init_linear knows (ViTConfig.weight_init takes the same names).
LINEAR_INITS = ("mae", "timm")


@torch.no_grad()
def init_linear(m: nn.Linear, scheme: str = "mae") -> None:
    """A Linear layer's init, zero bias and: ``"mae"`` MAE's (and the JAX ViT's)
    ``xavier_uniform_`` weight, or ``"timm"`` timm's trunc-normal(0.02) weight.

    Xavier scales each weight to its fan-in and fan-out, std = sqrt(2 / (in + out)): 0.072 for
    a (96 -> 288) qkv projection, against timm's fixed 0.02, so attention logits start large
    enough to differ between tokens. Any other ``scheme`` is refused, so a typo cannot fall
    back to one of the two silently."""
    check_choice(scheme, "scheme", LINEAR_INITS)
    if scheme == "timm":
        nn.init.trunc_normal_(m.weight, std=0.02)
    else:
        nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


class Mlp(nn.Module):
    """Position-wise feed-forward network: Linear -> GELU -> Linear, applied to every token.

    GELU is the exact (erf) form, as in the ViT paper and timm's default ``nn.GELU()``.

    Args:
        in_features: ``D``.
        hidden_features: ``F`` (a ViT uses ``4 * D``); default ``in_features``.
        out_features: output width; default ``in_features``.

    Shapes:
        forward: (..., D) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        check_positive_int(in_features, "in_features")
        check_positive_int(hidden_features, "hidden_features")
        check_positive_int(out_features, "out_features")
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., out_features)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (Xiong et al. 2020; ViT, Dosovitskiy et al. 2021).

    Args:
        dim: ``D``, token width.
        num_heads: ``h``; must divide ``dim`` (each head gets ``d = D // h`` channels).
        mlp_ratio: ``F / D``, MLP hidden width as a multiple of ``D`` (4 in the ViT paper).
        qkv_bias: whether the query/key/value projection has a bias (timm's ViT default: True).
        attn_impl: ``"sdpa"`` (PyTorch's fused kernel, fastest), ``"explicit"`` (softmax of
            ``q k^T / sqrt(d)``, as written in lesson 01) or ``"chunked"`` (online softmax).

    Shapes:
        forward: (B, L, D) -> (B, L, D); ``attn_mask`` is passed to the attention unchanged.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_heads, "num_heads")
        hidden = int(dim * mlp_ratio)  # int() like timm, so fractional ratios give equal widths
        if hidden <= 0:
            raise ValueError(
                f"mlp_ratio must be > 0 (MLP width = dim * mlp_ratio), got {mlp_ratio}"
            )
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden_features=hidden)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        # Residual branches: each sublayer adds a correction to the stream, never replaces it.
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        x = x + self.mlp(self.norm2(x))
        return x
