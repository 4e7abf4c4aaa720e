"""The Vision Transformer (Dosovitskiy et al. 2021), its presets, and the bridge to timm.

Image -> ``PatchEmbed`` -> prepend a learned class token -> add position embeddings -> ``depth``
pre-norm ``Block``s -> LayerNorm -> pool (class token, or mean of patch tokens) -> linear head.

Every parameter has timm's name and shape (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.attn.qkv``, ``norm``, ``fc_norm``, ``head``), so a state dict loads *strictly* into
``timm.models.vision_transformer.VisionTransformer`` built with :func:`timm_kwargs`, and both
models give the same logits (``to_timm`` / ``from_timm``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..core.validate import check_choice, check_divisible, check_heads, check_positive_int, is_int
from ..layers.blocks import LINEAR_INITS, LN_EPS, Block, init_linear
from ..layers.patches import PatchEmbed
from ..layers.pos_embed import sincos_pos_embed_2d

GLOBAL_POOLS = ("token", "avg")
POS_EMBEDS = ("learned", "sincos")
ATTN_IMPLS = ("sdpa", "explicit", "chunked")
WEIGHT_INITS = LINEAR_INITS  # how init_linear starts each Linear weight


@dataclass(frozen=True)
class ViTConfig:
    """Everything that defines a ViT's architecture. Frozen: derive variants with
    :func:`vit_config` (``vit_config("vit_course_tiny", depth=2)``).

    ``global_pool="token"`` classifies from the class token (ViT paper); ``"avg"`` from the mean
    of the patch tokens, which, as in timm, moves the final LayerNorm after the pooling
    (``fc_norm``) and leaves ``norm`` as an identity. ``pos_embed="sincos"`` fills the
    ``pos_embed`` parameter with fixed 2-D sin-cos values (MAE, He et al. 2022) and freezes it.
    ``num_classes=0`` gives a backbone without a head (``forward`` returns pooled features).
    ``weight_init`` is how Linear weights start: ``"mae"`` (xavier-uniform, the default) or
    ``"timm"`` (trunc-normal 0.02, timm's default), see :meth:`VisionTransformer.init_weights`.
    """

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    global_pool: str = "token"
    pos_embed: str = "learned"
    attn_impl: str = "sdpa"
    weight_init: str = "mae"

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            check_positive_int(getattr(self, name), name)
        if not is_int(self.num_classes):
            raise ValueError(f"num_classes must be an integer, got {self.num_classes!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no head), got {self.num_classes}")
        check_divisible(self.img_size, self.patch_size, "image size", "patch size")
        check_heads(self.embed_dim, self.num_heads, "embed_dim", "num_heads")
        if not self.mlp_ratio > 0 or int(self.embed_dim * self.mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        check_choice(self.global_pool, "global_pool", GLOBAL_POOLS)
        check_choice(self.pos_embed, "pos_embed", POS_EMBEDS)
        check_choice(self.attn_impl, "attn_impl", ATTN_IMPLS)
        check_choice(self.weight_init, "weight_init", WEIGHT_INITS)
        if self.global_pool == "token" and not self.class_token:
            raise ValueError(
                "global_pool='token' classifies from the class token, but class_token=False; "
                "use global_pool='avg' (mean of the patch tokens) or class_token=True"
            )
        if self.pos_embed == "sincos" and self.embed_dim % 4 != 0:
            raise ValueError(
                f"pos_embed='sincos' needs embed_dim divisible by 4 (sin and cos for each of the "
                f"2 image axes), got embed_dim {self.embed_dim}; use pos_embed='learned' instead"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Gh, Gw), the patch grid."""
        side = self.img_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        """N = Gh * Gw."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def seq_len(self) -> int:
        """L = N plus the class token if there is one."""
        return self.num_patches + int(self.class_token)


# name -> config; parameter counts (with the head) in the comments, checked in tests/test_vit.py.
PRESETS: dict[str, ViTConfig] = {
    # The course backbone: 32x32 RGB shapes, 8x8 grid of 4x4 patches. 459,174 params.
    "vit_course_tiny": ViTConfig(
        img_size=32, patch_size=4, in_chans=3, num_classes=6, embed_dim=96, depth=4, num_heads=3
    ),
    # scikit-learn's 8x8 grayscale digits: 4x4 grid of 2x2 patches. 152,202 params.
    "vit_course_digits": ViTConfig(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=3, num_heads=4
    ),
    # The full (GPU) profile's CIFAR-10 model: ViT-Tiny width at 32x32. 2,693,578 params.
    "vit_course_small": ViTConfig(
        img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=6, num_heads=3
    ),
    # timm's vit_tiny_patch16_224 (DeiT-Ti width), for pretrained weights. 5,717,416 params.
    "vit_tiny_patch16_224": ViTConfig(
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        embed_dim=192,
        depth=12,
        num_heads=3,
    ),
}


def vit_config(name: str, **overrides: object) -> ViTConfig:
    """Return preset ``name`` with some fields replaced, e.g. ``vit_config("vit_course_tiny",
    global_pool="avg")``. The result is validated like any ``ViTConfig``."""
    if name not in PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; the presets are: {', '.join(PRESETS)}")
    fields = [f.name for f in dataclasses.fields(ViTConfig)]
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise ValueError(
            f"ViTConfig has no field(s) {unknown}; the fields are: {', '.join(fields)}"
        )
    return dataclasses.replace(PRESETS[name], **overrides)


class VisionTransformer(nn.Module):
    """ViT classifier with timm's parameter names (see the module docstring).

    Args:
        cfg: a :class:`ViTConfig`, or the name of a preset in :data:`PRESETS`.

    Shapes:
        forward: (B, C, H, W) images -> (B, K) logits (or (B, D) features if ``num_classes=0``).
    """

    def __init__(self, cfg: ViTConfig | str) -> None:
        super().__init__()
        if isinstance(cfg, str):
            cfg = vit_config(cfg)
        if not isinstance(cfg, ViTConfig):
            raise TypeError(f"cfg must be a ViTConfig or a preset name, got {type(cfg).__name__}")
        self.cfg = cfg
        d = cfg.embed_dim
        # timm-style attributes, so code written for timm's ViT reads this one too.
        self.num_classes = cfg.num_classes
        self.global_pool = cfg.global_pool
        self.embed_dim = self.num_features = d
        self.num_prefix_tokens = int(cfg.class_token)
        self.has_class_token = cfg.class_token

        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, d)
        # The class token is a learned "summary" slot that attends to every patch (ViT paper,
        # after BERT's [CLS]); its output is what the head reads when global_pool="token".
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        # One row per token including the class token (timm/original ViT layout): (1, L, D).
        self.pos_embed = nn.Parameter(
            torch.zeros(1, cfg.seq_len, d), requires_grad=cfg.pos_embed == "learned"
        )
        self.blocks = nn.Sequential(
            *[
                Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.attn_impl)
                for _ in range(cfg.depth)
            ]
        )
        # timm: with average pooling the final LayerNorm is applied to the pooled vector
        # (fc_norm) instead of to every token (norm). Mirroring it keeps state dicts identical.
        use_fc_norm = cfg.global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(d, eps=LN_EPS)
        self.fc_norm = nn.LayerNorm(d, eps=LN_EPS) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """MAE's ViT init (He et al. 2022, after the JAX ViT): ``xavier_uniform_`` for every
        Linear weight, zero biases; a learned ``pos_embed`` trunc-normal(0.02), a near-zero
        class token; the patch conv keeps PyTorch's default init.

        Why not timm's trunc-normal(0.02) Linear weights: at the course's width (D = 96) that is
        about a quarter of xavier's scale, every attention row starts almost exactly uniform,
        and the tiny ViT sat at chance on the course world for hundreds of steps. The README's
        "How the course world was chosen" table has the measurements. ``weight_init="timm"``
        keeps timm's init (the mini-CLIP's image tower: see ``CLIP_PRESETS``)."""
        if self.cfg.pos_embed == "sincos":
            table = sincos_pos_embed_2d(self.embed_dim, self.cfg.grid_size, self.has_class_token)
            self.pos_embed.copy_(table[None])  # (1, L, D)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m, self.cfg.weight_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, L, D) tokens after the last block and ``norm``."""
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D), a view, no copy
            x = torch.cat([cls, x], dim=1)  # (B, L, D)
        x = x + self.pos_embed  # (B, L, D), broadcast over the batch
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, L, D) tokens -> (B, K) logits, or the (B, D) pooled features if ``pre_logits``."""
        if self.global_pool == "token":
            x = x[:, 0]  # (B, D), the class token
        else:
            x = x[:, self.num_prefix_tokens :].mean(dim=1)  # (B, D), mean over patch tokens
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, K) logits (``patch_embed`` checks the images)."""
        return self.forward_head(self.forward_features(x))

    def get_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention probabilities of every block for images ``x``.

        Returns:
            ``depth`` tensors of shape (B, h, L, L); row ``i`` of a map is how token ``i``
            spreads its attention over all tokens (each row sums to 1). The maps are detached
            (for plotting); they come from the explicit kernel, since a fused one never forms them.
        """
        attns = [blk.attn for blk in self.blocks]
        previous = [a.store_attn for a in attns]
        try:
            for a in attns:
                a.store_attn = True
            self.forward_features(x)
            return [a.attn_weights for a in attns]
        finally:
            for a, p in zip(attns, previous, strict=True):
                a.store_attn = p
                a.attn_weights = None  # do not keep (B, h, L, L) tensors alive on the module

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` if ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def no_weight_decay(self) -> set[str]:
        """Parameters that AdamW should not decay (timm's convention)."""
        return {"pos_embed", "cls_token"}
