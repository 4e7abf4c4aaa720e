"""Recipes run from an installed package write to the user's cache folder, and never replace
a checkpoint shipped inside site-packages (pip owns those files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vfm_course.core import files
from vfm_course.recipes import settings as recipe_settings
from vfm_course.recipes.runner import run_recipe


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    """The package seen as installed in tmp_path/site-packages; caches under tmp_path/xdg."""
    package = tmp_path / "site-packages" / "vfm_course"
    package.mkdir(parents=True)
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(files, "package_dir", lambda: package)
    return package


def test_a_shipped_checkpoint_is_not_replaced_inside_site_packages(installed, tmp_path):
    with pytest.raises(ValueError, match="installed with the package.*--out FILE"):
        run_recipe("vit_digits", steps=1, force=True)
    assert not any(installed.rglob("*"))
    out = run_recipe("vit_digits", steps=1, out=str(tmp_path / "mine.safetensors"))
    assert out.is_file() and not any(installed.rglob("*"))


def test_a_full_recipe_writes_to_the_user_cache_folder(installed, tmp_path, monkeypatch):
    def fake_cifar10(name, root, split="train", download=False):  # no network
        g = torch.Generator().manual_seed(0)
        return torch.rand(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)

    monkeypatch.setattr(recipe_settings, "load_torchvision", fake_cifar10)
    path = run_recipe("vit_cifar10", steps=2)
    assert (
        path == tmp_path / "xdg" / "vfm_course" / "checkpoints" / "full" / "vit_cifar10.safetensors"
    )
    assert path.is_file() and not any(installed.rglob("*"))
