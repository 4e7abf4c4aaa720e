"""Checkpoints: safetensors round trip, config metadata, checksums, clear errors."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vfm_course.core import CheckpointError, sha256_file, verify_sha256
from vfm_course.train import load_weights, read_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TinyConfig:
    width: int = 16


def model(width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.LayerNorm(width), nn.Linear(width, 2))


def test_round_trip_with_config_and_optimizer(tmp_path):
    m = model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        m,
        TinyConfig(),
        metadata={"acc": 0.5},
        optimizer=opt,
        train_state={"step": 7, "torch_rng_state": torch.get_rng_state()},
    )
    ck = read_checkpoint(path)
    assert ck["config"] == {"__type__": "TinyConfig", "width": 16}
    assert ck["metadata"] == {"acc": 0.5}
    assert ck["train_state"]["step"] == 7
    assert torch.equal(ck["train_state"]["torch_rng_state"], torch.get_rng_state())
    m2 = model()
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    load_weights(m2, ck["model"], "test")
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["optimizer"])
    for s1, s2 in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"])
    assert not (tmp_path / "m.safetensors.tmp").exists()


def test_corrupt_file_is_reported_and_left_alone(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model(), TinyConfig())
    data = bytearray(path.read_bytes())
    data[:8] = b"\xff" * 8  # a header length pointing nowhere
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or is not a safetensors file"):
        read_checkpoint(path)
    assert path.read_bytes() == bytes(data)


def test_checksum_mismatch_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model(), TinyConfig())
    good = sha256_file(path)
    verify_sha256(path, good)
    with pytest.raises(CheckpointError, match="corrupt or was changed"):
        verify_sha256(path, "0" * 64)
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_sha256(tmp_path / "missing.safetensors", good)


def test_mismatched_model_is_explained(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model(16), TinyConfig())
    with pytest.raises(CheckpointError, match="shape mismatch.*different config"):
        load_weights(model(32), read_checkpoint(path)["model"], str(path))


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"hello": json.dumps(1)})
    with pytest.raises(CheckpointError, match="not a vfm_course checkpoint"):
        read_checkpoint(path)
