"""The course ViT and timm's ``VisionTransformer``: the same parameter names, so weights
map one to one (the parity tests build both from one config and compare logits).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.blocks import LN_EPS
from ..layers.pos_embed import sincos_pos_embed_2d
from .vit import VisionTransformer, ViTConfig

# ----------------------------------------------------------------------------- timm bridge


def timm_kwargs(cfg: ViTConfig) -> dict[str, object]:
    """Keyword arguments for ``timm.models.vision_transformer.VisionTransformer`` that build
    the same architecture as ``cfg`` (timm has no sin-cos option: the values travel in the
    ``pos_embed`` tensor, see :func:`to_timm`)."""
    return dict(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool=cfg.global_pool,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        class_token=cfg.class_token,
    )


def to_timm(model: VisionTransformer) -> nn.Module:
    """Build timm's ``VisionTransformer`` with ``model``'s config and weights (strict load),
    on the same device and dtype and in the same train/eval mode."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    ref = next(model.parameters())
    timm_model = TimmViT(**timm_kwargs(model.cfg)).to(device=ref.device, dtype=ref.dtype)
    timm_model.load_state_dict(model.state_dict(), strict=True)
    timm_model.pos_embed.requires_grad_(model.pos_embed.requires_grad)
    return timm_model.train(model.training)


def _config_from_timm(timm_model: nn.Module) -> ViTConfig:
    """Read a ``ViTConfig`` off a timm ViT; refuse features this course ViT does not have."""
    pe = timm_model.patch_embed
    if (
        pe.img_size is None
        or pe.img_size[0] != pe.img_size[1]
        or pe.patch_size[0] != pe.patch_size[1]
    ):
        raise ValueError("from_timm supports square images and patches only")
    blk = timm_model.blocks[0]
    unsupported = {
        "register tokens": getattr(timm_model, "num_reg_tokens", 0) > 0,
        "no_embed_class": getattr(timm_model, "no_embed_class", False),
        "pre_norm": not isinstance(timm_model.norm_pre, nn.Identity),
        "attention pooling": getattr(timm_model, "attn_pool", None) is not None,
        "layer scale": not isinstance(blk.ls1, nn.Identity),
        "a non-GELU or approximate-GELU MLP": not (
            type(blk.mlp.act) is nn.GELU and blk.mlp.act.approximate == "none"
        ),
        "LayerNorm eps other than 1e-6": getattr(blk.norm1, "eps", None) != LN_EPS,
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"this timm model uses {', '.join(found)}, which the course ViT lacks")
    d = timm_model.embed_dim
    pos = timm_model.pos_embed
    grid = pe.img_size[0] // pe.patch_size[0]
    sincos = (
        pos is not None
        and not pos.requires_grad
        and d % 4 == 0
        and torch.allclose(
            pos.detach().float().cpu()[0],
            sincos_pos_embed_2d(d, grid, timm_model.cls_token is not None),
            atol=1e-6,
        )
    )
    return ViTConfig(
        img_size=pe.img_size[0],
        patch_size=pe.patch_size[0],
        in_chans=pe.proj.in_channels,
        num_classes=timm_model.num_classes,
        embed_dim=d,
        depth=len(timm_model.blocks),
        num_heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / d,
        qkv_bias=blk.attn.qkv.bias is not None,
        class_token=timm_model.cls_token is not None,
        global_pool=timm_model.global_pool,
        pos_embed="sincos" if sincos else "learned",
    )


def from_timm(timm_model: nn.Module, cfg: ViTConfig | None = None) -> VisionTransformer:
    """Build a course ``VisionTransformer`` holding ``timm_model``'s weights (strict load).

    The config is read off the timm model unless ``cfg`` is given. ``pos_embed`` is recognised
    as "sincos" when timm's tensor is frozen and equals the 2-D sin-cos table.
    """
    cfg = cfg or _config_from_timm(timm_model)
    model = VisionTransformer(cfg)
    ref = next(timm_model.parameters())
    model.to(device=ref.device, dtype=ref.dtype)
    try:
        model.load_state_dict(timm_model.state_dict(), strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"the timm model's weights do not match ViTConfig {cfg}; "
            f"they differ in names or shapes:\n{err}"
        ) from None
    return model.train(timm_model.training)
