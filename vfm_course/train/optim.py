"""The one weight-decay and layer-decay rule, for every optimiser the course builds.

Weight decay applies to weight matrices only: decaying biases, norm gains, position embeddings
or the class token pulls them to zero for no regularisation benefit (as in timm and MAE). A
model may name more parameters to leave undecayed with ``no_weight_decay()`` (timm's
convention). Layer-wise learning-rate decay (BEiT, Bao et al. 2022; MAE, He et al. 2022)
scales each ViT block's learning rate by its depth, so early blocks, which hold the most
general features, move less than late ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.validate import is_number

# Embeddings and tokens that are never decayed, wherever they sit (a decoder's position
# embedding too): they are lookup tables and learned inputs, not weights of a layer.
NO_DECAY_SUFFIXES = (".bias", "pos_embed", "cls_token", "reg_token", "mask_token")


def decays(model: nn.Module, name: str, p: nn.Parameter) -> bool:
    """Whether parameter ``name`` of ``model`` gets weight decay: matrices only, never a vector
    (biases, norm gains), an embedding or token in :data:`NO_DECAY_SUFFIXES`, or a name the
    model lists in its ``no_weight_decay()`` (timm's convention)."""
    skip = getattr(model, "no_weight_decay", None)
    return not (
        p.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES) or (skip is not None and name in skip())
    )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: one with weight decay (the matrices, see :func:`decays`) and one without."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decays(model, name, p) else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (are they all frozen?)")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# ----------------------------------------------------------------------------- layer-wise lr decay

_EMBEDDINGS = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """Depth of parameter ``name`` in a ViT: 0 for the embeddings, i + 1 for ``blocks.{i}``,
    ``depth + 1`` for everything after the blocks (final norm, head)."""
    if name.startswith(_EMBEDDINGS):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_param_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay (BEiT; MAE fine-tuning).

    Block ``i`` of ``depth`` gets ``lr * layer_decay ** (depth - i)``; the embeddings
    (``patch_embed``, ``cls_token``, ``pos_embed``) the lowest, ``lr * layer_decay ** (depth +
    1)``; the final norm and the head the full ``lr``. The pretrained early layers thus change
    least. Weight decay only where :func:`decays` says, as in :func:`param_groups`. Each group
    carries its ``lr`` (already scaled: :func:`fit` reads it as the base rate), ``lr_scale`` and
    ``layer``. Frozen parameters are left out.

    The scales equal timm's ``param_groups_layer_decay`` except for the final ``norm`` of a
    class-token ViT, which timm groups with the last block; here it gets the full lr, as in
    BEiT's and MAE's code (it normalises what the new head reads).
    """
    if not isinstance(getattr(model, "blocks", None), nn.Module):
        raise TypeError("layer-wise lr decay needs a ViT, with its transformer blocks in `blocks`")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not is_number(layer_decay):
        raise ValueError(f"layer_decay must be a number in (0, 1], got {layer_decay!r}")
    if not 0 < layer_decay <= 1:
        raise ValueError(
            f"layer_decay must be in (0, 1] (1 = one lr for all layers; MAE uses 0.65-0.75), "
            f"got {layer_decay}"
        )
    depth = len(model.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        decay = decays(model, name, p)
        scale = layer_decay ** (depth + 1 - layer)
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
                "layer": layer,
            },
        )
        group["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters (are they all frozen?)")
    return list(groups.values())


def layer_decay_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> torch.optim.AdamW:
    """AdamW over :func:`layer_decay_param_groups`; pass it as ``fit(..., optimizer=...)``
    (fit then ignores ``TrainConfig.lr`` and applies its warmup and cosine to each group)."""
    return torch.optim.AdamW(layer_decay_param_groups(model, lr, weight_decay, layer_decay))
