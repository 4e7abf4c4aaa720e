"""Run a recipe by name, save its checkpoint, update the manifest; the CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from ..core.files import data_location, sha256_file
from ..train import distributed as dist
from ..train.checkpoint import save_checkpoint
from .catalog import FULL_RECIPES, RECIPES
from .classifier import train_classifier
from .pretrain import pretrain
from .settings import PretrainRecipe


def run_recipe(
    name: str,
    steps: int | None = None,
    out: str | None = None,
    force: bool = False,
    download: bool = False,
) -> Path:
    """Run recipe ``name``, save its checkpoint, and (for the default path) update the manifest.

    A tiny recipe's default output is the shipped checkpoint in the data folder
    (``data/checkpoints/``). A full-profile recipe (:data:`FULL_RECIPES`) writes to the work
    folder's ``checkpoints/full/`` (``data/`` in a checkout, a user cache folder for an
    installed package) and never touches the manifest; it keeps a resumable training state next
    to its output while it runs. Under torchrun every rank trains and rank 0 alone writes."""
    if name not in RECIPES and name not in FULL_RECIPES:
        known = ", ".join([*sorted(RECIPES), *sorted(FULL_RECIPES)])
        raise ValueError(f"unknown recipe {name!r}; known: {known}")
    full = name in FULL_RECIPES
    location = data_location()
    folder = location.work / "checkpoints" / "full" if full else location.data / "checkpoints"
    default = folder / f"{name}.safetensors"
    path = Path(out) if out else default
    if not full and location.source == "installed" and path.resolve() == default.resolve():
        # The shipped checkpoints inside site-packages belong to pip: an upgrade would delete
        # the new file, and its manifest entry would no longer match the repository's.
        raise ValueError(
            f"retraining {name} would replace the checkpoint installed with the package "
            f"({default}). Pass --out FILE to write it elsewhere, or run it from a checkout of "
            f"the course repository (or with VFM_DATA_DIR set to a copy of its data/ folder) to "
            f"update the shipped checkpoint and its manifest."
        )
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
        manifest_path = location.data / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest.setdefault("checkpoints", {})[name] = {
            "file": str(path.relative_to(location.data)),
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
