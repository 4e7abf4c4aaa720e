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

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_temperature, check_tensor
from ..data.augment import augment
from ..models.simclr import SimCLRConfig


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
    t = check_temperature(temperature)
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


def embedding_std(z: torch.Tensor) -> float:
    """How spread out a batch of embeddings is, SimSiam's collapse measure (Chen & He 2021):
    the per-dimension standard deviation of the L2-normalised rows, averaged over dimensions.

    0 when every row is the same point (complete collapse); about 1 / sqrt(D) when the rows are
    spread evenly over the unit sphere in D dimensions; in between when they fill only a few
    directions (dimensional collapse). ``z`` is (B, D) with B >= 2.
    """
    z = check_tensor(z, "z", ndim=2, floating=True)
    if z.shape[0] < 2:
        raise ValueError(f"a standard deviation needs at least 2 embeddings, got {z.shape[0]}")
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean().item()


def alignment_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """NT-Xent's positive term alone: the mean over pairs of 1 - cos(z1_i, z2_i), (B, D) each.

    It pulls views of the same image together and pushes nothing apart, so one constant output
    minimises it (loss 0) whatever the images: lesson 03 trains with it to show that collapse.
    """
    z1 = check_tensor(z1, "z1", ndim=2, floating=True)
    z2 = check_tensor(z2, "z2", shape=tuple(z1.shape), floating=True)
    return (1 - F.cosine_similarity(z1, z2, dim=1)).mean()


def simclr_loss_fn(
    cfg: SimCLRConfig | None = None,
    negatives: bool = True,
    augment_fn: Callable[..., torch.Tensor] = augment,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """The ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit`.

    ``batch`` is images (B, C, H, W) or ``(images, labels)``; labels are ignored (that is the
    point of self-supervision). ``cfg`` defaults to ``model.cfg``. ``negatives=False`` trains on
    :func:`alignment_loss` instead (positives only: the ablation that collapses). Logs
    ``pos_acc``, the share of the 2B views whose partner gets the highest logit, and ``z_std``,
    :func:`embedding_std` of the batch's projections. ``augment_fn(images, augment_cfg)`` makes
    one view (default :func:`vfm_course.data.augment.augment`); it is called twice per batch,
    and lesson 03 passes the learner's pipeline here.
    """

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        c = cfg if cfg is not None else getattr(model, "cfg", None)
        if not isinstance(c, SimCLRConfig):
            raise TypeError(
                "simclr_loss_fn needs a SimCLRConfig: pass simclr_loss_fn(cfg) or "
                "train a SimCLR model (whose .cfg is one)"
            )
        images = batch[0] if isinstance(batch, list | tuple) else batch
        v1, v2 = augment_fn(images, c.augment), augment_fn(images, c.augment)  # two views
        # One forward over both views: BatchNorm in the head sees all 2B views, as in SimCLR.
        z1, z2 = model(torch.cat([v1, v2])).chunk(2)  # (B, proj_dim) each
        # Similarities / t in fp32 even under bf16 autocast: bf16 keeps ~3 significant digits,
        # and dividing by t = 0.2 magnifies the rounding of the cosines fivefold.
        with torch.autocast(z1.device.type, enabled=False):
            z1, z2 = z1.float(), z2.float()
            logits, targets = nt_xent_logits(z1, z2, c.temperature)
        loss = F.cross_entropy(logits, targets) if negatives else alignment_loss(z1, z2)
        pos_acc = (logits.argmax(dim=1) == targets).float().mean().item()
        return loss, {"pos_acc": pos_acc, "z_std": embedding_std(torch.cat([z1, z2]))}

    return loss_fn
