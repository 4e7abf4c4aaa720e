"""Datasets and loaders: every lesson's images as in-memory tensors, and the batches over them.

Images live as float32 (n, C, H, W) tensors in [0, 1]. The tiny profile's data fit in memory
(20,000 shapes of 32 x 32 are 245 MB), and so does CIFAR-10, so :class:`BatchLoader` cuts
batches by tensor indexing instead of collating items one Python call at a time (the per-item
path of ``torch.utils.data.DataLoader`` costs more than a small model's step on a CPU).

Sources: the generated shapes world (:func:`load_shapes`, cached on disk with a checksum),
scikit-learn's bundled handwritten digits (:func:`load_digits`), and, in the full profile,
torchvision's real datasets (:func:`load_torchvision`, in :mod:`vfm_course.data.real`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core import files
from ..core.files import sha256_file
from ..core.profile import Profile
from ..core.validate import check_choice, check_positive_int
from .loaders import images_to_tensor
from .real import DatasetFileError, load_torchvision
from .shapes import COURSE_WORLD, ShapesConfig, generate_shapes, shape_masks

AUTO = "auto"  # a folder argument's default: the one under data_dir(), found at call time
SPLIT_SEEDS = {"train": 10_007, "test": 20_011}  # fixed and far from the seeds people type
_CACHE_VERSION = 1  # bump when the shapes renderer changes, so old cache files are not reused


# --- the shapes world, cached ---------------------------------------------------------------------


def _temp_next_to(path: Path) -> Path:
    """A fresh temporary file in ``path``'s folder (so a rename onto ``path`` is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a cache is for everyone
    return Path(tmp)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (zip of .npy) with fixed timestamps, so the same arrays give the same bytes
    and processes writing the same cache file at once agree on its checksum."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def _save_cache(path: Path, sidecar: Path, arrays: dict[str, np.ndarray]) -> None:
    """Publish ``sidecar`` first, then ``path``, each by an atomic rename: whoever sees the
    data file (another process of a multi-GPU run, say) also sees its checksum."""
    tmp_data, tmp_sum = _temp_next_to(path), _temp_next_to(sidecar)
    try:
        _write_npz(tmp_data, arrays)
        tmp_sum.write_text(f"{sha256_file(tmp_data)}  {path.name}\n")  # `sha256sum -c` format
        os.replace(tmp_sum, sidecar)
        os.replace(tmp_data, path)
    finally:
        for tmp in (tmp_data, tmp_sum):
            tmp.unlink(missing_ok=True)


def _cache_name(split: str, n: int, config: ShapesConfig) -> str:
    """File name that changes with everything the content depends on."""
    key = json.dumps(
        {"v": _CACHE_VERSION, "split": split, "n": n, "config": dataclasses.asdict(config)},
        sort_keys=True,
    )
    return f"shapes-{split}-{n}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def load_shapes(
    split: str,
    n: int,
    config: ShapesConfig = ShapesConfig(),  # noqa: B008 (frozen: a shared default is safe)
    cache_dir: str | os.PathLike | None = AUTO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shapes world's ``split`` ("train" or "test"): images float32 (n, 3, H, W) in [0, 1],
    labels int64 (n,). Train and test come from different fixed seeds (:data:`SPLIT_SEEDS`).

    With ``cache_dir`` the uint8 arrays are saved as ``.npz`` plus a ``.sha256`` file and read
    back on the next call after checking the hash; a file that fails the check raises
    :class:`DatasetFileError` and is never overwritten. ``cache_dir=None`` skips the cache;
    the default is :func:`vfm_course.core.files.cache_dir` (which follows ``VFM_DATA_DIR``).
    """
    check_choice(split, "split", ("train", "test"))
    check_positive_int(n, "n")
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    if cache_dir is None:
        data = generate_shapes(n, config, seed=SPLIT_SEEDS[split])
        return images_to_tensor(data.images), torch.from_numpy(data.labels)
    folder = files.cache_dir() if cache_dir == AUTO else Path(cache_dir)
    path = folder / _cache_name(split, n, config)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists():
        data = generate_shapes(n, config, seed=SPLIT_SEEDS[split])
        folder.mkdir(parents=True, exist_ok=True)
        _save_cache(path, sidecar, {"images": data.images, "labels": data.labels})
        return images_to_tensor(data.images), torch.from_numpy(data.labels)
    if not sidecar.is_file():
        raise DatasetFileError(
            f"cache file {path} has no checksum file {sidecar.name}, so it cannot be trusted. "
            f"Delete {path} and it will be generated again."
        )
    expected, got = (sidecar.read_text().split() or [""])[0], sha256_file(path)
    if got != expected:
        raise DatasetFileError(
            f"cache file {path} is corrupt or was changed (sha256 {got[:12]}..., expected "
            f"{expected[:12]}...). It was left untouched; delete it and it will be generated "
            f"again."
        )
    with np.load(path, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    return images_to_tensor(images), torch.from_numpy(labels)


def load_shape_masks(
    split: str,
    n: int,
    config: ShapesConfig = ShapesConfig(),  # noqa: B008 (frozen: a shared default is safe)
) -> torch.Tensor:
    """The object masks of ``load_shapes(split, n, config)``'s images: bool (n, H, W), True on
    the shape (:func:`~vfm_course.data.shapes.shape_masks`). Not cached: drawing the shapes
    alone, without backgrounds, is fast."""
    check_choice(split, "split", ("train", "test"))
    return torch.from_numpy(shape_masks(n, config, seed=SPLIT_SEEDS[split]))


# --- real images ----------------------------------------------------------------------------------


def load_digits(
    split: str, test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (1,797 real 8 x 8 scans, no download).

    Returns images float32 (n, 1, 8, 8) in [0, 1] (the raw pixels count 0..16) and labels
    int64 (n,), from a stratified split that is the same for the same ``seed``.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    check_choice(split, "split", ("train", "test"))
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    bunch = sk_load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(bunch.target)),
        test_size=test_fraction,
        random_state=seed,
        stratify=bunch.target,
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    x = torch.from_numpy(bunch.images[idx]).float().div_(16).unsqueeze(1)  # (n, 1, 8, 8)
    return x, torch.from_numpy(bunch.target[idx]).long()


def get_classification_data(
    profile: Profile,
    split: str,
    root: str | os.PathLike = AUTO,
    download: bool = False,
    cache_dir: str | os.PathLike | None = AUTO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile's image classification data: the course world (tiny) or CIFAR-10 (full).

    Returns ``profile.n_train`` or ``profile.n_test`` images float32 (n, 3, S, S) in [0, 1]
    with S = ``profile.image_size``, and labels int64 (n,). ``root`` and ``download`` are
    used by the full profile only.
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a vfm_course.core.Profile, got {type(profile)}")
    check_choice(split, "split", ("train", "test"))
    n = profile.n_train if split == "train" else profile.n_test
    if profile.dataset == "shapes":
        config = dataclasses.replace(COURSE_WORLD, image_size=profile.image_size)
        return load_shapes(split, n, config, cache_dir=cache_dir)
    check_choice(profile.dataset, "profile.dataset", ("shapes", "cifar10"))
    root = files.download_dir() if root == AUTO else root
    x, y = load_torchvision("cifar10", root, split, download=download)
    x, y = x[:n], y[:n]
    if x.shape[-1] != profile.image_size:
        size = (profile.image_size, profile.image_size)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp_(0, 1)
    return x, y
