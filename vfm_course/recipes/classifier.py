"""Recipes that produce the course's shipped checkpoints, and the loader that reads them back.

A lesson trains live for a short budget (to show the curves), then evaluates the course
checkpoint of the same model trained longer by the recipe here. Each recipe is deterministic
on CPU (seeded data, seeded init, fixed step count), writes a safetensors file whose metadata
holds the model config, the recipe's settings and its measured test accuracy, and can update
``data/manifest.json`` with the file's sha256::

    python -m vfm_course.recipes vit_digits --force     # retrain, write, update the manifest
    python -m vfm_course.recipes vit_digits --steps 50 --out /tmp/try.safetensors

An existing file is never overwritten unless ``--force`` is given.

The full profile's recipes (:data:`FULL_RECIPES`) train wider models on real data (CIFAR-10,
STL-10) on a GPU, or on several under ``torchrun``; they write to the work folder's
``checkpoints/full/`` (not the manifest) and resume from ``NAME.resume.safetensors`` there if
interrupted::

    python -m vfm_course.recipes mae_cifar10 --download                # one GPU
    torchrun --nproc_per_node=4 -m vfm_course.recipes mae_cifar10      # four GPUs, same recipe
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import random_flip_shift
from ..data.loaders import BatchLoader
from ..eval.classification import evaluate_classifier
from ..models.cnn import CNN_PRESETS, SmallCNN
from ..models.vit import VisionTransformer, vit_config
from ..objectives.supervised import classification_loss
from ..train.engine import fit
from .settings import ClassifierRecipe, data_device, engine_config, load_dataset


def build_classifier(preset: str) -> nn.Module:
    """A fresh classifier for a recipe's ``preset``: a SmallCNN preset or a ViT preset."""
    if preset in CNN_PRESETS:
        cfg = CNN_PRESETS[preset]
        return SmallCNN(cfg.in_chans, cfg.num_classes, cfg.width)
    return VisionTransformer(vit_config(preset))


def train_classifier(
    recipe: ClassifierRecipe,
    progress: bool = True,
    *,
    download: bool = False,
    checkpoint_path: str | None = None,
) -> tuple[nn.Module, dict]:
    """Train the recipe's ViT or CNN; return the model (on CPU) and its measured results.
    ``download`` lets the full profile fetch its dataset; ``checkpoint_path`` makes the run
    resumable (see :func:`engine_config`)."""
    device = data_device(recipe.dataset)
    x_train, y_train = (t.to(device) for t in load_dataset(recipe, "train", download))
    x_test, y_test = (t.to(device) for t in load_dataset(recipe, "test", download))
    torch.manual_seed(recipe.seed)
    model = build_classifier(recipe.preset)
    loader = BatchLoader(x_train, y_train, recipe.batch_size, shuffle=True, seed=recipe.seed)
    history = fit(
        model,
        classification_loss(random_flip_shift if recipe.augment else None),
        loader,
        engine_config(
            recipe,
            f"recipe {recipe.preset} on {recipe.dataset}",
            progress,
            eval_every=max(1, recipe.steps // 6),
            checkpoint_path=checkpoint_path,
        ),
        eval_fn=lambda m: evaluate_classifier(m, x_test, y_test),
    )
    results = {
        "test_acc": round(history.final["acc"], 4),
        "train_seconds": round(history.seconds, 1),
        "eval_steps": history.eval_steps,
        "eval_acc": [round(a, 4) for a in history.evals["acc"]],
    }
    return model.cpu(), results
