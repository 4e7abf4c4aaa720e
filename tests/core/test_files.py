"""Data folders follow VFM_DATA_DIR at call time, so setting it mid-session moves everything."""

from __future__ import annotations

from pathlib import Path

from vfm_course.core import cache_dir, data_dir, download_dir
from vfm_course.data import load_shapes


def test_folders_are_read_when_called(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VFM_DATA_DIR", raising=False)
    assert data_dir() == Path(__file__).resolve().parents[2] / "data"  # the repository's data/
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    assert (data_dir(), cache_dir(), download_dir()) == (
        tmp_path,
        tmp_path / "cache",
        tmp_path / "downloads",
    )


def test_the_shapes_cache_moves_with_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    x, y = load_shapes("test", 8)
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(written) == 2 and written[1] == written[0] + ".sha256"
    x2, y2 = load_shapes("test", 8)  # read back from the cache, checksum verified
    assert x.equal(x2) and y.equal(y2)
