"""A classifier from a pretrained encoder, and which of its weights train.

A linear probe trains the head only; partial fine-tuning the last k blocks as well; full
fine-tuning everything (:func:`count_trainable` counts what trains). :func:`backbone` is the
image encoder inside any course model (the one attribute name every wrapper uses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from ..core.validate import check_positive_int, is_int
from .cnn import SmallCNN
from .vit import VisionTransformer


def classifier_from_encoder(encoder: VisionTransformer, num_classes: int) -> VisionTransformer:
    """A new ViT classifier: ``encoder``'s weights and pooling, a freshly initialised head.

    The result is a plain :class:`VisionTransformer` whose config is the encoder's with
    ``num_classes`` replaced (timm's ``reset_classifier``) and ``weight_init="timm"``, so the
    head starts as timm's does; parameter names stay timm's
    (``blocks.{i}...``, ``head``) and every tool of the course applies to it. Pooling (class
    token or mean, with ``fc_norm``) is the encoder's own. The encoder is not modified.
    """
    if not isinstance(encoder, VisionTransformer):
        raise TypeError(
            f"encoder must be a course VisionTransformer, got {type(encoder).__name__}; "
            f"load one with recipes.load_course_encoder(name)"
        )
    check_positive_int(num_classes, "num_classes")
    # timm's init for the one new layer: a head that starts small (trunc-normal 0.02, as timm's
    # reset_classifier; MAE's fine-tuning uses 2e-5). A xavier-sized head (std 0.14 at 96 -> 6)
    # slowed lesson 05's 100-step linear probe on clip_shapes from 0.878 to 0.651.
    cfg = dataclasses.replace(encoder.cfg, num_classes=num_classes, weight_init="timm")
    model = VisionTransformer(cfg)
    ref = next(encoder.parameters())
    model.to(device=ref.device, dtype=ref.dtype)
    body = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    missing, _ = model.load_state_dict(body, strict=False)
    assert set(missing) == {"head.weight", "head.bias"}, missing  # only the head is new
    return model.train(encoder.training)


def _check_vit(model: object) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"model must be a course VisionTransformer, got {type(model).__name__} "
            f"(build one with classifier_from_encoder)"
        )
    return model


def _train_only(model: VisionTransformer, prefixes: Sequence[str]) -> VisionTransformer:
    """requires_grad on parameters whose names start with one of ``prefixes``, off elsewhere.
    A fixed sin-cos ``pos_embed`` stays frozen whatever is asked (it is not a weight)."""
    fixed_pos = model.cfg.pos_embed == "sincos"
    for name, p in model.named_parameters():
        keep = name.startswith(tuple(prefixes)) and not (fixed_pos and name == "pos_embed")
        p.requires_grad_(keep)
    return model


def train_head_only(model: VisionTransformer) -> VisionTransformer:
    """Linear probe: freeze everything but ``head`` (returns ``model``, changed in place)."""
    return _train_only(_check_vit(model), ["head."])


def train_last_blocks(model: VisionTransformer, k: int) -> VisionTransformer:
    """Partial fine-tuning: train the last ``k`` blocks, the final norm and the head.

    Late blocks are the most task-specific, early ones the most generic (Yosinski et al. 2014),
    so this spends the gradient where it matters. ``k=0`` trains the final norm and head only.
    """
    model = _check_vit(model)
    depth = len(model.blocks)
    if not is_int(k) or not 0 <= k <= depth:
        raise ValueError(
            f"k (the number of last blocks to train) must be an integer from 0 to the model's "
            f"depth {depth}, got {k!r}"
        )
    blocks = [f"blocks.{i}." for i in range(depth - k, depth)]
    return _train_only(model, [*blocks, "norm.", "fc_norm.", "head."])


def train_all(model: VisionTransformer) -> VisionTransformer:
    """Full fine-tuning: every parameter trains (except a fixed sin-cos position table)."""
    return _train_only(_check_vit(model), [""])


def count_trainable(model: nn.Module) -> int:
    """Number of parameter values that will receive gradients (``requires_grad``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def backbone(model: nn.Module) -> VisionTransformer | SmallCNN:
    """The image encoder inside a course model: the model itself for a ViT, else its
    ``encoder`` (the one attribute name MAE, SimCLR, CLIP and the dense models use): a ViT, or
    the SmallCNN of a CNN SimCLR."""
    if isinstance(model, VisionTransformer):
        return model
    if isinstance(getattr(model, "encoder", None), VisionTransformer | SmallCNN):
        return model.encoder
    raise TypeError(f"{type(model).__name__} has no image encoder (an `encoder` attribute)")
