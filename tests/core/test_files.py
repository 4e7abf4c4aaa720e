"""Data folders follow VFM_DATA_DIR at call time, so setting it mid-session moves everything; a
checkout reads and writes its data/; an installed package reads the data shipped inside it and
writes to the user's cache folder, never into site-packages."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import installed_package
from vfm_course.core import cache_dir, data_dir, data_location, download_dir, files
from vfm_course.data import load_shapes

REPO = Path(__file__).resolve().parents[2]


def test_folders_are_read_when_called(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    assert data_dir() == REPO / "data"  # the repository's data/
    assert data_location().source == "checkout"
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    assert (data_dir(), cache_dir(), download_dir()) == (
        tmp_path,
        tmp_path / "cache",
        tmp_path / "downloads",
    )


def test_a_checkout_reads_and_writes_its_data_folder(monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    assert files.locate_data(REPO / "vfm_course") == files.DataLocation(
        REPO / "data", REPO / "data", "checkout"
    )
    assert (cache_dir(), download_dir()) == (REPO / "data" / "cache", REPO / "data" / "downloads")


def test_an_installed_package_reads_its_shipped_data_and_caches_per_user(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    package = installed_package(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.locate_data(package) == files.DataLocation(
        package / "_data", tmp_path / "xdg" / "vfm_course", "installed"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec ignores it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.locate_data(package).work == tmp_path / "home" / ".cache" / "vfm_course"
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path / "mine"))  # still wins
    assert files.locate_data(package).data == tmp_path / "mine"


def test_another_projects_pyproject_is_not_a_checkout(tmp_path) -> None:
    package = installed_package(tmp_path)
    (package.parent / "pyproject.toml").write_text('[project]\nname = "something_else"\n')
    assert not files.is_checkout(package.parent)
    assert files.is_checkout(REPO)


def test_the_shapes_cache_moves_with_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    x, y = load_shapes("test", 8)
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(written) == 2 and written[1] == written[0] + ".sha256"
    x2, y2 = load_shapes("test", 8)  # read back from the cache, checksum verified
    assert x.equal(x2) and y.equal(y2)


def test_an_installed_package_caches_outside_site_packages(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    package = installed_package(tmp_path)
    monkeypatch.setattr(files, "package_dir", lambda: package)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_shapes("test", 8)
    assert len(list((tmp_path / "xdg" / "vfm_course" / "cache").iterdir())) == 2
    assert not any(package.rglob("*"))
