"""Self-distillation with no labels, DINO (Caron et al. 2021): the student learns to output
what a momentum teacher outputs for another view of the same image.

Per image, the teacher turns each global view into a distribution over K prototypes, *centred*
(its running mean output subtracted) and *sharpened* (a low temperature); the student turns
every view into log-probabilities at a higher temperature; the loss is the cross-entropy
between them over every (teacher view, other student view) pair. Nothing pushes images apart
as SimCLR's negatives do, so two failure modes ("collapse") are possible, and each of the two
tricks blocks one: centering stops one prototype from winning for every image, sharpening
stops the output from flattening into the uniform distribution (Sec. 5.3).
:func:`collapse_stats` measures both.

Shapes: student logits (V * B, K) and teacher logits (n * B, K), view-major, n global views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_positive_int, check_temperature, check_tensor
from ..data.multicrop import multi_crop
from ..models.dino import DINOConfig, encode_views, teacher_momentum
from ..train import distributed as dist


def teacher_targets(
    teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float
) -> torch.Tensor:
    """Centre then sharpen: ``softmax((teacher_out - center) / teacher_temp)``, (n * B, K).

    Subtracting the running mean makes no prototype favoured for every image (against the
    one-dimension collapse); a temperature below the student's makes each target peaked
    (against the uniform collapse). Pass ``center`` zeros to switch centering off."""
    teacher_out = check_tensor(teacher_out, "teacher_out", ndim=2, floating=True)
    check_tensor(center, "center", shape=(1, teacher_out.shape[1]))
    return F.softmax((teacher_out - center) / check_temperature(teacher_temp), dim=-1)


def dino_cross_entropy(
    student_out: torch.Tensor, targets: torch.Tensor, student_temp: float, n_global: int
) -> torch.Tensor:
    """The mean over pairs (teacher view a, student view v != a) of the batch mean of
    ``-sum_k targets_a[k] * log_softmax(student_out_v / student_temp)[k]``.

    The teacher sees the ``n_global`` global views, the student all V; the student's copy of
    the teacher's own view is skipped (matching a view to itself teaches nothing), leaving
    ``n_global * (V - 1)`` pairs.

    Args:
        student_out: (V * B, K) student logits, view-major.
        targets: (n_global * B, K) teacher probabilities (:func:`teacher_targets`), constants.
        student_temp: the student's temperature.
        n_global: how many views the teacher saw; they are the student's first ones.
    """
    student_out = check_tensor(student_out, "student_out", ndim=2, floating=True)
    check_positive_int(n_global, "n_global")
    targets = check_tensor(targets, "targets", ndim=2, floating=True)
    if targets.shape[1] != student_out.shape[1] or targets.shape[0] % n_global:
        raise ValueError(
            f"targets {tuple(targets.shape)} must be (n_global * B, K) with the student's K "
            f"({student_out.shape[1]}) and n_global = {n_global}"
        )
    B = targets.shape[0] // n_global
    if B == 0 or student_out.shape[0] % B or student_out.shape[0] // B <= n_global - 1:
        raise ValueError(
            f"student_out has {student_out.shape[0]} rows, not a multiple V * B of the batch "
            f"B = {B} with V >= n_global"
        )
    log_p = F.log_softmax(student_out / check_temperature(student_temp), dim=-1)
    log_p = log_p.view(-1, B, log_p.shape[-1])  # (V, B, K)
    q = targets.detach().view(n_global, B, -1)  # (n_global, B, K)
    total, pairs = student_out.new_zeros(()), 0
    for a in range(n_global):
        for v in range(log_p.shape[0]):
            if v == a:
                continue  # the same view on both sides
            total = total + (-q[a] * log_p[v]).sum(dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float) -> None:
    """In place, ``center = momentum * center + (1 - momentum) * mean(teacher_out)`` (the batch
    mean over rows, and over processes under torchrun so every rank keeps the same centre).

    DINO applies the new centre from the next step on: the targets of this step used the old
    one. ``center`` is (1, K), ``teacher_out`` (n * B, K)."""
    teacher_out = check_tensor(teacher_out, "teacher_out", ndim=2, floating=True)
    check_tensor(center, "center", shape=(1, teacher_out.shape[1]))
    batch_center = teacher_out.float().mean(dim=0, keepdim=True)  # (1, K)
    if dist.is_distributed():
        batch_center = dist.all_reduce_mean(batch_center)
    center.mul_(momentum).add_(batch_center.to(center.dtype), alpha=1.0 - momentum)


@torch.no_grad()
def collapse_stats(probs: torch.Tensor) -> dict[str, float]:
    """Two numbers that tell DINO's two collapses apart, for output distributions (B, K):

    - ``entropy``: the mean entropy of a row, in nats, from 0 (one-hot) to ln K (uniform);
    - ``dim_std``: the standard deviation over the batch of each of the K probabilities,
      averaged over the K dimensions: 0 when every image gets the same distribution.

    Uniform collapse: entropy ln K, dim_std 0. One-dimension collapse: entropy 0, dim_std 0.
    Healthy: low entropy (confident targets) *and* dim_std > 0 (different for different images).
    """
    probs = check_tensor(probs, "probs", ndim=2, floating=True)
    if probs.shape[0] < 2:
        raise ValueError(f"a standard deviation needs at least 2 rows, got {probs.shape[0]}")
    p = probs.float()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1).mean()
    return {"entropy": entropy.item(), "dim_std": p.std(dim=0).mean().item()}


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The KoLeo regulariser (Sablayrolles et al. 2019, used by DINOv2): ``-mean_i log d_i``,
    where ``d_i`` is the distance from row i of the L2-normalised ``features`` (B, D) to its
    nearest other row. Minimising it spreads the batch over the sphere: a pair of images
    with nearly the same feature costs a lot, so the features cannot all collapse together."""
    features = check_tensor(features, "features", ndim=2, floating=True)
    if features.shape[0] < 2:
        raise ValueError(f"a nearest neighbour needs at least 2 rows, got {features.shape[0]}")
    x = F.normalize(features.float(), dim=-1)
    dist2 = (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=-1)  # (B, B)
    dist2 = dist2 + torch.eye(len(x), device=x.device) * 4.0  # no row is its own neighbour
    nearest = dist2.min(dim=1).values.clamp_min(0).sqrt()  # (B,); unit vectors are <= 2 apart
    return -torch.log(nearest + eps).mean()


