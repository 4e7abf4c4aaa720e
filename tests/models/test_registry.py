"""Shipped checkpoints by name: when the manifest or a checkpoint is missing, the error says
what to do in the words of how the package was installed (checkout, wheel or VFM_DATA_DIR)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import installed_package
from vfm_course.core import CheckpointError, files
from vfm_course.models import course_checkpoint_path, read_manifest

REPO = Path(__file__).resolve().parents[2]


def test_missing_data_says_what_to_do_for_each_way_of_installing(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    package = installed_package(tmp_path)
    monkeypatch.setattr(files, "package_dir", lambda: package)
    with pytest.raises(CheckpointError, match="Reinstall it from the course repository") as error:
        read_manifest()
    assert "pip install --force-reinstall --no-deps" in str(error.value)
    assert "VFM_DATA_DIR to a copy of the repository's data/ folder" in str(error.value)

    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="VFM_DATA_DIR is set to .*empty.*unset it"):
        read_manifest()

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "pyproject.toml", checkout)  # what makes a folder the repository
    monkeypatch.delenv("VFM_DATA_DIR")
    monkeypatch.setattr(files, "package_dir", lambda: checkout / "vfm_course")
    with pytest.raises(CheckpointError, match="git checkout -- data/"):
        read_manifest()


def test_a_missing_checkpoint_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    package = installed_package(tmp_path)
    (package / "_data").mkdir()
    shutil.copy(REPO / "data" / "manifest.json", package / "_data")  # but no checkpoints
    monkeypatch.setattr(files, "package_dir", lambda: package)
    with pytest.raises(CheckpointError, match="'vit_digits' .* is missing. The installed") as e:
        course_checkpoint_path("vit_digits")
    assert "rebuild" not in str(e.value)  # retraining would write into site-packages

    monkeypatch.setenv("VFM_DATA_DIR", str(package / "_data"))
    with pytest.raises(CheckpointError, match="rebuild it: python -m vfm_course.recipes"):
        course_checkpoint_path("vit_digits")


def test_a_changed_checkpoint_gets_advice_for_how_the_package_was_installed(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    package = installed_package(tmp_path)
    shipped = package / "_data"
    shipped.mkdir()
    shutil.copy(REPO / "data" / "manifest.json", shipped)
    entry = read_manifest(REPO / "data" / "manifest.json")["checkpoints"]["vit_digits"]
    (shipped / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
    (shipped / entry["file"]).write_bytes(b"not the checkpoint")
    monkeypatch.setattr(files, "package_dir", lambda: package)
    with pytest.raises(CheckpointError, match="corrupt or was changed") as e:
        course_checkpoint_path("vit_digits")
    assert "Reinstall it from the course repository" in str(e.value)
    assert "git checkout" not in str(e.value)  # an installed package has no checkout
    assert (shipped / entry["file"]).read_bytes() == b"not the checkpoint"  # left untouched
