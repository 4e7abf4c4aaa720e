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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import config_from_dict
from .data import SPLIT_SEEDS, images_to_tensor
from .shapes import (
    ShapesConfig,
    generate_shapes,
)
from .text import TextConfig, TextTransformer, Tokenizer, build_vocab
from .validate import check_choice, check_positive_int, check_tensor, resolve_config
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
        if not isinstance(self.init_temperature, (int, float)) or not 0.01 <= self.init_temperature:
            raise ValueError(f"init_temperature must be >= 0.01, got {self.init_temperature!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CLIPConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d, "the CLIP config")


CLIP_PRESETS: dict[str, CLIPConfig] = {
    # The course backbone as image tower, a 2-block text tower, a 64-d shared space.
    "clip_course_tiny": CLIPConfig(
        image=vit_config("vit_course_tiny", num_classes=0),
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
        self.visual = VisionTransformer(cfg.image)
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
        features = self.visual(images)  # (B, D), pooled (the ViT has no head)
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


# --- the loss ----------------------------------------------------------------------------------


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a (B, B) logit matrix whose matching pairs are on the
    diagonal: the mean of image->text (rows) and text->image (columns) classification."""
    logits = check_tensor(logits_per_image, "logits_per_image", ndim=2, floating=True)
    B = logits.shape[0]
    if logits.shape[1] != B:
        raise ValueError(
            f"logits_per_image must be square (B images x B captions), got {tuple(logits.shape)}"
        )
    if B < 2:
        raise ValueError("clip_loss needs a batch of at least 2 pairs (1 pair has no negatives)")
    targets = torch.arange(B, device=logits.device)  # image i belongs with caption i
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def clip_loss_fn() -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit` with batch = (images, tokens).

    Logs ``acc_i2t`` (fraction of images whose own caption scores highest) and ``temperature``.
    """

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("a CLIP batch must be a pair (images, tokens), e.g. from BatchLoader")
        images, tokens = batch
        logits = model(images, tokens)  # (B, B)
        targets = torch.arange(len(logits), device=logits.device)
        acc = (logits.argmax(dim=1) == targets).float().mean().item()
        return clip_loss(logits), {"acc_i2t": acc, "temperature": 1 / model.scale().item()}

    return loss_fn


# --- zero-shot classification ------------------------------------------------------------------


def zero_shot_weights(
    model: CLIP,
    tokenizer: Tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}",),
) -> torch.Tensor:
    """A (K, E) classifier from text alone: per class, the mean of its prompts' unit-norm
    embeddings, normalised again (CLIP's prompt ensembling)."""
    if isinstance(classnames, str) or not classnames:
        raise ValueError("classnames must be a non-empty list of class names, e.g. SHAPE_CLASSES")
    if isinstance(templates, str) or not templates:
        raise ValueError('templates must be a non-empty list of prompts such as "a photo of a {}"')
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f'the template {t!r} has no "{{}}" where the class name goes')
    K, n_t = len(classnames), len(templates)
    prompts = [t.format(c) for c in classnames for t in templates]  # class-major
    tokens = tokenizer.encode(prompts).to(next(model.parameters()).device)  # (K * n_t, T)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            emb = model.encode_text(tokens).reshape(K, n_t, -1)  # (K, n_t, E)
    finally:
        model.train(was_training)
    return F.normalize(emb.mean(dim=1), dim=-1)  # (K, E)


def zero_shot_predict(
    model: CLIP, images: torch.Tensor, weights: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Class ids int64 (n,) for images (n, C, H, W): argmax of image embeddings @ weights.T."""
    check_tensor(images, "images", ndim=4, floating=True)
    check_tensor(weights, "weights", ndim=2, floating=True)
    check_positive_int(batch_size, "batch_size")
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to classify")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                img = model.encode_image(images[start : start + batch_size].to(device))  # (b, E)
                if img.shape[1] != weights.shape[1]:
                    raise ValueError(
                        f"weights have width {weights.shape[1]} but the image embeddings have "
                        f"{img.shape[1]}: build them with zero_shot_weights on the same model"
                    )
                preds.append((img @ weights.to(img).T).argmax(dim=1))  # (b,)
    finally:
        model.train(was_training)
    return torch.cat(preds).to(images.device)  # (n,)


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CaptionData:
    """Captioned shapes: ``images`` float32 (n, 3, H, W) in [0, 1], ``tokens`` int64 (n, T),
    ``labels`` and ``colours`` int64 (n,), ``captions`` the n sentences."""

    images: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    colours: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_caption_data(
    split: str,
    n: int,
    config: ShapesConfig = ShapesConfig(),  # noqa: B008 (frozen: a shared default is safe)
    tokenizer: Tokenizer | None = None,
) -> CaptionData:
    """The shapes world's ``split`` with its captions tokenized; the images are the same as
    ``data.load_shapes(split, n, config)`` (same seeds)."""
    check_choice(split, "split", tuple(SPLIT_SEEDS))
    tokenizer = Tokenizer() if tokenizer is None else tokenizer
    data = generate_shapes(n, config, seed=SPLIT_SEEDS[split])
    return CaptionData(
        images=images_to_tensor(data.images),
        tokens=tokenizer.encode(data.captions),
        labels=torch.from_numpy(data.labels),
        colours=torch.from_numpy(data.colours),
        captions=data.captions,
    )
