"""Contrastive self-supervised learning: augmentations, NT-Xent / InfoNCE, and SimCLR.

SimCLR (Chen et al. 2020) learns features without labels: two random augmentations ("views")
of the same image must map to nearby vectors, views of different images to distant ones. The
loss, NT-Xent, is InfoNCE (van den Oord et al. 2018) written as a classification: each of the
2B views must pick its partner out of the 2B-1 other views in the batch.

The augmentations run on whole batches in plain torch (each image gets its own random crop,
flip, colours and blur, with no per-image Python loop), so they run on the GPU beside the
model. Each one is a small function with torchvision's formula, tested equal to torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, two_views
from .checkpoint import config_from_dict
from .cnn import SmallCNN
from .validate import check_choice, check_positive_int, check_tensor, resolve_config
from .vit import VisionTransformer, ViTConfig, vit_config

# ----------------------------------------------------------------------------- the loss


def _check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    return float(temperature)


def nt_xent_logits(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent as a (2B-1)-way classification: the logits and the index of the right answer.

    Stack the views as z = [z1; z2], so view i and view i + B (mod 2B) come from the same image.
    After L2-normalising, ``sim[i, j] = cos(z_i, z_j) / temperature``. Row i loses its diagonal
    (a view trivially matches itself), leaving 2B-1 candidates; removing column i shifts every
    later column one place left, so the partner j = (i + B) mod 2B lands at column j if j < i,
    else j - 1: targets are ``i + B - 1`` for the first B rows and ``i - B`` for the rest.

    Args:
        z1, z2: (B, D) embeddings of the two views, row i of each from the same image.
        temperature: t > 0; small t sharpens the softmax onto the hardest negatives.

    Returns:
        logits (2B, 2B-1) and targets (2B,) int64, for ``F.cross_entropy(logits, targets)``.
    """
    z1 = check_tensor(z1, "z1", ndim=2, floating=True)
    z2 = check_tensor(z2, "z2", ndim=2, floating=True)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (B, D), got {tuple(z1.shape)} "
            f"and {tuple(z2.shape)}"
        )
    B = z1.shape[0]
    if B < 2:
        raise ValueError(
            f"NT-Xent needs at least 2 images: with one there are no negatives (got B = {B})"
        )
    t = _check_temperature(temperature)
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # (2B, D), unit rows
    sim = z @ z.T / t  # (2B, 2B) cosine similarities / temperature
    off_diagonal = ~torch.eye(2 * B, dtype=torch.bool, device=z.device)
    logits = sim[off_diagonal].reshape(2 * B, 2 * B - 1)  # (2B, 2B-1), row-major order kept
    i = torch.arange(B, device=z.device)
    targets = torch.cat([i + B - 1, i])  # (2B,)
    return logits, targets


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy (Chen et al. 2020), i.e. InfoNCE
    (van den Oord et al. 2018) over the batch: the mean over all 2B views of
    ``-log(exp(s_pos / t) / sum over the 2B-1 other views of exp(s / t))``. Returns a scalar."""
    logits, targets = nt_xent_logits(z1, z2, temperature)
    return F.cross_entropy(logits, targets)


# ----------------------------------------------------------------------------- SimCLR


class ProjectionHead(nn.Module):
    """SimCLR's projection g(h): Linear -> BatchNorm1d -> ReLU -> Linear, (B, D) -> (B, out).

    The loss is computed on g(h), but downstream tasks (linear probe, kNN) read the encoder's
    h: the loss makes g invariant to colour, crop position, ... and g throws that information
    away, while h keeps it. SimCLR measured h > 10% better than g(h) in a linear probe (Sec. 4.2).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        for value, name in ((in_dim, "in_dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim")):
            check_positive_int(value, name)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(h))))


