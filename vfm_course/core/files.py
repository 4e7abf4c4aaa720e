"""Where the course's files live and how they are verified.

Two kinds of folder, found at every call (so setting a variable mid-session takes effect):

- the *data* folder holds ``manifest.json`` and the shipped checkpoints it lists (read-only for
  learners): ``$VFM_DATA_DIR`` if set, else the repository's ``data/`` when the package runs
  from a checkout (editable or source install), else the copy shipped inside the installed
  package (``vfm_course/_data/``, found through :mod:`importlib.resources`; the build copies it
  from the repository's ``data/``, which stays the one source of truth);
- the *work* folder holds what the course makes: the generated-data cache, downloads and
  full-profile checkpoints. It is the data folder for ``$VFM_DATA_DIR`` and for a checkout, but
  for an installed package a user cache folder (``$XDG_CACHE_HOME/vfm_course``, else
  ``~/.cache/vfm_course``): site-packages may be read-only, and pip would delete anything
  written there on the next upgrade.

Files are verified by sha256 and never silently regenerated over what a user made.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PACKAGE = "vfm_course"
SHIPPED = "_data"  # the installed package's copy of data/ (written by setup.py's build_py)
# What the notebooks' Colab cell installs; --no-deps keeps Colab's preinstalled torch.
INSTALL_COMMAND = (
    'pip install --force-reinstall --no-deps "vfm_course @ '
    'git+https://github.com/vfm-course/vfm-course"'
)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


@dataclass(frozen=True)
class DataLocation:
    """Where the course reads its shipped files (``data``) and writes what it makes (``work``),
    and which rule chose them (``source``: "VFM_DATA_DIR", "checkout" or "installed")."""

    data: Path
    work: Path
    source: str


def package_dir() -> Path:
    """The folder of the imported ``vfm_course`` package, through :mod:`importlib.resources`.

    A package imported from a zip file has no folder to read checkpoints from (safetensors
    needs a real file), so its path then points nowhere and loading reports the data missing.
    """
    return Path(str(resources.files(PACKAGE)))


def is_checkout(root: Path) -> bool:
    """Whether ``root`` (the folder above the package) is the course repository: its
    ``pyproject.toml`` names the package. site-packages holds no such file, and checking the
    name keeps an unrelated project's ``pyproject.toml`` from being mistaken for ours."""
    pyproject = root / "pyproject.toml"
    return pyproject.is_file() and f'name = "{PACKAGE}"' in pyproject.read_text(errors="replace")


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/vfm_course``, else ``~/.cache/vfm_course``
    (the XDG spec ignores a relative ``XDG_CACHE_HOME``, so do we)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / PACKAGE


def locate_data(package: Path) -> DataLocation:
    """The folders for a ``vfm_course`` package imported from ``package``, by the rules in the
    module docstring: ``$VFM_DATA_DIR``, else a checkout's ``data/``, else the shipped copy."""
    if os.environ.get("VFM_DATA_DIR"):  # set and not empty
        chosen = Path(os.environ["VFM_DATA_DIR"])
        return DataLocation(chosen, chosen, "VFM_DATA_DIR")
    if is_checkout(package.parent):
        return DataLocation(package.parent / "data", package.parent / "data", "checkout")
    return DataLocation(package / SHIPPED, user_cache_dir(), "installed")


def data_location() -> DataLocation:
    """The folders of the running package (see :func:`locate_data`)."""
    return locate_data(package_dir())


def data_dir() -> Path:
    """The folder holding ``manifest.json`` and the shipped checkpoints (read-only)."""
    return data_location().data


def work_dir() -> Path:
    """The folder the course writes into (cache, downloads, full-profile checkpoints)."""
    return data_location().work


def cache_dir() -> Path:
    """Where generated data is cached: ``work_dir() / "cache"`` (git-ignored in a checkout)."""
    return work_dir() / "cache"


def download_dir() -> Path:
    """Where torchvision datasets are downloaded: ``work_dir() / "downloads"``."""
    return work_dir() / "downloads"


def how_to_restore_data(location: DataLocation | None = None) -> str:
    """What a learner does when the shipped files are missing, in the words of how the
    package was found (``location``, default: the running package's)."""
    location = location or data_location()
    if location.source == "VFM_DATA_DIR":
        return (
            f"VFM_DATA_DIR is set to {location.data}, which is not a copy of the course "
            f"repository's data/ folder. Point VFM_DATA_DIR at such a copy, or unset it to use "
            f"the checkpoints installed with the package."
        )
    if location.source == "checkout":
        return (
            f"This copy of the course repository has lost files from {location.data}: restore "
            f"them with `git checkout -- data/` (or clone the repository again)."
        )
    return (
        f"The installed vfm_course package does not carry the course checkpoints (it was "
        f"installed without them, or from an old version). Reinstall it from the course "
        f"repository with `{INSTALL_COMMAND}` (on Colab: `%pip ...` in a cell, then Runtime > "
        f"Restart session), or set the environment variable VFM_DATA_DIR to a copy of the "
        f"repository's data/ folder."
    )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, advice: str | None = None) -> None:
    """Raise :class:`CheckpointError` unless the file exists and hashes to ``expected``.
    ``advice`` ends the mismatch message: how to get the file back, in the words of where it
    came from (a shipped checkpoint passes :func:`how_to_restore_data`); this function cannot
    know whether ``path`` lives in a checkout, an installed package or a user's folder."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file {path} does not exist")
    got = sha256_file(path)
    if got != expected:
        advice = advice or "Restore the original file, or rebuild it with the recipe that made it."
        raise CheckpointError(
            f"file {path} is corrupt or was changed: its sha256 is {got[:12]}..., the manifest "
            f"says {expected[:12]}...; it was left untouched. {advice}"
        )
