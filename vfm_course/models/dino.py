"""DINO's model (Caron et al. 2021): a student and a momentum teacher, each a ViT backbone
plus a :class:`~vfm_course.models.dino_head.DINOHead`.

The student is trained by gradient descent; the teacher never is: after every optimizer step
it moves a little towards the student, ``teacher = m * teacher + (1 - m) * student`` (an
exponential moving average, as in MoCo and BYOL), with ``m`` rising from ``momentum_teacher``
to 1 along a cosine (:func:`teacher_momentum`). The teacher is thus an ensemble of recent
students, better than any one of them, and it is the network DINO evaluates and ships.

Shapes: ``forward(views)`` takes a list of V tensors (B, C, S_v, S_v) and returns the student's
logits (V * B, K), view-major (rows v * B .. v * B + B - 1 are view v).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.configs import config_from_dict
from ..core.validate import check_positive_int, check_temperature, resolve_config
from ..data.multicrop import MultiCropConfig
from ..layers.pos_embed import resample_pos_embed
from .dino_head import DINOHead
from .vit import VisionTransformer, ViTConfig, vit_config


@dataclass(frozen=True)
class DINOConfig:
    """A DINO model and its objective.

    ``encoder``: the ViT backbone (``num_classes=0``). Head: ``hidden_dim``, ``bottleneck_dim``
    and ``out_dim`` = K prototypes. Objective: ``student_temp`` and ``teacher_temp`` (the
    teacher's lower temperature *sharpens* its targets), ``center_momentum`` for the EMA of
    the teacher's batch means (*centering*; ``centering=False`` switches it off for the
    collapse ablation), ``momentum_teacher`` the EMA rate at step 0, and ``crops``.
    ``koleo_weight`` adds DINOv2's KoLeo regulariser on the student's pooled features of each
    global view (0: plain DINO; see :func:`vfm_course.objectives.dino.koleo_loss`).
    """

    encoder: ViTConfig
    out_dim: int = 1024
    hidden_dim: int = 512
    bottleneck_dim: int = 64
    norm_last_layer: bool = True
    use_bn: bool = False
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    centering: bool = True
    momentum_teacher: float = 0.996
    crops: MultiCropConfig = MultiCropConfig()
    koleo_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, ViTConfig):
            raise TypeError(f"encoder must be a ViTConfig, got {type(self.encoder).__name__}")
        if self.encoder.num_classes != 0:
            raise ValueError(
                f"the DINO encoder is a backbone; build it with num_classes=0 "
                f"(got num_classes={self.encoder.num_classes})"
            )
        for name in ("out_dim", "hidden_dim", "bottleneck_dim"):
            check_positive_int(getattr(self, name), name)
        check_temperature(self.student_temp)
        check_temperature(self.teacher_temp)
        if not self.koleo_weight >= 0:
            raise ValueError(f"koleo_weight must be >= 0, got {self.koleo_weight!r}")
        for name in ("center_momentum", "momentum_teacher"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if not isinstance(self.crops, MultiCropConfig):
            raise TypeError(f"crops must be a MultiCropConfig, got {type(self.crops).__name__}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DINOConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


# The course ViT with 8x8 patches (a 4x4 grid of 16 tokens; local 16 px views are 2x2), the
# patch size that made SimCLR learn on the 32 px course world.
_COURSE_TINY = DINOConfig(encoder=vit_config("vit_course_tiny", num_classes=0, patch_size=8))

DINO_PRESETS: dict[str, DINOConfig] = {
    "dino_course_tiny": _COURSE_TINY,
    # The collapse ablations (DINO Sec. 5.3): sharpening without centering, and centering
    # without sharpening (the teacher at the student's temperature).
    "dino_course_tiny_no_center": dataclasses.replace(_COURSE_TINY, centering=False),
    "dino_course_tiny_no_sharpen": dataclasses.replace(
        _COURSE_TINY, teacher_temp=_COURSE_TINY.student_temp
    ),
    # The recipe's models. BatchNorm in the head: the random-init features are almost alike
    # across images, and it standardises every hidden unit over the batch. Teacher momentum
    # 0.98 instead of 0.996: over a few hundred steps a 0.996 teacher lags so far behind that
    # the student probed better than it. Plain DINO (no KoLeo) at this scale drifts towards
    # uniform targets; the KoLeo regulariser at 0.3 (DINOv2) keeps the features spread. The
    # README's DINO table and lesson 07 have the measurements.
    "dino_course_tiny_bn": dataclasses.replace(_COURSE_TINY, use_bn=True, momentum_teacher=0.98),
    "dino_course_tiny_koleo": dataclasses.replace(
        _COURSE_TINY, use_bn=True, momentum_teacher=0.98, koleo_weight=0.3
    ),
}


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """DINO's momentum schedule: ``base`` at step 0 rising to 1 at ``total_steps`` along a
    half cosine, ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``. Late in training the
    teacher barely moves, which averages the last students over a longer and longer window."""
    check_positive_int(total_steps, "total_steps")
    progress = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def encode_views(encoder: VisionTransformer, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run ``encoder`` over views of different sizes, one forward per size: (V * B, D).

    DINO's ``MultiCropWrapper`` trick: consecutive views of the same size are concatenated so
    each resolution is one batched forward. A view smaller than the encoder's ``img_size`` has
    fewer patches; its position embeddings are the encoder's grid resampled to the smaller grid
    (bicubic, as DINO's ``interpolate_pos_encoding``), the class token's row kept.
    """
    if not views:
        raise ValueError("views is empty: pass a list of (B, C, S, S) tensors")
    out, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
            end += 1
        x = torch.cat(list(views[start:end]))  # (n * B, C, S, S), one resolution
        out.append(_encode(encoder, x))
        start = end
    return torch.cat(out)  # (V * B, D)


