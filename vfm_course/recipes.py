"""Recipes that produce the course's shipped checkpoints, and the loader that reads them back.

A lesson trains live for a short budget (to show the curves), then evaluates the course
checkpoint of the same model trained longer by the recipe here. Each recipe is deterministic
on CPU (seeded data, seeded init, fixed step count), writes a safetensors file whose metadata
holds the model config, the recipe's settings and its measured test accuracy, and can update
``data/manifest.json`` with the file's sha256::

    python -m vfm_course.recipes vit_digits --force     # retrain, write, update the manifest
    python -m vfm_course.recipes vit_digits --steps 50 --out /tmp/try.safetensors

An existing file is never overwritten unless ``--force`` is given.
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

from .checkpoint import (
    CheckpointError,
    course_checkpoint_path,
    data_dir,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    sha256_file,
)
from .data import BatchLoader, load_digits, load_shapes
from .metrics import evaluate_classifier
from .train import TrainConfig, fit
from .vit import VisionTransformer, ViTConfig, vit_config


@dataclass(frozen=True)
class ClassifierRecipe:
    """Supervised training of a ViT preset on one of the offline datasets."""

    preset: str
    dataset: str  # "shapes" (procedural, 32x32 RGB) or "digits" (scikit-learn, 8x8 gray)
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    augment: bool = False  # random flip + shift (not for digits: a flipped 2 is no 2)
    n_train: int = 40_000  # shapes only; digits uses its fixed 80/20 split
    n_test: int = 2_000
    seed: int = 0


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


def load_dataset(recipe: ClassifierRecipe, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's train or test split: images float (n, C, H, W) in [0, 1], labels (n,)."""
    if recipe.dataset == "digits":
        return load_digits(split)
    if recipe.dataset == "shapes":
        return load_shapes(split, recipe.n_train if split == "train" else recipe.n_test)
    raise ValueError(f"dataset must be 'shapes' or 'digits', got {recipe.dataset!r}")


def train_classifier(recipe: ClassifierRecipe, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the recipe's ViT; return the model (on CPU) and its measured results."""
    x_train, y_train = load_dataset(recipe, "train")
    x_test, y_test = load_dataset(recipe, "test")
    torch.manual_seed(recipe.seed)
    model = VisionTransformer(vit_config(recipe.preset))
    loader = BatchLoader(x_train, y_train, recipe.batch_size, shuffle=True, seed=recipe.seed)
    history = fit(
        model,
        classification_loss(random_flip_shift if recipe.augment else None),
        loader,
        TrainConfig(
            steps=recipe.steps,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            warmup_steps=recipe.warmup_steps,
            seed=recipe.seed,
            log_every=50,
            eval_every=max(1, recipe.steps // 6),
            progress=progress,
            desc=f"recipe {recipe.preset} on {recipe.dataset}",
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


RECIPES: dict[str, ClassifierRecipe] = {
    # Real handwriting, 8x8: the course ViT learns it in about half a minute on one core.
    "vit_digits": ClassifierRecipe(
        preset="vit_course_digits", dataset="digits", steps=1500, batch_size=64, lr=2e-3
    ),
}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the config stored in a checkpoint's metadata."""
    kind = config.get("__type__") if isinstance(config, dict) else None
    if kind == "ViTConfig":
        fields = {k: v for k, v in config.items() if k != "__type__"}
        return VisionTransformer(ViTConfig(**fields))
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


def run_recipe(
    name: str, steps: int | None = None, out: str | None = None, force: bool = False
) -> Path:
    """Run recipe ``name``, save its checkpoint, and (for the default path) update the manifest."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    default = data_dir() / "checkpoints" / f"{name}.safetensors"
    path = Path(out) if out else default
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it (or --out elsewhere)")
    recipe = RECIPES[name]
    if steps is not None:
        recipe = replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 10))
    model, results = train_classifier(recipe)
    meta = {"recipe": name, "settings": asdict(recipe), **results}
    config = model.cfg if hasattr(model, "cfg") else None
    save_checkpoint(path, model, config, metadata=meta)
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB): {json.dumps(results)[:200]}")
    if path.resolve() == default.resolve():
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
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--out", default=None, help="write here instead of data/checkpoints/")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    run_recipe(args.name, steps=args.steps, out=args.out, force=args.force)


if __name__ == "__main__":
    main()
