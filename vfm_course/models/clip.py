"""Mini-CLIP (Radford et al. 2021): an image tower and a text tower trained to agree.

::

    images (B, C, H, W) -> VisionTransformer -> (B, D) -> image_projection -> L2-normalise
    captions -> Tokenizer -> (B, T) -> TextTransformer -> (B, width) -> text_projection -> ...
    logits_per_image (B, B) = exp(logit_scale) * image_embeddings @ text_embeddings.T

:func:`clip_loss` makes that a B-way classification in both directions: each image must pick
its own caption among the batch's captions, and each caption its own image. Afterwards class
names wrapped in prompts ("a photo of a {}") are a classifier with no labelled training:
zero-shot (:func:`zero_shot_weights`, :func:`zero_shot_predict`).

At course scale the text side is a word-level tokenizer over the words the shapes captions use
(plus a few prompt words) and a small causal transformer. E is the shared embedding width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.configs import config_from_dict
from ..core.validate import check_positive_int, is_number, resolve_config
from ..data.tokenizer import build_vocab
from .text import TextConfig, TextTransformer
from .vit import VisionTransformer, ViTConfig, vit_config

# --- the two towers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CLIPConfig:
    """Both towers and the shared space: ``image`` a ViT without head (``num_classes=0``),
    ``text`` the text transformer, ``embed_dim`` E, and the initial softmax temperature."""

    image: ViTConfig
    text: TextConfig
    embed_dim: int = 64
    init_temperature: float = 0.07

    def __post_init__(self) -> None:
        if not isinstance(self.image, ViTConfig):
            raise TypeError(f"image must be a ViTConfig, got {type(self.image).__name__}")
        if not isinstance(self.text, TextConfig):
            raise TypeError(f"text must be a TextConfig, got {type(self.text).__name__}")
        if self.image.num_classes != 0:
            raise ValueError(
                f"the image tower must have no head (num_classes=0), got num_classes="
                f"{self.image.num_classes}; CLIP projects the pooled features instead"
            )
        check_positive_int(self.embed_dim, "embed_dim")
        # Below 0.01 the logit scale would start above the clamp at 100 and get no gradient.
        if not is_number(self.init_temperature) or not 0.01 <= self.init_temperature:
            raise ValueError(f"init_temperature must be >= 0.01, got {self.init_temperature!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CLIPConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d, "the CLIP config")


CLIP_PRESETS: dict[str, CLIPConfig] = {
    # The course backbone as image tower, a 2-block text tower, a 64-d shared space.
    # timm's init for both towers: with MAE's xavier init the image tower's pooled features got
    # better (linear probe 0.981) but its patch tokens worse for lesson 06's dense heads
    # (CenterNet mAP@0.5 0.397 against 0.808), so the shipped checkpoint keeps timm's.
    "clip_course_tiny": CLIPConfig(
        image=vit_config("vit_course_tiny", num_classes=0, weight_init="timm"),
        text=TextConfig(vocab_size=len(build_vocab())),
    ),
}

# CLIP clips the learned logit scale at 100 (temperature 0.01): beyond it training becomes
# unstable, since the softmax saturates and a few pairs dominate the gradient.
MAX_LOGIT_SCALE = 100.0


class CLIP(nn.Module):
    """Image and text towers with linear projections into one E-dimensional space.

    Args:
        cfg: a :class:`CLIPConfig`, or the name of a preset in :data:`CLIP_PRESETS`.

    Shapes:
        encode_image: (B, C, H, W) -> (B, E), unit-norm rows.
        encode_text: (B', T) token ids -> (B', E), unit-norm rows.
        forward: images (B, C, H, W), tokens (B', T) -> logits_per_image (B, B').
    """

    def __init__(self, cfg: CLIPConfig | str) -> None:
        super().__init__()
        cfg = resolve_config(cfg, CLIP_PRESETS, CLIPConfig, "CLIP")
        self.cfg = cfg
        self.encoder = VisionTransformer(cfg.image)  # the image tower (one name in every model)
        self.text = TextTransformer(cfg.text)
        self.image_projection = nn.Linear(cfg.image.embed_dim, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.width, cfg.embed_dim, bias=False)
        # The temperature is learned, as log(1 / tau): exp keeps it positive, and the log
        # makes equal steps equal ratios. CLIP starts at tau = 0.07 (from InstDisc / MoCo).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))
        for proj in (self.image_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)  # CLIP's projection init

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, E) unit-norm embeddings."""
        features = self.encoder(images)  # (B, D), pooled (the ViT has no head)
        return F.normalize(self.image_projection(features), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, E) unit-norm embeddings."""
        return F.normalize(self.text_projection(self.text(tokens)), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at :data:`MAX_LOGIT_SCALE`: 1 / temperature, a 0-d tensor."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities, logits_per_image (B, B'); its transpose is per text."""
        img = self.encode_image(images)  # (B, E)
        txt = self.encode_text(tokens)  # (B', E)
        return self.scale() * img @ txt.T  # (B, B')