def _encode(encoder: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, D) pooled features, for any S divisible by the patch size."""
    if x.shape[-1] == encoder.cfg.img_size:
        return encoder.forward_head(encoder.forward_features(x), pre_logits=True)
    p = encoder.cfg.patch_size
    if x.shape[-1] % p or x.shape[-2] != x.shape[-1]:
        raise ValueError(f"views must be square with a side divisible by {p}, got {x.shape}")
    g = x.shape[-1] // p
    tokens = encoder.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N', D)
    pos = resample_pos_embed(encoder.pos_embed, (g, g), encoder.num_prefix_tokens)  # (1, L', D)
    if encoder.cls_token is not None:
        cls = encoder.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, L', D)
    tokens = encoder.norm(encoder.blocks(tokens + pos))  # (B, L', D)
    return encoder.forward_head(tokens, pre_logits=True)  # (B, D)


class DINOBranch(nn.Module):
    """One network of the pair: ``backbone`` then ``head``, over a list of views (DINO's
    ``MultiCropWrapper``). Shapes: V views (B, C, S_v, S_v) -> (V * B, K)."""

    def __init__(self, cfg: DINOConfig) -> None:
        super().__init__()
        self.backbone = VisionTransformer(cfg.encoder)
        self.head = DINOHead(
            self.backbone.num_features,
            cfg.out_dim,
            cfg.hidden_dim,
            cfg.bottleneck_dim,
            norm_last_layer=cfg.norm_last_layer,
            use_bn=cfg.use_bn,
        )

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(encode_views(self.backbone, views))  # (V * B, K)


class DINO(nn.Module):
    """``student`` and ``teacher`` (two :class:`DINOBranch`), and ``center``, the EMA of the
    teacher's mean output (a (1, K) buffer, so checkpoints and resumed runs keep it).

    The teacher starts as an exact copy of the student and has ``requires_grad=False``
    everywhere: the optimizer never sees it and no gradient reaches it. State-dict names
    ``student.backbone.*``, ``teacher.head.*`` match DINO's checkpoints' two halves.

    ``encoder`` is the teacher's backbone (DINO evaluates the teacher, Caron et al. 2021 Sec.
    5.2: it beats the student throughout training), so ``backbone(model)`` and the probes read it.
    """

    def __init__(self, cfg: DINOConfig | str) -> None:
        super().__init__()
        cfg = resolve_config(cfg, DINO_PRESETS, DINOConfig, "DINO")
        self.cfg = cfg
        self.student = DINOBranch(cfg)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))

    @property
    def encoder(self) -> VisionTransformer:
        return self.teacher.backbone

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """The student's logits for every view: (V * B, K)."""
        return self.student(views)

    @torch.no_grad()
    def forward_teacher(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """The teacher's logits (n * B, K) for the views it sees (the global ones), without
        gradients: its targets are constants for the student's loss."""
        return self.teacher(views)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step ``teacher = momentum * teacher + (1 - momentum) * student``, parameter by
        parameter (buffers too, for backbones that have them)."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be between 0 and 1, got {momentum!r}")
        pairs = zip(self.teacher.parameters(), self.student.parameters(), strict=True)
        for t, s in pairs:
            t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
        for t, s in zip(self.teacher.buffers(), self.student.buffers(), strict=True):
            t.copy_(s)
