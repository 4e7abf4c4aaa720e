"""Masked autoencoders (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

Hide most of an image's patches (75%), encode only the visible ones with a ViT, and let a small
decoder repaint the hidden patches' pixels. Two design choices make it work and make it fast:

* **Asymmetric encoder/decoder.** The encoder (the course ViT, built from its public parts
  ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm``) never sees mask tokens,
  only the ``N_keep = N / 4`` visible patches, so pre-training costs a fraction of a full pass.
  A narrow, shallow decoder then gets the full sequence: encoded visible tokens plus one shared
  learned ``mask_token`` in every hidden slot, with its own position embeddings.
* **A hard, pixel-level task.** The loss is the mean squared error on the *masked* patches only,
  against each patch's pixels normalised by that patch's own mean and variance
  (``norm_pix_loss``, which the paper found gives better representations).

Parameter names follow facebookresearch/mae ``models_mae.py`` (``decoder_embed``,
``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``);
the encoder keeps timm's names under ``encoder.``, so it loads into a ViT for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.configs import config_from_dict
from ..core.inference import eval_mode
from ..core.validate import check_heads, check_positive_int, check_tensor, resolve_config
from ..layers.blocks import LN_EPS, Block, init_linear
from ..layers.masking import check_mask_ratio, insert_mask_tokens, num_kept, random_masking
from ..layers.patches import patchify, unpatchify
from ..layers.pos_embed import sincos_pos_embed_2d
from .vit import VisionTransformer, ViTConfig, vit_config

# MAE's epsilon in the per-patch normalisation (keeps flat, single-colour patches finite).
NORM_PIX_EPS = 1e-6


@dataclass(frozen=True)
class MAEConfig:
    """A masked autoencoder: a ViT backbone (``encoder``, built with ``num_classes=0``), a
    decoder of ``decoder_depth`` blocks of width ``decoder_embed_dim``, the fraction of patches
    hidden during training (``mask_ratio``) and whether targets are per-patch normalised."""

    encoder: ViTConfig
    decoder_embed_dim: int = 64
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, ViTConfig):
            raise TypeError(
                f"encoder must be a ViTConfig (e.g. vit_config('vit_course_tiny', num_classes=0)), "
                f"got {type(self.encoder).__name__}"
            )
        if self.encoder.num_classes != 0:
            raise ValueError(
                f"the MAE encoder is a backbone; build it with num_classes=0 "
                f"(got num_classes={self.encoder.num_classes})"
            )
        for name in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
            check_positive_int(getattr(self, name), name)
        check_heads(
            self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim", "decoder_num_heads"
        )
        if self.decoder_embed_dim % 4 != 0:
            raise ValueError(
                f"decoder_embed_dim must be divisible by 4 for the decoder's 2-D sin-cos position "
                f"embedding, got {self.decoder_embed_dim}"
            )
        ratio = check_mask_ratio(self.mask_ratio)
        if ratio == 0.0:
            raise ValueError(
                "mask_ratio must be > 0: the MAE loss is computed on the masked patches only, "
                "so with nothing masked there is nothing to learn (0.75 is the paper's choice)"
            )
        num_kept(self.encoder.num_patches, ratio)  # at least one visible patch
        if not isinstance(self.norm_pix_loss, bool):
            raise TypeError(f"norm_pix_loss must be True or False, got {self.norm_pix_loss!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MAEConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)  # lesson 04 pretrains one MAE at each

MAE_PRESETS: dict[str, MAEConfig] = {
    # The course backbone (32x32 RGB shapes, 8x8 grid of 4x4 patches) with MAE's sin-cos
    # position embeddings; a 2-block, 64-wide decoder, narrower and shallower than the encoder
    # as in MAE (whose default decoder costs < 10% of the encoder's compute per token).
    "mae_course_tiny": MAEConfig(vit_config("vit_course_tiny", num_classes=0, pos_embed="sincos")),
    # The same model with raw-pixel targets (the paper's ablation, Table 1d), for comparison.
    "mae_course_tiny_pixels": MAEConfig(
        vit_config("vit_course_tiny", num_classes=0, pos_embed="sincos"), norm_pix_loss=False
    ),
    # The same model at each pretraining mask ratio of lesson 04's curve (MAE, Fig. 5).
    **{
        f"mae_course_tiny_mask{round(100 * r)}": MAEConfig(
            vit_config("vit_course_tiny", num_classes=0, pos_embed="sincos"), mask_ratio=r
        )
        for r in MASK_RATIOS
    },
    # The full profile's models (GPU, real photos): ViT-Tiny width with a 4-block, 128-wide
    # decoder, at 32 px (CIFAR-10) and 96 px with 8 px patches (STL-10).
    "mae_course_small": MAEConfig(
        vit_config("vit_course_small", num_classes=0, pos_embed="sincos"),
        decoder_embed_dim=128,
        decoder_depth=4,
        decoder_num_heads=4,
    ),
    "mae_course_small_96": MAEConfig(
        vit_config(
            "vit_course_small", img_size=96, patch_size=8, num_classes=0, pos_embed="sincos"
        ),
        decoder_embed_dim=128,
        decoder_depth=4,
        decoder_num_heads=4,
    ),
}


class MaskedAutoencoder(nn.Module):
    """ViT encoder on the visible patches + light decoder that predicts the masked pixels.

    Args:
        cfg: an :class:`MAEConfig`, or the name of a preset in :data:`MAE_PRESETS`.

    Shapes:
        forward: (B, C, H, W) images -> (loss scalar, pred (B, N, P*P*C), mask (B, N)).
    """

    def __init__(self, cfg: MAEConfig | str) -> None:
        super().__init__()
        cfg = resolve_config(cfg, MAE_PRESETS, MAEConfig, "MAE")
        self.cfg = cfg
        enc = cfg.encoder
        dd = cfg.decoder_embed_dim
        self.patch_size = enc.patch_size
        self.num_prefix_tokens = int(enc.class_token)

        self.encoder = VisionTransformer(enc)
        self.decoder_embed = nn.Linear(enc.embed_dim, dd)
        # One learned vector stands in for every hidden patch; only its position differs.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        # Fixed 2-D sin-cos positions (MAE): the decoder must know *where* each mask token is.
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed_2d(dd, enc.grid_size, enc.class_token)[None],  # (1, L, Dd)
            requires_grad=False,
        )
        self.decoder_blocks = nn.Sequential(
            *[
                Block(dd, cfg.decoder_num_heads, enc.mlp_ratio, True, enc.attn_impl)
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=LN_EPS)
        self.decoder_pred = nn.Linear(dd, enc.patch_size**2 * enc.in_chans)  # pixels per patch
        self._init_decoder()

    @torch.no_grad()
    def _init_decoder(self) -> None:
        """The encoder keeps the ViT's own init; the decoder gets the same convention as MAE's
        code: xavier-uniform Linear weights, zero biases; the mask token normal(0.02)."""
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_pred):
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    init_linear(m)

    # ------------------------------------------------------------------------------- encoder

    def forward_encoder(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches of ``imgs`` (B, C, H, W).

        Returns:
            ``(latent, mask, ids_restore)``: latent (B, [1+]N_keep, D) (class token first if
            the encoder has one), mask (B, N) with 1 = removed, ids_restore (B, N).
        """
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        enc = self.encoder
        x = enc.patch_embed(imgs)  # (B, N, D); checks the images
        # Add positions *before* masking: the kept tokens must remember where they came from.
        x = x + enc.pos_embed[:, self.num_prefix_tokens :]  # (B, N, D)
        x, mask, ids_restore, _ = random_masking(x, ratio, noise, generator)  # x (B, N_keep, D)
        if enc.cls_token is not None:
            cls = enc.cls_token + enc.pos_embed[:, :1]  # (1, 1, D)
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N_keep, D)
        # The encoder only ever sees the visible tokens: with 75% masked its sequence is 4x
        # shorter, so its attention matrices are 16x smaller and every linear layer does 4x less
        # work -- that is where MAE's pre-training speed-up comes from.
        x = enc.blocks(x)
        # With global_pool="avg" the ViT's last LayerNorm is fc_norm (after pooling) and `norm`
        # is an identity; MAE pre-training then leaves fc_norm at its init.
        x = enc.norm(x)
        return x, mask, ids_restore

    # ------------------------------------------------------------------------------- decoder

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch's pixels from the encoded visible tokens.

        Args:
            latent: (B, [1+]N_keep, D) from :meth:`forward_encoder`.
            ids_restore: (B, N) from :meth:`forward_encoder`.

        Returns:
            pred (B, N, P*P*C) in ``patchify`` order (normalised pixels if ``norm_pix_loss``).
        """
        enc_cfg = self.cfg.encoder
        n, prefix = enc_cfg.num_patches, self.num_prefix_tokens
        latent = check_tensor(latent, "latent", ndim=3, floating=True)
        ids_restore = check_tensor(ids_restore, "ids_restore", shape=(latent.shape[0], n))
        if latent.shape[-1] != enc_cfg.embed_dim or not prefix < latent.shape[1] <= prefix + n:
            raise ValueError(
                f"latent must be (B, [1+]N_keep, D) with D = {enc_cfg.embed_dim} and "
                f"1 <= N_keep <= {n}; got {tuple(latent.shape)} (pass forward_encoder's output)"
            )
        x = self.decoder_embed(latent)  # (B, [1+]N_keep, Dd)
        # Mask tokens appended, then everything unshuffled to the patches' order: (B, L, Dd).
        x = insert_mask_tokens(x, self.mask_token, ids_restore, prefix)
        x = x + self.decoder_pos_embed  # (B, L, Dd)
        x = self.decoder_blocks(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # (B, L, P*P*C)
        return x[:, prefix:]  # (B, N, P*P*C), drop the class slot

    # ---------------------------------------------------------------------------------- loss

    def patch_targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the decoder must predict: (B, C, H, W) -> (B, N, P*P*C) patch pixels, each patch
        normalised by its own mean and (unbiased) variance if ``norm_pix_loss`` (MAE Sec. 3)."""
        target = patchify(imgs, self.patch_size)  # (B, N, P*P*C)
        if self.cfg.norm_pix_loss:
            # Local contrast normalisation: the decoder need not guess each patch's brightness
            # and contrast, only its structure, which learns better features (MAE Table 1d).
            mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
            var = target.var(dim=-1, keepdim=True)  # (B, N, 1), unbiased as in MAE
            target = (target - mean) / (var + NORM_PIX_EPS) ** 0.5
        return target

    def forward_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean over masked patches of the per-patch MSE between ``pred`` and the targets.

        Args:
            imgs: (B, C, H, W). pred: (B, N, P*P*C). mask: (B, N), 1 = removed (at least one).
        """
        target = self.patch_targets(imgs)  # (B, N, P*P*C)
        pred = check_tensor(pred, "pred", shape=tuple(target.shape))
        mask = check_tensor(mask, "mask", shape=tuple(target.shape[:2]))
        return masked_patch_loss(pred, target, mask)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> ``(loss, pred (B, N, P*P*C), mask (B, N))``."""
        if mask_ratio is not None and check_mask_ratio(mask_ratio) == 0.0:
            raise ValueError(
                "mask_ratio=0 masks nothing, and the MAE loss is computed on the masked patches "
                "only; use forward_encoder(imgs, mask_ratio=0.0) to encode whole images"
            )
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise, generator)
        pred = self.forward_decoder(latent, ids_restore)  # (B, N, P*P*C)
        return self.forward_loss(imgs, pred, mask), pred, mask

    # ------------------------------------------------------------------------------ pictures

    @torch.no_grad()
    def reconstruct(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Images for plots (inputs expected in [0, 1]); every value is (B, C, H, W):

        * ``"masked"``: the visible patches, the removed ones grey (0.5);
        * ``"reconstruction"``: the prediction of every patch, mapped back to pixels with each
          patch's true mean and std when ``norm_pix_loss`` (as MAE's demo), clamped to [0, 1];
        * ``"pasted"``: the original visible patches with the predicted masked ones.
        """
        with eval_mode(self):
            latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, None, generator)
            pred = self.forward_decoder(latent, ids_restore).float()  # (B, N, P*P*C)
        p, c = self.patch_size, imgs.shape[1]
        patches = patchify(imgs, p).float()  # (B, N, P*P*C)
        if self.cfg.norm_pix_loss:
            mean = patches.mean(dim=-1, keepdim=True)  # (B, N, 1)
            var = patches.var(dim=-1, keepdim=True)  # (B, N, 1)
            pred = pred * (var + NORM_PIX_EPS) ** 0.5 + mean
        pred = pred.clamp(0, 1)
        hidden = mask.bool()[..., None]  # (B, N, 1)
        grid = self.cfg.encoder.grid_size
        to_image = lambda x: unpatchify(x, p, grid, c)  # (B, N, P*P*C) -> (B, C, H, W)
        return {
            "masked": to_image(patches.masked_fill(hidden, 0.5)),
            "reconstruction": to_image(pred),
            "pasted": to_image(torch.where(hidden, pred, patches)),
        }


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-patch mean squared error, averaged over the masked patches only (MAE Sec. 3).

    pred, target (B, N, K) patches; mask (B, N), 1 = removed, 0 = visible. A visible patch's
    pixels went into the encoder, so "predicting" it is copying, which teaches nothing about
    images: it does not count.
    """
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()
