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
STL-10) on a GPU, or on several under ``torchrun``; they write to ``data/checkpoints/full/``
(not the manifest) and resume from ``NAME.resume.safetensors`` there if interrupted::

    python -m vfm_course.recipes mae_cifar10 --download                # one GPU
    torchrun --nproc_per_node=4 -m vfm_course.recipes mae_cifar10      # four GPUs, same recipe
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as dist
from .augment import AugmentConfig
from .checkpoint import (
    CheckpointError,
    course_checkpoint_path,
    data_dir,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    sha256_file,
)
from .clip import (
    CLIP,
    CLIP_PRESETS,
    CLIPConfig,
    clip_loss_fn,
    load_caption_data,
    zero_shot_predict,
    zero_shot_weights,
)
from .cnn import SmallCNN
from .contrastive import SIMCLR_PRESETS, SimCLR, SimCLRConfig, simclr_loss_fn
from .data import DOWNLOAD_DIR, BatchLoader, load_digits, load_shapes
from .mae import MAE_PRESETS, MAEConfig, MaskedAutoencoder, mae_loss_fn
from .metrics import evaluate_classifier
from .probe import extract_features, knn_accuracy, linear_probe
from .profile import pick_device
from .shapes import COLOUR_NAMES, PRETRAIN_WORLD, SHAPE_CLASSES, ShapesConfig
from .text import Tokenizer
from .torchvision_data import load_torchvision
from .train import TrainConfig, fit
from .vit import VisionTransformer, ViTConfig, vit_config


@dataclass(frozen=True)
class ClassifierRecipe:
    """Supervised training of a ViT preset on one of the offline datasets."""

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


def random_flip_shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Batch augmentation: random horizontal flip and a random shift of up to ``max_shift``
    pixels (reflect-padded crop). x (B, C, H, W). Uses torch's global RNG (seeded by fit).

    Why: a ViT has no built-in translation equivariance, so showing it shifted copies is the
    cheapest way to teach it (Touvron et al. 2021, DeiT, lean heavily on augmentation).
    """
    B, _, H, W = x.shape
    flip = torch.rand(B, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="reflect")  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()  # one shift per batch: cheap
    return padded[:, :, dy : dy + H, dx : dx + W]


def classification_loss(augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """The supervised objective: cross-entropy on (optionally augmented) images."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        if augment is not None:
            x = augment(x)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn


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
    x, y = load_torchvision(name, DOWNLOAD_DIR, split, download=download)
    if download and dist.is_main():
        dist.barrier()
    x, y = x[:n], y[:n]
    if x.shape[-1] != image_size:
        size = (image_size, image_size)
        x = nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True).clamp_(0, 1)
    return x, y


def _data_device(dataset: str) -> torch.device:
    """Where a recipe keeps its data: the GPU for the full profile's real datasets (CIFAR-10 is
    0.6 GB as float32, so batches are cut on the GPU with no host copies), else the CPU (the
    tiny recipes stay exactly as they were)."""
    if dataset not in REAL_DATASETS or pick_device().type != "cuda":
        return torch.device("cpu")
    dist.setup()
    return torch.device("cuda", dist.local_rank() if dist.is_distributed() else 0)