def max_entropy(k: int) -> float:
    """ln K, the entropy of the uniform distribution over K prototypes."""
    return math.log(check_positive_int(k, "k"))


def dino_loss_fn(
    cfg: DINOConfig | None = None,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """The ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit`, for a
    :class:`~vfm_course.models.DINO` model; pass :func:`dino_after_step` as ``after_step``.

    ``batch`` is images (B, C, H, W) or ``(images, labels)``; labels are ignored. ``cfg``
    defaults to ``model.cfg``. Each step: multi-crop views; the student over all views; the
    teacher over the global ones; centred, sharpened targets; the cross-entropy; then the
    centre moves (after the targets are made). With ``cfg.koleo_weight > 0`` the loss adds
    that times :func:`koleo_loss` of the student's pooled features, averaged over the global
    views. Logs the teacher targets' ``entropy`` and ``dim_std`` (:func:`collapse_stats`), and
    ``koleo`` when it is on.
    """

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        c = cfg if cfg is not None else getattr(model, "cfg", None)
        if not isinstance(c, DINOConfig):
            raise TypeError(
                "dino_loss_fn needs a DINOConfig: pass dino_loss_fn(cfg) or train a DINO "
                "model (whose .cfg is one)"
            )
        images = batch[0] if isinstance(batch, list | tuple) else batch
        views = multi_crop(images, c.crops)
        # The student's forward, model(views), in its two halves: KoLeo reads the features.
        feats = encode_views(model.student.backbone, views)  # (V * B, D)
        student_out = model.student.head(feats)  # (V * B, K)
        teacher_out = model.forward_teacher(views[: c.crops.n_global])  # (n * B, K)
        # Softmaxes in fp32 even under bf16 autocast: dividing by 0.04 magnifies rounding 25x.
        with torch.autocast(student_out.device.type, enabled=False):
            student_out, teacher_out = student_out.float(), teacher_out.float()
            center = model.center if c.centering else torch.zeros_like(model.center)
            targets = teacher_targets(teacher_out, center, c.teacher_temp)
            loss = dino_cross_entropy(student_out, targets, c.student_temp, c.crops.n_global)
            logs = collapse_stats(targets)
            if c.koleo_weight > 0:
                B = images.shape[0]
                koleo = (
                    sum(koleo_loss(feats[v * B : (v + 1) * B]) for v in range(c.crops.n_global))
                    / c.crops.n_global
                )
                loss = loss + c.koleo_weight * koleo
                logs["koleo"] = koleo.item()
        if c.centering:
            update_center(model.center, teacher_out, c.center_momentum)
        return loss, logs

    return loss_fn


def dino_after_step(total_steps: int) -> Callable[[nn.Module, int], None]:
    """The ``after_step(model, step)`` for :func:`vfm_course.train.fit`: the teacher's EMA
    step, with the momentum of :func:`~vfm_course.models.dino.teacher_momentum` for the step
    just taken (``step - 1``, counting from 0 as DINO's schedule does) of ``total_steps``."""
    check_positive_int(total_steps, "total_steps")

    def after_step(model: nn.Module, step: int) -> None:
        base = model.cfg.momentum_teacher
        model.update_teacher(teacher_momentum(step - 1, total_steps, base))

    return after_step
