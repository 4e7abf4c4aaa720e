"""Course models by name: rebuild one from a checkpoint's config, load a shipped one.

Shipped checkpoints are listed in ``data/manifest.json`` with their sha256; a file that does
not match is reported, never loaded (and never unpickled: safetensors only). The folder is
:func:`vfm_course.core.files.data_dir`: the repository's ``data/`` in a checkout, the copy
inside the installed package otherwise (or ``$VFM_DATA_DIR``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..core.files import CheckpointError, data_location, how_to_restore_data, verify_sha256
from ..train.checkpoint import load_weights, read_checkpoint
from .classifier import backbone
from .clip import CLIP, CLIPConfig
from .cnn import SmallCNN
from .dino import DINO, DINOConfig
from .mae import MAEConfig, MaskedAutoencoder
from .simclr import SimCLR, SimCLRConfig
from .vit import VisionTransformer, ViTConfig


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``data/manifest.json`` listing of shipped files with their sha256 and recipe.

    Without ``path``, the one in the data folder; when that is missing the error says how to
    get the course's files back, which depends on how the package was installed."""
    if path is not None:
        if not Path(path).is_file():
            raise CheckpointError(f"manifest {path} not found")
        return json.loads(Path(path).read_text())
    location = data_location()
    path = location.data / "manifest.json"
    if not path.is_file():
        raise CheckpointError(
            f"the course's list of checkpoints ({path}) was not found. "
            f"{how_to_restore_data(location)}"
        )
    return json.loads(path.read_text())


def course_checkpoint_path(name: str) -> tuple[Path, dict[str, Any]]:
    """Path and manifest entry of the shipped checkpoint ``name`` (sha256 verified)."""
    entries = read_manifest().get("checkpoints", {})
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise CheckpointError(f"no course checkpoint named {name!r}; known: {known}")
    entry = entries[name]
    location = data_location()
    path = location.data / entry["file"]
    # Retraining writes the manifest's folder: advice for a checkout or $VFM_DATA_DIR only.
    writable = location.source != "installed" and "recipe" in entry
    rebuild = f" Or rebuild it: {entry['recipe']}" if writable else ""
    if not path.is_file():
        raise CheckpointError(
            f"the course checkpoint {name!r} ({path}) is missing. "
            f"{how_to_restore_data(location)}{rebuild}"
        )
    verify_sha256(path, entry["sha256"], advice=how_to_restore_data(location) + rebuild)
    return path, entry


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the config stored in a checkpoint's metadata."""
    kind = config.get("__type__") if isinstance(config, dict) else None
    if kind == "ViTConfig":
        fields = {k: v for k, v in config.items() if k != "__type__"}
        return VisionTransformer(ViTConfig(**fields))
    if kind == "CNNConfig":
        return SmallCNN(**{k: v for k, v in config.items() if k != "__type__"})
    if kind == "MAEConfig":
        return MaskedAutoencoder(MAEConfig.from_dict(config))
    if kind == "SimCLRConfig":
        return SimCLR(SimCLRConfig.from_dict(config))
    if kind == "DINOConfig":
        return DINO(DINOConfig.from_dict(config))
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
