"""Self-supervised and image-text pretraining recipes (SimCLR, MAE, DINO, mini-CLIP)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.captions import load_caption_data
from ..data.datasets import load_shapes
from ..data.loaders import BatchLoader
from ..data.shapes import COLOUR_NAMES, SHAPE_CLASSES
from ..eval.probe import probe_encoder
from ..eval.zero_shot import zero_shot_accuracy
from ..models.classifier import backbone
from ..models.clip import CLIP, CLIP_PRESETS
from ..models.dino import DINO, DINO_PRESETS
from ..models.mae import MAE_PRESETS, MaskedAutoencoder
from ..models.simclr import SIMCLR_PRESETS, SimCLR
from ..objectives.clip import clip_loss_fn
from ..objectives.contrastive import simclr_loss_fn
from ..objectives.dino import dino_after_step, dino_loss_fn
from ..objectives.mae import mae_loss_fn
from ..train import distributed as dist
from ..train.engine import fit
from .settings import REAL_DATASETS, PretrainRecipe, data_device, engine_config, load_real

# --- self-supervised and image-text pretraining ---------------------------------------------


_PRETRAIN = {
    # method -> (presets table, model class, loss function factory)
    "mae": (MAE_PRESETS, MaskedAutoencoder, mae_loss_fn),
    "simclr": (SIMCLR_PRESETS, SimCLR, simclr_loss_fn),
    "clip": (CLIP_PRESETS, CLIP, clip_loss_fn),
    "dino": (DINO_PRESETS, DINO, dino_loss_fn),
}
# method -> after_step factory of the total steps, for weights updated outside the optimizer
_AFTER_STEP = {"dino": dino_after_step}


def _rounded(results: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in results.items()}  # as stored in checkpoint metadata


def _model_config(recipe: PretrainRecipe) -> Any:
    """The recipe's model config, from its method's presets table."""
    presets = _PRETRAIN[recipe.method][0]
    if recipe.preset in presets:
        return presets[recipe.preset]
    known = ", ".join(presets)
    raise ValueError(f"unknown {recipe.method} preset {recipe.preset!r}; known: {known}")


def pretrain(
    recipe: PretrainRecipe,
    progress: bool = True,
    *,
    download: bool = False,
    checkpoint_path: str | None = None,
) -> tuple[nn.Module, dict]:
    """Run a :class:`PretrainRecipe`; return the model (CPU, eval) and its measured results.
    ``download`` and ``checkpoint_path`` as in :func:`train_classifier`. Under torchrun only
    rank 0 measures the encoder (probe, k-NN); the other ranks return the training results."""
    _, model_cls, loss_factory = _PRETRAIN[recipe.method]
    config = _model_config(recipe)
    if recipe.dataset in REAL_DATASETS:
        if recipe.method == "clip":
            raise ValueError(f"{recipe.dataset} has no captions to pretrain a CLIP on")
        size = config.encoder.img_size  # MAE and SimCLR configs name it encoder
        device = data_device(recipe.dataset)
        x_train, y_train = (
            t.to(device) for t in load_real(recipe.dataset, "train", recipe.n_train, size, download)
        )
        x_test, y_test = (
            t.to(device) for t in load_real(recipe.dataset, "test", recipe.n_test, size, download)
        )
        inputs = y_train  # ignored by the self-supervised losses
    elif recipe.method == "clip":
        data = load_caption_data("train", recipe.n_train, recipe.world)
        test = load_caption_data("test", recipe.n_test, recipe.world)
        x_train, y_train, inputs = data.images, data.labels, data.tokens
        x_test, y_test = test.images, test.labels
    else:
        x_train, y_train = load_shapes("train", recipe.n_train, recipe.world)
        x_test, y_test = load_shapes("test", recipe.n_test, recipe.world)
        inputs = y_train  # ignored by the self-supervised losses
    torch.manual_seed(recipe.seed)
    model = model_cls(config)
    loader = BatchLoader(x_train, inputs, recipe.batch_size, shuffle=True, seed=recipe.seed)
    after_step = _AFTER_STEP[recipe.method](recipe.steps) if recipe.method in _AFTER_STEP else None
    history = fit(
        model,
        loss_factory(),
        loader,
        engine_config(
            recipe,
            f"recipe {recipe.method} {recipe.preset}",
            progress,
            checkpoint_path=checkpoint_path,
        ),
        after_step=after_step,
    )
    results = {
        "train_seconds": round(history.seconds, 1),
        "threads": torch.get_num_threads(),
        "loss_steps": history.steps,
        "loss": [round(v, 4) for v in history.loss],
    }
    if not dist.is_main():
        return model.cpu().eval(), results
    if recipe.dataset in REAL_DATASETS:  # measure on the GPU, where model and data are
        results.update(
            _rounded(probe_encoder(backbone(model.eval()), (x_train, y_train), (x_test, y_test)))
        )
    model = model.cpu().eval()
    if recipe.dataset not in REAL_DATASETS:
        results.update(
            _rounded(probe_encoder(backbone(model), (x_train, y_train), (x_test, y_test)))
        )
    if recipe.method == "clip":
        results["zero_shot_shape_acc"] = round(
            zero_shot_accuracy(model, x_test, y_test, SHAPE_CLASSES), 4
        )
        results["zero_shot_colour_acc"] = round(
            zero_shot_accuracy(model, x_test, test.colours, COLOUR_NAMES), 4
        )
    return model, results