@dataclass(frozen=True)
class SimCLRConfig:
    """A SimCLR model and its objective: a ViT backbone (``num_classes=0``), the projection
    head's widths, the NT-Xent temperature and the augmentations.

    ``arch="cnn"`` swaps the ViT for a :class:`~vfm_course.cnn.SmallCNN` of width
    ``cnn_width`` (features 4 * width; only ``encoder.in_chans`` is read), the encoder SimCLR
    itself used (a ResNet): lesson 03 compares the two under the same objective.
    """

    encoder: ViTConfig
    proj_hidden_dim: int = 256
    proj_dim: int = 64
    temperature: float = 0.2
    augment: AugmentConfig = AugmentConfig()
    arch: str = "vit"
    cnn_width: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, ViTConfig):
            raise TypeError(f"encoder must be a ViTConfig, got {type(self.encoder).__name__}")
        if self.encoder.num_classes != 0:
            raise ValueError(
                f"the SimCLR encoder is a backbone; build it with num_classes=0 "
                f"(got num_classes={self.encoder.num_classes})"
            )
        check_positive_int(self.proj_hidden_dim, "proj_hidden_dim")
        check_positive_int(self.proj_dim, "proj_dim")
        check_choice(self.arch, "arch", ("vit", "cnn"))
        check_positive_int(self.cnn_width, "cnn_width")
        _check_temperature(self.temperature)
        if not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SimCLRConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


SIMCLR_PRESETS: dict[str, SimCLRConfig] = {
    "simclr_course_tiny": SimCLRConfig(
        encoder=vit_config("vit_course_tiny", num_classes=0),
        augment=AugmentConfig(crop_scale=(0.5, 1.0)),
    ),
    # Full hue rotation: in the shapes world colour is drawn independently of the shape, and
    # without hue jitter the two views of an image share their hue, so matching colours is
    # enough to find the partner and the encoder never needs the shape (measured in lesson 03).
    "simclr_cnn_tiny": SimCLRConfig(
        encoder=vit_config("vit_course_tiny", num_classes=0),
        arch="cnn",
        augment=AugmentConfig(crop_scale=(0.5, 1.0), hue=0.5),
    ),
}


class SimCLR(nn.Module):
    """Encoder f (a ViT backbone, or a SmallCNN with ``arch="cnn"``) and projection g;
    ``forward`` gives z = g(f(x)) for the loss, ``features`` gives h = f(x) for evaluation.

    Shapes:
        forward: (B, C, H, W) -> (B, proj_dim); features: (B, C, H, W) -> (B, D).
    """

    def __init__(self, cfg: SimCLRConfig | str) -> None:
        super().__init__()
        cfg = resolve_config(cfg, SIMCLR_PRESETS, SimCLRConfig, "SimCLR")
        self.cfg = cfg
        if cfg.arch == "cnn":
            self.encoder = SmallCNN(cfg.encoder.in_chans, num_classes=0, width=cfg.cnn_width)
        else:
            self.encoder = VisionTransformer(cfg.encoder)
        width = self.encoder.num_features  # D: embed_dim for the ViT, 4 * width for the CNN
        self.projector = ProjectionHead(width, cfg.proj_hidden_dim, cfg.proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def simclr_loss_fn(
    cfg: SimCLRConfig | None = None,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """The ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit`.

    ``batch`` is images (B, C, H, W) or ``(images, labels)``; labels are ignored (that is the
    point of self-supervision). ``cfg`` defaults to ``model.cfg``. Logs ``pos_acc``: the share
    of the 2B views whose partner gets the highest logit.
    """

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        c = cfg if cfg is not None else getattr(model, "cfg", None)
        if not isinstance(c, SimCLRConfig):
            raise TypeError(
                "simclr_loss_fn needs a SimCLRConfig: pass simclr_loss_fn(cfg) or "
                "train a SimCLR model (whose .cfg is one)"
            )
        images = batch[0] if isinstance(batch, list | tuple) else batch
        v1, v2 = two_views(images, c.augment)
        # One forward over both views: BatchNorm in the head sees all 2B views, as in SimCLR.
        z1, z2 = model(torch.cat([v1, v2])).chunk(2)  # (B, proj_dim) each
        # Similarities / t in fp32 even under bf16 autocast: bf16 keeps ~3 significant digits,
        # and dividing by t = 0.2 magnifies the rounding of the cosines fivefold.
        with torch.autocast(z1.device.type, enabled=False):
            logits, targets = nt_xent_logits(z1.float(), z2.float(), c.temperature)
        loss = F.cross_entropy(logits, targets)
        pos_acc = (logits.argmax(dim=1) == targets).float().mean().item()
        return loss, {"pos_acc": pos_acc}

    return loss_fn
