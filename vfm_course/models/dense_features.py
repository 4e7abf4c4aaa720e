"""Dense prediction from patch tokens, and semantic segmentation on top of it.

A ViT's patch tokens already form a low-resolution feature map: token ``n`` belongs to grid
cell ``(n // Gw, n % Gw)``. Dropping the class token and folding the sequence back into the grid
gives a (B, D, Gh, Gw) map that any dense head can read (SETR, Zheng et al. 2021; Segmenter,
Strudel et al. 2021; DINOv2's linear segmentation probe, Oquab et al. 2023).

The course encoders were pretrained on 32x32 images; lesson 06's scenes are 64x64. The encoder
is weight-shared over patches, so only the position embedding depends on the image size:
:func:`resize_vit` rebuilds the ViT for the new size and resamples the grid part of
``pos_embed`` bicubically (ViT paper, section 3.2; timm's ``resample_abs_pos_embed``).

Heads: ``"linear"`` is a per-token linear classifier (a 1x1 conv) whose (B, K, Gh, Gw) logits
are upsampled bilinearly to the image (the "linear" baseline of Segmenter and DINOv2);
``"conv"`` is a small decoder that upsamples progressively, x2 at a time, with a 3x3 conv after
each step (SETR-PUP, simplified), so it can draw edges finer than one patch.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..core.validate import check_tensor
from ..layers.pos_embed import resample_pos_embed
from .vit import VisionTransformer


def resize_vit(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """A copy of ``model`` that takes ``img_size`` x ``img_size`` images.

    Every weight is copied; ``pos_embed`` is resampled with :func:`resample_pos_embed`. A frozen
    sin-cos table (MAE) is resampled too rather than recomputed, so the positions stay in the
    range the encoder was trained on (MAE's fine-tuning code does the same).
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model must be a course VisionTransformer, got {type(model).__name__}")
    cfg = dataclasses.replace(model.cfg, img_size=img_size)  # validates the size vs the patch
    new = VisionTransformer(cfg)
    state = dict(model.state_dict())
    state["pos_embed"] = resample_pos_embed(
        model.pos_embed.detach(), cfg.grid_size, model.num_prefix_tokens
    )
    new.load_state_dict(state, strict=True)
    ref = next(model.parameters())
    return new.to(device=ref.device, dtype=ref.dtype).train(model.training)


def tokens_to_feature_map(
    tokens: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """(B, L, D) encoder tokens -> (B, D, Gh, Gw) feature map of the patch tokens.

    Patches are numbered row by row (``PatchEmbed`` flattens the conv output that way), so the
    patch tokens reshape straight into the grid.
    """
    check_tensor(tokens, "tokens", ndim=3, floating=True)
    gh, gw = grid_size
    B, L, D = tokens.shape
    if L != num_prefix_tokens + gh * gw:
        raise ValueError(
            f"tokens have length {L}, but a {gh}x{gw} patch grid plus {num_prefix_tokens} "
            f"prefix token(s) needs {num_prefix_tokens + gh * gw}"
        )
    x = tokens[:, num_prefix_tokens:]  # (B, N, D)
    return x.transpose(1, 2).reshape(B, D, gh, gw)  # (B, D, Gh, Gw)


class DenseEncoder(nn.Module):
    """A course ViT used as a dense feature extractor: images -> (B, D, Gh, Gw).

    Args:
        encoder: a course ``VisionTransformer`` (e.g. from ``recipes.load_course_encoder``).
        img_size: the image side the dense model will see; the encoder is resized with
            :func:`resize_vit` if it differs (``None``: keep the encoder's size).
        frozen: if True the encoder's weights get no gradient and it runs under ``no_grad``
            (a "linear probe" of dense features); if False it is fine-tuned with the head.

    Shapes:
        forward: (B, C, H, W) -> (B, D, H / P, W / P).
    """

    def __init__(
        self, encoder: VisionTransformer, img_size: int | None = None, frozen: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(
                f"encoder must be a course VisionTransformer, got {type(encoder).__name__}"
            )
        if img_size is not None and img_size != encoder.cfg.img_size:
            encoder = resize_vit(encoder, img_size)
        self.encoder = encoder
        self.frozen = bool(frozen)
        self.embed_dim = encoder.embed_dim
        self.patch_size = encoder.cfg.patch_size
        self.grid_size = encoder.cfg.grid_size
        if self.frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> DenseEncoder:
        """Like ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D, Gh, Gw) features (the encoder checks the images)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.encoder.forward_features(images)  # (B, L, D)
        return tokens_to_feature_map(tokens, self.grid_size, self.encoder.num_prefix_tokens)
