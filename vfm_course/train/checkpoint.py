"""Checkpoints as safetensors, with their config in the metadata and a sha256 manifest.

Why safetensors and not ``torch.save``: a pickle can run arbitrary code when it is loaded, so
the course never unpickles a file. A safetensors file is a JSON header plus raw tensor bytes;
everything that is not a tensor (the model config, the optimizer's hyper-parameters, the
training step) travels as JSON strings in its metadata.

The course's shipped checkpoints are listed in ``data/manifest.json`` with their sha256 and the
recipe that produced them; :func:`load_course_checkpoint` verifies the hash before it reads a
byte of the weights, so a corrupt or swapped file is reported, never silently used or replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..core.configs import config_to_jsonable
from ..core.files import CheckpointError, verify_sha256

FORMAT = "vfm_course/1"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON (for metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, _, idx, key = name.split(".", 3)
        state.setdefault(int(idx), {})[key] = value
    for idx, extra in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any = None,
    *,
    metadata: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Save ``model``'s weights (and optionally the optimizer) to a safetensors file.

    ``config`` (a dataclass or a JSON-able dict) and ``metadata`` are stored as JSON in the
    header. ``train_state`` (step, RNG state, history) lets :func:`~vfm_course.train.fit`
    resume. The file is written to a temporary name and renamed, so an interrupted save never
    leaves a half-written checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header: dict[str, str] = {
        "format": FORMAT,
        "config": json.dumps(config_to_jsonable(config)),
        "metadata": json.dumps(metadata or {}),
    }
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        header["optimizer"] = json.dumps(opt_meta)
    if train_state is not None:
        train_state = dict(train_state)
        rng = train_state.pop("torch_rng_state", None)
        if rng is not None:
            tensors["train.torch_rng_state"] = rng
        header["train_state"] = json.dumps(train_state)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read a checkpoint into a dict: ``model`` (state_dict), ``config``, ``metadata``, and
    ``optimizer`` / ``train_state`` when present. Verifies ``expected_sha256`` first if given.
    """
    path = Path(path)
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # One open: read the header first, so a foreign file is rejected before its tensors
        # are loaded, then the tensors.
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is a safetensors file but not a vfm_course checkpoint "
                    f"(format {header.get('format')!r}, expected {FORMAT!r})"
                )
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or is not a safetensors file ({err}); "
            f"it was left untouched"
        ) from err
    out: dict[str, Any] = {
        "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        "config": json.loads(header.get("config", "null")),
        "metadata": json.loads(header.get("metadata", "{}")),
    }
    if "optimizer" in header:
        opt = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        out["optimizer"] = _unflatten_optimizer(opt, json.loads(header["optimizer"]))
    if "train_state" in header:
        state = json.loads(header["train_state"])
        if "train.torch_rng_state" in tensors:
            state["torch_rng_state"] = tensors["train.torch_rng_state"]
        out["train_state"] = state
    return out


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly, turning key/shape mismatches into one clear sentence."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:3]}")
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(parts)}). Was it saved from a model "
            f"with a different config?"
        )
    model.load_state_dict(state_dict, strict=True)
