"""Batched inference in eval mode: the one helper every evaluation uses.

:func:`eval_mode` switches a model to eval mode (dropout off, batch-norm running statistics)
and restores whatever mode it had, even if the body raises; :func:`predict` runs a model over
a large tensor in batches without gradients and concatenates the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from .validate import check_positive_int, check_tensor


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block and restore its mode (train or eval) after.

    Evaluation and attacks use it so that dropout cannot randomise outputs or gradients and
    BatchNorm neither uses batch statistics nor updates its running averages.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    map_output: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``images`` (B, C, H, W) in batches, in eval mode when it is a module,
    without gradients; return the concatenated outputs on the CPU (float32 when floating).

    ``device`` is where the batches go, by default the model's own device. ``map_output``
    reduces each batch's output before it is kept (e.g. ``lambda out: out.argmax(1)`` keeps
    class ids instead of full-size logits).
    """
    check_tensor(images, "images", floating=True)
    check_positive_int(batch_size, "batch_size")
    if device is None:
        params = list(model.parameters()) if isinstance(model, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    outs = []
    with eval_mode(model) if isinstance(model, nn.Module) else nullcontext():
        for i in range(0, len(images), batch_size):
            out = model(images[i : i + batch_size].to(device))
            out = (map_output(out) if map_output is not None else out).cpu()
            outs.append(out.float() if out.is_floating_point() else out)
    return torch.cat(outs)
