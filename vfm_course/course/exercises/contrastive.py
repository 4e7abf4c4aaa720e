"""Lesson 03's exercises: SimCLR's augmentation pipeline, NT-Xent and CLIP's symmetric loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...data.augment import augment
from ...objectives.clip import clip_loss
from ...objectives.contrastive import nt_xent_loss
from .augmentation import check_augment
from .checking import call_learner, diagnose, expect_tensor, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    rand_expr,
    randn_expr,
)

# --- lesson 03: CLIP ---------------------------------------------------------------------------


def check_clip_loss(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(logits_per_image)``: (B, B) logits whose matching image-caption pairs lie on
    the diagonal -> a scalar, the mean of the image->text and text->image cross-entropies."""
    import torch.nn.functional as F

    from ...objectives.clip import clip_loss

    ex = "check_clip_loss"
    g = torch.Generator().manual_seed(404)
    sizes = (5, 2, 8)  # B = 5 first: at B = 2 "summed over the batch" equals "added directions"
    for B in sizes:
        logits = 3 * randn(g, B, B)
        out = expect_tensor(
            ex,
            call_learner(ex, fn, logits),
            (),
            "return one number (a 0-d tensor): cross_entropy's default reduction averages "
            "over the batch",
        )
        diag, zeros = torch.arange(B), torch.zeros(B, dtype=torch.long)
        i2t, t2i = F.cross_entropy(logits, diag), F.cross_entropy(logits.T, diag)
        wrong = {
            "only the image->text direction (cross-entropy over the rows of logits): CLIP's "
            "loss is symmetric, so also take the cross-entropy of logits.T (text->image) and "
            "average the two": i2t,
            "only the text->image direction (logits.T): also take the image->text "
            "cross-entropy over the rows of logits, and average the two": t2i,
            "you added the two directions: take their mean, (loss_i2t + loss_t2i) / 2": i2t + t2i,
            "you summed over the batch: average the cross-entropy over the B pairs "
            "(reduction='mean', cross_entropy's default)": 0.5
            * (
                F.cross_entropy(logits, diag, reduction="sum")
                + F.cross_entropy(logits.T, diag, reduction="sum")
            ),
            "the targets must be the diagonal: image i belongs with caption i, so "
            "targets = torch.arange(B)": 0.5
            * (F.cross_entropy(logits, zeros) + F.cross_entropy(logits.T, zeros)),
            "cross_entropy applies log-softmax itself: pass it the raw logits, not "
            "softmax probabilities": 0.5
            * (
                F.cross_entropy(logits.softmax(-1), diag)
                + F.cross_entropy(logits.T.softmax(-1), diag)
            ),
        }
        diagnose(ex, out, clip_loss(logits), wrong, f"for a {B}x{B} logit matrix")
    return passed(f"the symmetric CLIP loss matches the reference for B = {sizes}")


# --- lesson 03: contrastive learning -----------------------------------------------------------


def _nt_xent_variant(z1: torch.Tensor, z2: torch.Tensor, t: float, bug: str) -> torch.Tensor:
    """NT-Xent with one known mistake (or none, ``bug=""``), for recognising it in answers."""
    import torch.nn.functional as F

    B = z1.shape[0]
    z = torch.cat([z1, z2])  # (2B, D)
    if bug != "no_normalize":
        z = F.normalize(z, dim=1)
    scale = {"multiply": t, "ignore": 1.0}.get(bug, 1 / t)
    sim = z @ z.T * scale  # (2B, 2B)
    partner = torch.cat([torch.arange(B) + B, torch.arange(B)])  # (2B,) row i's other view
    if bug == "clip":  # only the other view's images as candidates: B-way, both directions
        cross, labels = sim[:B, B:], torch.arange(B)  # (B, B) z1-to-z2 similarities
        return (F.cross_entropy(cross, labels) + F.cross_entropy(cross.T, labels)) / 2
    if bug != "self":
        sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool), float("-inf"))
    losses = F.cross_entropy(sim, partner, reduction="none")  # (2B,)
    if bug == "one_direction":
        return losses[:B].mean()
    return losses.sum() if bug == "sum" else losses.mean()


