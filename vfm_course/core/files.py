"""Where the course's files live and how they are verified.

``VFM_DATA_DIR`` (read at every call, so setting it later in a session takes effect) names the
folder holding ``manifest.json``, the shipped checkpoints, the generated-data cache and
downloads; the default is the repository's ``data/``. Files are verified by sha256 and never
silently regenerated over what a user made.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


def data_dir() -> Path:
    """The course's ``data/`` folder: ``$VFM_DATA_DIR`` if set, else the repository's."""
    if os.environ.get("VFM_DATA_DIR"):  # set and not empty
        return Path(os.environ["VFM_DATA_DIR"])
    return Path(__file__).resolve().parents[2] / "data"  # vfm_course/core/files.py -> repo


def cache_dir() -> Path:
    """Where generated data is cached (git-ignored): ``data_dir() / "cache"``, at call time."""
    return data_dir() / "cache"


def download_dir() -> Path:
    """Where torchvision datasets are downloaded (git-ignored): ``data_dir() / "downloads"``."""
    return data_dir() / "downloads"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`CheckpointError` unless the file exists and hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file {path} does not exist")
    got = sha256_file(path)
    if got != expected:
        raise CheckpointError(
            f"file {path} is corrupt or was changed: its sha256 is {got[:12]}..., the manifest "
            f"says {expected[:12]}.... Restore it (git checkout -- {path}) or rebuild it with "
            f"its recipe; it was left untouched."
        )
