"""Full-profile downstream recipes: the pretrained full encoders fine-tuned on real labels.

Lessons 05 and 06 fine-tune the tiny shipped encoders on the shapes world. On a GPU the same
code takes the encoders the full pretraining recipes made (:data:`vfm_course.recipes.
FULL_RECIPES`, saved under the work folder's ``checkpoints/full/``) to real data:

- ``finetune_*``: classification on CIFAR-10 / STL-10 with a linear probe, LoRA, or full
  fine-tuning with layer-wise lr decay (:mod:`vfm_course.layers.lora`,
  :mod:`vfm_course.train.optim`), from a fraction of labels; ``--image-folder PATH`` trains
  the same recipe on your own images instead (one sub-folder per class,
  :mod:`vfm_course.data.folder`; a fifth of each class is held out for the test);
- ``seg_pets``: a segmentation head on Oxford-IIIT Pet (pet / background, border ignored);
- ``det_pennfudan``: the CenterNet head on Penn-Fudan pedestrians (:mod:`vfm_course.dense`).

Run with ``python -m vfm_course.recipes.downstream NAME`` (``--download`` fetches a missing
dataset; ``torchrun --nproc_per_node=N -m vfm_course.recipes.downstream NAME`` uses N GPUs: it is
:func:`fit`).
Results (accuracy, mIoU, mAP) are measured on the dataset's test split and stored in the
output checkpoint's metadata, next to the settings that made them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..core.files import download_dir, work_dir
from ..core.validate import check_choice
from ..data.folder import load_image_folder, split_folder
from ..data.loaders import BatchLoader
from ..data.real import IGNORE_INDEX, load_pennfudan, load_torchvision
from ..dense.centernet import CenterNet, centernet_loss_fn
from ..dense.segmentation import SegmentationModel, predict_masks, segmentation_loss_fn
from ..eval.classification import evaluate_classifier
from ..eval.dense_metrics import jaccard_index, mean_average_precision
from ..layers.lora import apply_lora
from ..models.classifier import backbone, classifier_from_encoder, train_head_only
from ..models.registry import build_model
from ..models.vit import VisionTransformer
from ..objectives.supervised import classification_loss
from ..train import distributed as dist
from ..train.checkpoint import load_weights, read_checkpoint, save_checkpoint
from ..train.engine import fit
from ..train.optim import layer_decay_optimizer
from .catalog import FULL_RECIPES
from .settings import engine_config, load_real

FINETUNE_METHODS = ("probe", "lora", "full")
DENSE_TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class FinetuneRecipe:
    """Fine-tune the encoder of full recipe ``encoder`` on ``dataset`` with ``method``, from
    the first ``label_fraction`` of the training labels."""

    encoder: str  # a FULL_RECIPES name, e.g. "mae_cifar10"
    dataset: str  # "cifar10" or "stl10"
    method: str  # "probe", "lora" (r = lora_rank on qkv and proj) or "full"
    steps: int
    batch_size: int = 256
    lr: float = 1e-3
    layer_decay: float = 0.75  # "full" only: BEiT/MAE layer-wise lr decay
    lora_rank: int = 8
    label_fraction: float = 1.0
    warmup_steps: int = 500
    weight_decay: float = 0.05
    n_test: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.method, "method", FINETUNE_METHODS)
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction!r}")


@dataclass(frozen=True)
class DenseRecipe:
    """Train a dense head on the encoder of full recipe ``encoder``: ``task`` "segmentation"
    (Oxford-IIIT Pet) or "detection" (Penn-Fudan), with the encoder ``frozen`` or not."""

    encoder: str
    task: str
    steps: int
    image_size: int = 96  # the 96-px STL-10 encoder's size: a 12 x 12 grid of 8 px patches
    batch_size: int = 64
    lr: float = 1e-3
    frozen: bool = False
    warmup_steps: int = 200
    weight_decay: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.task, "task", DENSE_TASKS)


DOWNSTREAM_RECIPES: dict[str, FinetuneRecipe | DenseRecipe] = {
    # Lesson 05 at scale: the three ways to adapt, on 10% of CIFAR-10's labels.
    "finetune_cifar10_probe": FinetuneRecipe(
        "mae_cifar10", "cifar10", "probe", steps=5_000, lr=1e-2, label_fraction=0.1
    ),
    "finetune_cifar10_lora": FinetuneRecipe(
        "mae_cifar10", "cifar10", "lora", steps=5_000, lr=1e-3, label_fraction=0.1
    ),
    "finetune_cifar10_full": FinetuneRecipe(
        "mae_cifar10", "cifar10", "full", steps=5_000, lr=5e-4, label_fraction=0.1
    ),
    # Lesson 06 at scale, on the 96-px STL-10 encoder.
    "seg_pets": DenseRecipe("mae_stl10", "segmentation", steps=4_000),
    "det_pennfudan": DenseRecipe("mae_stl10", "detection", steps=2_000, batch_size=16),
}


def load_full_encoder(name: str) -> VisionTransformer:
    """The encoder inside ``checkpoints/full/NAME.safetensors`` of the work folder, made by the full
    pretraining recipe ``name`` (run it first: ``python -m vfm_course.recipes NAME``)."""
    if name not in FULL_RECIPES:
        raise ValueError(f"unknown full recipe {name!r}; known: {', '.join(sorted(FULL_RECIPES))}")
    path = work_dir() / "checkpoints" / "full" / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pretrain it first with `python -m vfm_course.recipes {name}`"
        )
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["config"])
    load_weights(model, ckpt["model"], str(path))
    return backbone(model)


def _folder_data(folder: str, image_size: int, seed: int):
    """A folder's images split 80 / 20 per class, the training part shuffled (the first
    ``label_fraction`` of it is then a random subset, not the first classes)."""
    (x_train, y_train), test = split_folder(load_image_folder(folder, image_size), 0.2, seed)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    return (x_train[order], y_train[order]), test


def finetune(
    recipe: FinetuneRecipe, download: bool = False, image_folder: str | None = None
) -> tuple[nn.Module, dict]:
    """Run a :class:`FinetuneRecipe`; return the classifier (CPU) and its test accuracy.

    With ``image_folder`` the recipe trains on that folder's images (resized to the encoder's
    input) instead of ``recipe.dataset``, with as many classes as it has sub-folders."""
    encoder = load_full_encoder(recipe.encoder)
    size = encoder.cfg.img_size
    source = recipe.dataset if image_folder is None else str(image_folder)
    if image_folder is not None:
        (x_train, y_train), (x_test, y_test) = _folder_data(image_folder, size, recipe.seed)
    else:
        x_train, y_train = load_real(recipe.dataset, "train", 10**9, size, download)
        x_test, y_test = load_real(recipe.dataset, "test", recipe.n_test, size, download)
    n = max(1, round(recipe.label_fraction * len(x_train)))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(recipe.seed)
    model = classifier_from_encoder(encoder, num_classes)
    optimizer = None
    if recipe.method == "probe":
        train_head_only(model)
    elif recipe.method == "lora":
        apply_lora(model, r=recipe.lora_rank, alpha=2.0 * recipe.lora_rank)
    else:
        optimizer = layer_decay_optimizer(
            model, recipe.lr, recipe.weight_decay, layer_decay=recipe.layer_decay
        )
    history = fit(
        model,
        classification_loss(),
        BatchLoader(x_train[:n], y_train[:n], recipe.batch_size, seed=recipe.seed),
        engine_config(recipe, f"{recipe.method} fine-tune on {source}", True),
        eval_fn=lambda m: evaluate_classifier(m, x_test, y_test),
        optimizer=optimizer,
    )
    return model.cpu(), {
        "test_acc": round(history.final["acc"], 4),
        "dataset": source,
        "labels": n,
        "train_seconds": round(history.seconds, 1),
    }


def _dense_data(recipe: DenseRecipe, split: str, download: bool):
    """Images (n, 3, S, S) and targets: semantic masks (n, S, S), or per-image box lists."""
    if recipe.task == "segmentation":
        size = recipe.image_size
        data = load_torchvision("oxford_pets", download_dir(), split, download, image_size=size)
        pairs = [data[i] for i in range(len(data))]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    data = load_pennfudan(download_dir(), split, recipe.image_size)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([img for img, _ in items])
    return images, ([t["boxes"] for _, t in items], [t["labels"] for _, t in items])


def train_dense(recipe: DenseRecipe, download: bool = False) -> tuple[nn.Module, dict]:
    """Run a :class:`DenseRecipe`; return the model (CPU) and its test mIoU or mAP."""
    encoder = load_full_encoder(recipe.encoder)
    x_train, t_train = _dense_data(recipe, "train", download)
    x_test, t_test = _dense_data(recipe, "test", download)
    torch.manual_seed(recipe.seed)
    desc = f"{recipe.task} head on {recipe.encoder}"
    if recipe.task == "segmentation":
        model = SegmentationModel(encoder, 2, "conv", recipe.image_size, recipe.frozen)
        loader = BatchLoader(x_train, t_train, recipe.batch_size, seed=recipe.seed)
        history = fit(
            model, segmentation_loss_fn(IGNORE_INDEX), loader, engine_config(recipe, desc, True)
        )
        pred = predict_masks(model, x_test)  # on the model's device
        miou = jaccard_index(pred, t_test, 2, ignore_index=IGNORE_INDEX)
        results = {"test_miou": round(float(miou), 4)}
    else:
        model = CenterNet(encoder, 1, recipe.image_size, recipe.frozen)
        targets = model.encode_targets(*t_train)  # (n, K + 5, Gh, Gw)
        loader = BatchLoader(x_train, targets, recipe.batch_size, seed=recipe.seed)
        history = fit(model, centernet_loss_fn(), loader, engine_config(recipe, desc, True))
        dets = [{k: v.cpu() for k, v in d.items()} for d in model.predict(x_test)]
        truth = [{"boxes": b, "labels": y} for b, y in zip(*t_test, strict=True)]
        ap = mean_average_precision(dets, truth)
        results = {k: round(float(ap[k]), 4) for k in ("map", "map_50")}
    results["train_seconds"] = round(history.seconds, 1)
    return model.cpu(), results


def run_downstream(
    name: str,
    steps: int | None = None,
    force: bool = False,
    download: bool = False,
    image_folder: str | None = None,
) -> Path:
    """Run downstream recipe ``name`` and save ``checkpoints/full/NAME.safetensors`` in the work
    folder (never over an existing file without ``force``); rank 0 alone writes under torchrun.

    ``image_folder`` (``finetune_*`` recipes only) trains on your own images instead; the
    output is then ``NAME_FOLDERNAME.safetensors``."""
    if name not in DOWNSTREAM_RECIPES:
        known = ", ".join(sorted(DOWNSTREAM_RECIPES))
        raise ValueError(f"unknown downstream recipe {name!r}; known: {known}")
    if image_folder is not None and not isinstance(DOWNSTREAM_RECIPES[name], FinetuneRecipe):
        raise ValueError(
            f"--image-folder trains a classifier: use it with a finetune_* recipe, not {name}"
        )
    stem = name if image_folder is None else f"{name}_{Path(image_folder).expanduser().name}"
    path = work_dir() / "checkpoints" / "full" / f"{stem}.safetensors"
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    recipe = DOWNSTREAM_RECIPES[name]
    if image_folder is not None:  # the settings saved below then name the folder trained on
        recipe = replace(recipe, dataset=str(image_folder))
    if steps is not None:
        recipe = replace(recipe, steps=steps)
    # Warmup is at most a tenth of the run, so a shortened run (--steps) stays valid.
    recipe = replace(recipe, warmup_steps=min(recipe.warmup_steps, recipe.steps // 10))
    if isinstance(recipe, FinetuneRecipe):
        model, results = finetune(recipe, download=download, image_folder=image_folder)
    else:
        model, results = train_dense(recipe, download=download)
    if dist.is_main():
        meta = {"recipe": name, "settings": asdict(recipe), **results}
        save_checkpoint(path, model, None, metadata=meta)
        print(f"saved {path}: {json.dumps(results)}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(DOWNSTREAM_RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument("--download", action="store_true", help="fetch a missing dataset")
    parser.add_argument(
        "--image-folder",
        default=None,
        help="finetune_* only: train on your own images, one sub-folder per class",
    )
    args = parser.parse_args(argv)
    run_downstream(
        args.name,
        steps=args.steps,
        force=args.force,
        download=args.download,
        image_folder=args.image_folder,
    )


if __name__ == "__main__":
    main()
