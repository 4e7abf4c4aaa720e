"""What every recipe shares: its settings (a frozen dataclass per kind of recipe), its data,
the device that data lives on, and the engine settings built from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.files import download_dir
from ..core.profile import pick_device
from ..data.datasets import load_digits, load_shapes
from ..data.real import load_torchvision
from ..data.shapes import COURSE_WORLD, ShapesConfig
from ..models.vit import vit_config
from ..train import distributed as dist
from ..train.engine import TrainConfig


@dataclass(frozen=True)
class ClassifierRecipe:
    """Supervised training of a ViT preset (or the SmallCNN's, ``cnn_course_tiny``) on one of
    the offline datasets."""

    preset: str
    dataset: str  # "shapes" (procedural, 32x32 RGB), "digits" (scikit-learn, 8x8 gray); full
    # profile: "cifar10" or "stl10" (real photos, resized to the preset's image size)
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    augment: bool = False  # random flip + shift (not for digits: a flipped 2 is no 2)
    n_train: int = 40_000  # shapes only; digits uses its fixed 80/20 split
    n_test: int = 2_000
    seed: int = 0
    world: ShapesConfig = ShapesConfig()  # shapes only: which shapes world


@dataclass(frozen=True)
class PretrainRecipe:
    """Pretraining of a tiny encoder on the shapes world without class labels.

    ``method`` is "mae" (masked autoencoder), "simclr" (contrastive, two augmented views),
    "dino" (self-distillation, multi-crop views) or "clip" (images against their captions);
    ``preset`` names a config in that method's presets table. Labels are used only afterwards,
    to *measure* the frozen encoder (linear probe and k-NN on the test split; zero-shot
    accuracy for CLIP).
    """

    method: str
    preset: str
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    n_train: int = 20_000
    n_test: int = 2_000
    seed: int = 0
    world: ShapesConfig = COURSE_WORLD
    dataset: str = "shapes"  # full profile: "cifar10" or "stl10" (no captions: not for CLIP)


def data_device(dataset: str) -> torch.device:
    """Where a recipe keeps its data: the GPU for the full profile's real datasets (CIFAR-10 is
    0.6 GB as float32, so batches are cut on the GPU with no host copies), else the CPU (the
    tiny recipes stay exactly as they were)."""
    if dataset not in REAL_DATASETS or pick_device().type != "cuda":
        return torch.device("cpu")
    dist.setup()
    return torch.device("cuda", dist.local_rank() if dist.is_distributed() else 0)


def engine_config(
    recipe: ClassifierRecipe | PretrainRecipe,
    desc: str,
    progress: bool,
    eval_every: int | None = None,
    checkpoint_path: str | None = None,
) -> TrainConfig:
    """The engine settings every recipe shares, filled from the recipe's own fields; with a
    ``checkpoint_path`` the run saves its state every 1,000 steps and resumes from it."""
    return TrainConfig(
        steps=recipe.steps,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup_steps=recipe.warmup_steps,
        seed=recipe.seed,
        log_every=50,
        eval_every=eval_every,
        progress=progress,
        desc=desc,
        checkpoint_path=checkpoint_path,
        checkpoint_every=1_000 if checkpoint_path else None,
    )


def load_dataset(
    recipe: ClassifierRecipe, split: str, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's train or test split: images float (n, C, H, W) in [0, 1], labels (n,)."""
    if recipe.dataset == "digits":
        return load_digits(split)
    n = recipe.n_train if split == "train" else recipe.n_test
    if recipe.dataset == "shapes":
        return load_shapes(split, n, recipe.world)
    if recipe.dataset in REAL_DATASETS:
        return load_real(recipe.dataset, split, n, vit_config(recipe.preset).img_size, download)
    raise ValueError(
        f"dataset must be 'shapes', 'digits', 'cifar10' or 'stl10', got {recipe.dataset!r}"
    )


REAL_DATASETS = ("cifar10", "stl10")


def load_real(
    name: str, split: str, n: int, image_size: int, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a torchvision dataset's split, resized to ``image_size``:
    float32 (n, 3, S, S) in [0, 1] and int64 labels (n,), from ``data/downloads/``.

    With ``download`` a missing dataset is fetched, by rank 0 alone under torchrun (the other
    ranks wait, then read the same files) so N processes never write one folder at once."""
    dist.setup()
    if download and not dist.is_main():
        dist.barrier()  # rank 0 is downloading
    x, y = load_torchvision(name, download_dir(), split, download=download)
    if download and dist.is_main():
        dist.barrier()
    x, y = x[:n], y[:n]
    if x.shape[-1] != image_size:
        size = (image_size, image_size)
        x = nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True).clamp_(0, 1)
    return x, y