def check_nt_xent(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(z1, z2, temperature)`` -> the scalar NT-Xent loss of SimCLR.

    z1, z2 (B, D) are the two views' embeddings (row i of each from the same image); the loss is
    the mean over all 2B views of the cross-entropy of picking the partner among the 2B-1 other
    views, with cosine similarities divided by ``temperature``.
    """
    from ...objectives.contrastive import nt_xent_loss

    ex = "check_nt_xent"
    g = torch.Generator().manual_seed(303)
    cases = [(4, 8, 0.5), (2, 16, 0.1), (7, 5, 0.2)]
    for B, D, t in cases:
        # Rows of different lengths, so an answer that skips the L2-normalisation shows.
        scale = 0.5 + 2 * torch.rand(2, B, 1, generator=g)
        z1, z2 = randn(g, B, D) * scale[0], randn(g, B, D) * scale[1]
        out = expect_tensor(
            ex,
            call_learner(ex, fn, z1, z2, t),
            (),
            "return one number, the mean loss (shape ()); F.cross_entropy averages by default",
        )
        wrong = {
            "did you forget to L2-normalise the embeddings? the similarity is the cosine: "
            "F.normalize(z, dim=1) before the matmul": _nt_xent_variant(z1, z2, t, "no_normalize"),
            "each view's similarity with itself is still a candidate (a 2B-way "
            "classification): remove the diagonal, or fill it with -inf before the "
            "cross-entropy": _nt_xent_variant(z1, z2, t, "self"),
            "divide the similarities by the temperature, don't multiply": _nt_xent_variant(
                z1, z2, t, "multiply"
            ),
            "the temperature seems to be ignored: divide the cosine similarities by "
            "it": _nt_xent_variant(z1, z2, t, "ignore"),
            "only the B views of z1 are anchors: every one of the 2B views (z2's too) must "
            "find its partner, and the loss averages over all 2B": _nt_xent_variant(
                z1, z2, t, "one_direction"
            ),
            "only the other view's images are candidates (a B-way, CLIP-style loss): in "
            "SimCLR the negatives are all 2B-2 other views, from z1 and z2": _nt_xent_variant(
                z1, z2, t, "clip"
            ),
            "average the loss over the 2B views instead of summing it": _nt_xent_variant(
                z1, z2, t, "sum"
            ),
        }
        case = f"for B={B}, D={D}, temperature={t}"
        diagnose(ex, out, nt_xent_loss(z1, z2, t), wrong, case)
    return passed(f"NT-Xent matches the reference on {len(cases)} batch sizes and temperatures")


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "03_contrastive_learning"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="augment",
        notebook=NOTEBOOK,
        functions=("my_augment",),
        cells=("ex-augment",),
        checker=check_augment,
        references=(augment,),
        hidden=(
            HiddenCase(
                "the default pipeline",
                f"my_augment({rand_expr(4, 3, 16, 16)}, _AugmentConfig(), _g)",
            ),
            HiddenCase(
                "hue 0.1, grayscale 0.5",
                f"my_augment({rand_expr(3, 3, 16, 16)}, "
                "_AugmentConfig(hue=0.1, grayscale_p=0.5), _g)",
            ),
        ),
        seed=7300,
        forbidden=("two_views", "simclr_loss_fn"),
    ),
    Exercise(
        name="nt_xent",
        notebook=NOTEBOOK,
        functions=("nt_xent",),
        cells=("ex-nt_xent",),
        checker=check_nt_xent,
        references=(nt_xent_loss,),
        hidden=(
            HiddenCase("temperature 0.5", f"nt_xent({randn_expr(6, 5)}, {randn_expr(6, 5)}, 0.5)"),
            HiddenCase("temperature 0.1", f"nt_xent({randn_expr(4, 8)}, {randn_expr(4, 8)}, 0.1)"),
        ),
        seed=7301,
        forbidden=("nt_xent_loss", "simclr_loss_fn", "info_nce"),
    ),
    Exercise(
        name="clip_loss",
        notebook=NOTEBOOK,
        functions=("clip_loss",),
        cells=("ex-clip_loss",),
        checker=check_clip_loss,
        references=(clip_loss,),
        hidden=(
            HiddenCase("5 pairs", f"clip_loss(3 * {randn_expr(5, 5)})"),
            HiddenCase("asymmetric logits", f"clip_loss({randn_expr(4, 4)} + 2 * _torch.eye(4))"),
        ),
        seed=7302,
        forbidden=("clip_loss_fn",),
    ),
)
