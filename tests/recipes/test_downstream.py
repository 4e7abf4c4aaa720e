"""Full-profile downstream recipes run end to end offline, on fake data in the real formats."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.helpers import assert_golden
from vfm_course.data import DatasetFileError
from vfm_course.models import MAE_PRESETS, MaskedAutoencoder
from vfm_course.recipes import downstream
from vfm_course.train import read_checkpoint, save_checkpoint


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data folder holding a (tiny) pretrained encoder under the name of a full recipe."""
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MAE_PRESETS["mae_course_tiny"])  # 32 px, patch 4
    for name in ("mae_cifar10", "mae_stl10"):
        save_checkpoint(tmp_path / "checkpoints" / "full" / f"{name}.safetensors", mae, mae.cfg)
    return tmp_path


def _fake_real(name, split, n, image_size, download=False):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    m = min(n, 40)
    x = torch.rand(m, 3, image_size, image_size, generator=g)
    return x, torch.arange(m) % 10


class _FakePets:
    """Oxford-IIIT Pet as load_torchvision returns it: items (image (3, S, S), mask (S, S))."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        mask = torch.zeros(self.size, self.size, dtype=torch.int64)
        mask[4:20, 4 + i : 20 + i] = 1
        mask[3, :] = 255  # the ignored border band
        return torch.rand(3, self.size, self.size), mask


def _fake_pennfudan(root, split="train", image_size=128):
    items = []
    for i in range(5):
        boxes = torch.tensor([[2.0 + i, 4.0, 14.0 + i, 28.0]])
        items.append(
            (
                torch.rand(3, image_size, image_size),
                {"boxes": boxes, "labels": torch.zeros(1, dtype=torch.int64)},
            )
        )
    return items


@pytest.mark.parametrize("method", downstream.FINETUNE_METHODS)
def test_finetune_recipes_run_offline(method, data_dir, monkeypatch):
    monkeypatch.setattr(downstream, "load_real", _fake_real)
    name = f"finetune_cifar10_{method}"
    recipe = replace(downstream.DOWNSTREAM_RECIPES[name], steps=2, batch_size=8)
    monkeypatch.setitem(downstream.DOWNSTREAM_RECIPES, name, recipe)
    path = downstream.run_downstream(name)
    meta = read_checkpoint(path)["metadata"]
    assert meta["recipe"] == name and meta["settings"]["method"] == method
    assert meta["labels"] == 4  # 10% of 40 fake images
    # 2 steps on 4 random images: each method still predicts one class for all 40 test images
    # (labels 0-9 in turn), the deterministic run's result; a regression that broke the
    # evaluation (wrong split, wrong labels) would move it.
    assert_golden(meta["test_acc"], 0.1, 40, f"{name} test_acc")
    with pytest.raises(FileExistsError, match="--force"):
        downstream.run_downstream(name)


@pytest.mark.parametrize("name", ["seg_pets", "det_pennfudan"])
def test_dense_recipes_run_offline(name, data_dir, monkeypatch):
    monkeypatch.setattr(
        downstream, "load_torchvision", lambda *a, image_size, **k: _FakePets(image_size)
    )
    monkeypatch.setattr(downstream, "load_pennfudan", _fake_pennfudan)
    recipe = replace(downstream.DOWNSTREAM_RECIPES[name], steps=2, batch_size=2, image_size=32)
    monkeypatch.setitem(downstream.DOWNSTREAM_RECIPES, name, recipe)
    meta = read_checkpoint(downstream.run_downstream(name))["metadata"]
    key = "test_miou" if name == "seg_pets" else "map_50"
    # The deterministic 2-step run's result; mIoU is over pixels, so its slack is 0.01 (a CPU
    # with other SIMD widths sums in another order and can flip a few borderline pixels).
    golden = {"seg_pets": 0.1671, "det_pennfudan": 0.0}[name]
    assert abs(meta[key] - golden) <= 0.01, (name, meta[key])


def test_downstream_errors(data_dir):
    with pytest.raises(ValueError, match="unknown downstream recipe"):
        downstream.run_downstream("finetune_imagenet")
    with pytest.raises(ValueError, match="method"):
        downstream.FinetuneRecipe("mae_cifar10", "cifar10", "prompt", steps=1)
    with pytest.raises(ValueError, match="label_fraction"):
        downstream.FinetuneRecipe("mae_cifar10", "cifar10", "full", steps=1, label_fraction=0)
    with pytest.raises(ValueError, match="unknown full recipe"):
        downstream.load_full_encoder("mae_imagenet")
    (data_dir / "checkpoints" / "full" / "simclr_cifar10.safetensors").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="python -m vfm_course.recipes simclr_cifar10"):
        downstream.load_full_encoder("simclr_cifar10")


def test_finetune_recipe_trains_on_an_image_folder(data_dir, tmp_path, monkeypatch):
    """--image-folder: the recipe reads a folder of PNGs of any size (3 classes here, against
    CIFAR-10's 10), holds out a fifth of each class, and names the output after the folder."""
    from PIL import Image

    monkeypatch.setattr(downstream, "load_real", lambda *a, **k: pytest.fail("read CIFAR-10"))
    folder = tmp_path / "my_shapes"
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(["a", "b", "c"]):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            size = (20 + 3 * i, 40 - i)  # no two images share a size
            pixels = (torch.rand(size[1], size[0], 3, generator=g) * 80 + 80 * k).byte().numpy()
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    name = "finetune_cifar10_probe"
    recipe = replace(downstream.DOWNSTREAM_RECIPES[name], steps=30, batch_size=8, lr=1e-2)
    monkeypatch.setitem(downstream.DOWNSTREAM_RECIPES, name, recipe)
    downstream.main([name, "--image-folder", str(folder)])  # the command line's way in
    path = data_dir / "checkpoints" / "full" / f"{name}_my_shapes.safetensors"
    ckpt = read_checkpoint(path)
    meta = ckpt["metadata"]
    assert meta["dataset"] == str(folder) and meta["labels"] == 2  # 10% of the 24 kept to train
    assert meta["settings"]["dataset"] == str(folder)  # the settings name what was trained on
    assert ckpt["model"]["head.weight"].shape[0] == 3  # one output per class folder
    with pytest.raises(ValueError, match="finetune_"):
        downstream.run_downstream("seg_pets", image_folder=str(folder))
    (folder / "c" / "0.png").write_bytes(b"broken")
    with pytest.raises(DatasetFileError, match="could not be read"):
        downstream.run_downstream(name, force=True, image_folder=str(folder))