def _train_config(
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


def train_classifier(
    recipe: ClassifierRecipe,
    progress: bool = True,
    *,
    download: bool = False,
    checkpoint_path: str | None = None,
) -> tuple[nn.Module, dict]:
    """Train the recipe's ViT; return the model (on CPU) and its measured results.
    ``download`` lets the full profile fetch its dataset; ``checkpoint_path`` makes the run
    resumable (see :func:`_train_config`)."""
    device = _data_device(recipe.dataset)
    x_train, y_train = (t.to(device) for t in load_dataset(recipe, "train", download))
    x_test, y_test = (t.to(device) for t in load_dataset(recipe, "test", download))
    torch.manual_seed(recipe.seed)
    model = VisionTransformer(vit_config(recipe.preset))
    loader = BatchLoader(x_train, y_train, recipe.batch_size, shuffle=True, seed=recipe.seed)
    history = fit(
        model,
        classification_loss(random_flip_shift if recipe.augment else None),
        loader,
        _train_config(
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


# --- self-supervised and image-text pretraining ---------------------------------------------


@dataclass(frozen=True)
class PretrainRecipe:
    """Pretraining of a tiny encoder on the shapes world without class labels.

    ``method`` is "mae" (masked autoencoder), "simclr" (contrastive, two augmented views) or
    "clip" (images against their captions); ``preset`` names a config in that method's presets
    table. Labels are used only afterwards, to *measure* the frozen encoder (linear probe and
    k-NN on the test split; zero-shot accuracy for CLIP).
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
    world: ShapesConfig = PRETRAIN_WORLD
    dataset: str = "shapes"  # full profile: "cifar10" or "stl10" (no captions: not for CLIP)


_PRETRAIN = {
    # method -> (presets table, model class, loss function factory)
    "mae": (MAE_PRESETS, MaskedAutoencoder, mae_loss_fn),
    "simclr": (SIMCLR_PRESETS, SimCLR, simclr_loss_fn),
    "clip": (CLIP_PRESETS, CLIP, clip_loss_fn),
}


def backbone(model: nn.Module) -> VisionTransformer | SmallCNN:
    """The image encoder inside a pretrained model (MAE/SimCLR ``encoder``, CLIP ``visual``):
    a ViT, or the SmallCNN of a CNN SimCLR."""
    if isinstance(model, VisionTransformer):
        return model
    for name in ("encoder", "visual"):
        if isinstance(getattr(model, name, None), VisionTransformer | SmallCNN):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__} has no image encoder (encoder or visual)")


def probe_encoder(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """Linear-probe and 20-NN test accuracy of a frozen encoder's pooled features."""
    f_train = extract_features(encoder, train[0])
    f_test = extract_features(encoder, test[0])
    probe = linear_probe(f_train, train[1], f_test, test[1])
    return {
        "probe_acc": round(probe.test_acc, 4),
        "knn_acc": round(knn_accuracy(f_train, train[1], f_test, test[1], k=20), 4),
    }


def zero_shot_accuracy(model: CLIP, images: torch.Tensor, labels: torch.Tensor, words) -> float:
    """Zero-shot accuracy of a CLIP on ``images`` with the prompt "a photo of a {word}"."""
    weights = zero_shot_weights(model, Tokenizer(), list(words))
    return (zero_shot_predict(model, images, weights) == labels).float().mean().item()


def _model_config(recipe: PretrainRecipe) -> Any:
    """The recipe's model config: from the method's presets table, else :data:`FULL_PRESETS`."""
    presets = _PRETRAIN[recipe.method][0]
    if recipe.preset in presets:
        return presets[recipe.preset]
    if recipe.preset in FULL_PRESETS:
        return FULL_PRESETS[recipe.preset]
    known = ", ".join([*presets, *FULL_PRESETS])
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
        device = _data_device(recipe.dataset)
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
    history = fit(
        model,
        loss_factory(),
        loader,
        _train_config(
            recipe,
            f"recipe {recipe.method} {recipe.preset}",
            progress,
            checkpoint_path=checkpoint_path,
        ),
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
        results.update(probe_encoder(backbone(model.eval()), (x_train, y_train), (x_test, y_test)))
    model = model.cpu().eval()
    if recipe.dataset not in REAL_DATASETS:
        results.update(probe_encoder(backbone(model), (x_train, y_train), (x_test, y_test)))
    if recipe.method == "clip":
        results["zero_shot_shape_acc"] = round(
            zero_shot_accuracy(model, x_test, y_test, SHAPE_CLASSES), 4
        )
        results["zero_shot_colour_acc"] = round(
            zero_shot_accuracy(model, x_test, test.colours, COLOUR_NAMES), 4
        )
    return model, results


RECIPES: dict[str, ClassifierRecipe | PretrainRecipe] = {
    # Real handwriting, 8x8: the course ViT learns it in about half a minute on one core.
    "vit_digits": ClassifierRecipe(
        preset="vit_course_digits", dataset="digits", steps=1500, batch_size=64, lr=2e-3
    ),
    # Supervised reference for the self-supervised lessons, on the same world they pretrain on.
    "vit_shapes": ClassifierRecipe(
        preset="vit_course_tiny", dataset="shapes", steps=2000, n_train=20_000, world=PRETRAIN_WORLD
    ),
    # The three pretrained tiny encoders of lessons 03-06 (same ViT backbone, three objectives).
    "mae_shapes": PretrainRecipe("mae", "mae_course_tiny", steps=2000, warmup_steps=200),
    # The same MAE with raw-pixel targets (lesson 04 compares the two as initialisations).
    "mae_shapes_pixels": PretrainRecipe(
        "mae", "mae_course_tiny_pixels", steps=2000, warmup_steps=200
    ),
    "simclr_shapes": PretrainRecipe(
        "simclr", "simclr_course_tiny", steps=2500, batch_size=64, warmup_steps=200
    ),
    # The same objective with a small CNN and full hue jitter (lesson 03's comparison).
    "simclr_cnn_shapes": PretrainRecipe("simclr", "simclr_cnn_tiny", steps=1200, warmup_steps=50),
    "clip_shapes": PretrainRecipe("clip", "clip_course_tiny", steps=3000, warmup_steps=200),
}


# --- the full profile: real photos, wider models, one GPU or several ------------------------

# Model configs of the full recipes, built from the course presets (same code, wider and
# deeper): the ViT-Tiny-width backbone ``vit_course_small``, at 32 px (CIFAR-10) or at 96 px
# with 8 px patches (STL-10: a 12 x 12 grid).
FULL_PRESETS: dict[str, MAEConfig | SimCLRConfig] = {
    "mae_course_small": MAEConfig(
        vit_config("vit_course_small", num_classes=0, pos_embed="sincos"),
        decoder_embed_dim=128,
        decoder_depth=4,
        decoder_num_heads=4,
    ),
    "mae_course_small_96": MAEConfig(
        vit_config(
            "vit_course_small", img_size=96, patch_size=8, num_classes=0, pos_embed="sincos"
        ),
        decoder_embed_dim=128,
        decoder_depth=4,
        decoder_num_heads=4,
    ),
    "simclr_course_small": SimCLRConfig(
        encoder=vit_config("vit_course_small", num_classes=0),
        proj_hidden_dim=1024,
        proj_dim=128,
        augment=AugmentConfig(crop_scale=(0.2, 1.0)),  # the crop SimSiam uses on CIFAR-10
    ),
}

# Batch sizes are global (split over the GPUs under torchrun). Learning rates follow each
# paper's linear scaling rule, lr = base * batch / 256 (Goyal et al. 2017): MAE base 1.5e-4.
# Step counts are about 200 (ViT, SimCLR) and 400 (MAE) epochs of CIFAR-10 at batch 512.
FULL_RECIPES: dict[str, ClassifierRecipe | PretrainRecipe] = {
    "vit_cifar10": ClassifierRecipe(
        preset="vit_course_small",
        dataset="cifar10",
        steps=20_000,
        batch_size=512,
        lr=1e-3,
        warmup_steps=1_000,
        augment=True,
        n_train=50_000,
        n_test=10_000,
    ),
    "mae_cifar10": PretrainRecipe(
        "mae",
        "mae_course_small",
        steps=40_000,
        batch_size=512,
        lr=3e-4,
        warmup_steps=2_000,
        n_train=50_000,
        n_test=10_000,
        dataset="cifar10",
    ),
    "simclr_cifar10": PretrainRecipe(
        "simclr",
        "simclr_course_small",
        steps=20_000,
        batch_size=512,
        lr=1e-3,
        warmup_steps=1_000,
        n_train=50_000,
        n_test=10_000,
        dataset="cifar10",
    ),
    # STL-10's 5,000 labelled training photos at 96 px (the unlabelled split is not read).
    "mae_stl10": PretrainRecipe(
        "mae",
        "mae_course_small_96",
        steps=20_000,
        batch_size=256,
        lr=1.5e-4,
        warmup_steps=1_000,
        n_train=5_000,
        n_test=8_000,
        dataset="stl10",
    ),
}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the config stored in a checkpoint's metadata."""
    kind = config.get("__type__") if isinstance(config, dict) else None
    if kind == "ViTConfig":
        fields = {k: v for k, v in config.items() if k != "__type__"}
        return VisionTransformer(ViTConfig(**fields))
    if kind == "MAEConfig":
        return MaskedAutoencoder(MAEConfig.from_dict(config))
    if kind == "SimCLRConfig":
        return SimCLR(SimCLRConfig.from_dict(config))
    if kind == "CLIPConfig":
        return CLIP(CLIPConfig.from_dict(config))
    raise CheckpointError(f"don't know how to build a model from a config of type {kind!r}")


def load_course_model(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load the shipped checkpoint ``name`` (sha256-verified) into a fresh model, eval mode.

    Returns the model and the checkpoint's metadata (recipe settings, measured results).
    """
    path, _ = course_checkpoint_path(name)
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["config"])
    load_weights(model, ckpt["model"], str(path))
    return model.eval(), ckpt["metadata"]


def load_course_encoder(name: str) -> tuple[VisionTransformer, dict[str, Any]]:
    """The pretrained image encoder of shipped checkpoint ``name`` (a ViT backbone with
    ``num_classes=0``, eval mode) and the checkpoint's metadata."""
    model, meta = load_course_model(name)
    return backbone(model), meta


def run_recipe(
    name: str,
    steps: int | None = None,
    out: str | None = None,
    force: bool = False,
    download: bool = False,
) -> Path:
    """Run recipe ``name``, save its checkpoint, and (for the default path) update the manifest.

    A full-profile recipe (:data:`FULL_RECIPES`) writes to ``data/checkpoints/full/`` and never
    touches the manifest; it keeps a resumable training state next to its output while it runs.
    Under torchrun every rank trains and rank 0 alone writes."""
    if name not in RECIPES and name not in FULL_RECIPES:
        known = ", ".join([*sorted(RECIPES), *sorted(FULL_RECIPES)])
        raise ValueError(f"unknown recipe {name!r}; known: {known}")
    full = name in FULL_RECIPES
    folder = data_dir() / "checkpoints" / ("full" if full else "")
    default = folder / f"{name}.safetensors"
    path = Path(out) if out else default
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it (or --out elsewhere)")
    recipe = FULL_RECIPES[name] if full else RECIPES[name]
    if steps is not None:
        recipe = replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 10))
    resume = path.with_name(path.stem + ".resume.safetensors") if full else None
    kwargs = {"download": download, "checkpoint_path": str(resume) if resume else None}
    if isinstance(recipe, PretrainRecipe):
        model, results = pretrain(recipe, **kwargs)
    else:
        model, results = train_classifier(recipe, **kwargs)
    if not dist.is_main():
        return path
    meta = {"recipe": name, "settings": asdict(recipe), **results}
    config = model.cfg if hasattr(model, "cfg") else None
    save_checkpoint(path, model, config, metadata=meta)
    if resume is not None:
        resume.unlink(missing_ok=True)  # finished: a rerun starts from scratch
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB): {json.dumps(results)[:200]}")
    if path.resolve() == default.resolve() and not full:
        manifest_path = data_dir() / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest.setdefault("checkpoints", {})[name] = {
            "file": str(path.relative_to(data_dir())),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "recipe": f"python -m vfm_course.recipes {name} --force",
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"updated {manifest_path}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*sorted(RECIPES), *sorted(FULL_RECIPES)])
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--out", default=None, help="write here instead of data/checkpoints/")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument(
        "--download", action="store_true", help="full profile: fetch a missing dataset"
    )
    args = parser.parse_args(argv)
    run_recipe(args.name, steps=args.steps, out=args.out, force=args.force, download=args.download)


if __name__ == "__main__":
    main()
