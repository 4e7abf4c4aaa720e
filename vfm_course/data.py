"""Datasets and loaders: every lesson's images as in-memory tensors, and the batches over them.

Images live as float32 (n, C, H, W) tensors in [0, 1]. The tiny profile's data fit in memory
(20,000 shapes of 32 x 32 are 245 MB), and so does CIFAR-10, so :class:`BatchLoader` cuts
batches by tensor indexing instead of collating items one Python call at a time (the per-item
path of ``torch.utils.data.DataLoader`` costs more than a small model's step on a CPU).

Sources: the generated shapes world (:func:`load_shapes`, cached on disk with a checksum),
scikit-learn's bundled handwritten digits (:func:`load_digits`), and, in the full profile,
torchvision's real datasets (:func:`load_torchvision`, in :mod:`vfm_course.torchvision_data`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .checkpoint import data_dir, sha256_file
from .profile import Profile
from .shapes import ShapesConfig, generate_shapes
from .torchvision_data import DatasetFileError, load_torchvision
from .validate import check_choice, check_positive_int, check_tensor

_DATA_DIR = data_dir()
CACHE_DIR = _DATA_DIR / "cache"  # generated data (git-ignored); $VFM_DATA_DIR moves it
DOWNLOAD_DIR = _DATA_DIR / "downloads"  # torchvision downloads (git-ignored)
SPLIT_SEEDS = {"train": 10_007, "test": 20_011}  # fixed and far from the seeds people type
_CACHE_VERSION = 1  # bump when the shapes renderer changes, so old cache files are not reused


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, C) images -> float32 (n, C, H, W) in [0, 1]."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a uint8 numpy array (n, H, W, C), got {got}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)  # (n, C, H, W)


class ImageArrayDataset(Dataset):
    """A map-style Dataset over in-memory uint8 images (n, H, W, C) and labels (n,).

    Item ``i`` is ``(x, y)``: x float32 (C, H, W) in [0, 1], passed through ``transform`` if
    given; y an int64 scalar tensor. For training loops prefer :class:`BatchLoader`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            got = getattr(images, "shape", type(images).__name__)
            raise ValueError(f"images must be a uint8 numpy array (n, H, W, C), got {got}")
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        self.images, self.labels, self.transform = images, labels.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255)  # (C, H, W)
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(self.labels[index])


class BatchLoader:
    """Yield ``(x, y)`` batches from in-memory tensors by indexing, not per-item Python.

    ``images`` (n, ...) and ``labels`` (n, ...) share their first dimension (labels may be class
    ids (n,) or token ids (n, T)). ``transform`` runs on each whole batch (B, C, H, W), e.g.
    augmentation. With ``shuffle`` the order is a permutation seeded by ``(seed, epoch)``: call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``) to get a new order that
    is still reproducible. :meth:`permutation` is the one place the order is made.

    Several processes: :meth:`shard` gives rank r of W its own loader over the same seeded
    order; ``batch_size`` stays the *global* batch and each rank yields ``batch_size // W``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        check_tensor(images, "images", ndim=(2, 3, 4, 5))
        check_tensor(labels, "labels")
        if len(labels) != len(images):
            raise ValueError(
                f"images and labels must have the same length, got {len(images)} images and "
                f"{len(labels)} labels"
            )
        check_positive_int(batch_size, "batch_size")
        if drop_last and batch_size > len(images):
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(images)} samples, so with "
                f"drop_last=True there would be no batch at all"
            )
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.transform, self.epoch = seed, transform, 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> BatchLoader:
        """This loader's share for process ``rank`` of ``world_size`` (a new loader over the
        same tensors; this one is unchanged), as ``DistributedSampler`` does for a DataLoader.

        Every rank makes the same seeded permutation and takes every ``world_size``-th index
        from position ``rank`` on, so the shares are disjoint and together they cover the
        epoch. Global batch b of the unsharded loader is exactly the union of the ranks' batch
        b (interleaved), each rank holding ``batch_size // world_size`` of it. Sizes that do not
        divide: with ``drop_last`` the last partial global batch is dropped; without it the
        order is padded by repeating its start (as ``DistributedSampler`` does) so every rank
        gets the same number of equal-sized batches, which DDP's lock-step needs.
        """
        check_positive_int(world_size, "world_size")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer from 0 to {world_size - 1}, got {rank!r}")
        if self.world_size != 1:
            if (self.rank, self.world_size) == (rank, world_size):
                return self
            raise ValueError(
                f"this loader is already rank {self.rank}'s share of {self.world_size}; shard "
                f"the original loader instead"
            )
        if self.batch_size % world_size != 0:
            lo = self.batch_size - self.batch_size % world_size
            raise ValueError(
                f"batch_size {self.batch_size} (the global batch over all processes) is not "
                f"divisible by the {world_size} processes; pick a multiple of {world_size} "
                f"(e.g. {lo or world_size} or {lo + world_size}) so every process gets an "
                f"equal share"
            )
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        return shard

    @property
    def local_batch_size(self) -> int:
        """Samples per batch this process yields: ``batch_size // world_size``."""
        return self.batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next iteration uses."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        """This epoch's order of all n samples, the same on every rank: int64 (n,)."""
        n = len(self.images)
        if not self.shuffle:
            return torch.arange(n)
        # SeedSequence mixes (seed, epoch) into one well-spread seed: nearby pairs such as
        # (0, 1) and (1, 0) get unrelated permutations.
        mixed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        return torch.randperm(n, generator=torch.Generator().manual_seed(int(mixed)))

    def indices(self) -> torch.Tensor:
        """The samples this loader yields this epoch, in order: int64. Unsharded, that is the
        whole :meth:`permutation` (n,); sharded, this rank's interleaved slice of it."""
        order = self.permutation()
        if self.world_size == 1:
            return order
        n, W = len(order), self.world_size
        if self.drop_last:
            order = order[: (n // self.batch_size) * self.batch_size]
        else:
            total = math.ceil(n / W) * W  # pad by wrapping around, as DistributedSampler does
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank :: W]

    def __len__(self) -> int:
        """Batches per epoch; the same for every shard (a shard's batches are smaller)."""
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, size = self.indices(), self.local_batch_size
        for b in range(len(self)):
            idx = order[b * size : (b + 1) * size]
            x = self.images[idx.to(self.images.device)]  # (B, C, H, W)
            y = self.labels[idx.to(self.labels.device)]
            yield (self.transform(x) if self.transform is not None else x), y


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
    cache_dir: str | os.PathLike | None = CACHE_DIR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shapes world's ``split`` ("train" or "test"): images float32 (n, 3, H, W) in [0, 1],
    labels int64 (n,). Train and test come from different fixed seeds (:data:`SPLIT_SEEDS`).

    With ``cache_dir`` the uint8 arrays are saved as ``.npz`` plus a ``.sha256`` file and read
    back on the next call after checking the hash; a file that fails the check raises
    :class:`DatasetFileError` and is never overwritten. ``cache_dir=None`` skips the cache.
    """
    check_choice(split, "split", ("train", "test"))
    check_positive_int(n, "n")
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    if cache_dir is None:
        data = generate_shapes(n, config, seed=SPLIT_SEEDS[split])
        return images_to_tensor(data.images), torch.from_numpy(data.labels)
    folder = Path(cache_dir)
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
    root: str | os.PathLike = DOWNLOAD_DIR,
    download: bool = False,
    cache_dir: str | os.PathLike | None = CACHE_DIR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile's image classification data: shapes (tiny) or CIFAR-10 (full).

    Returns ``profile.n_train`` or ``profile.n_test`` images float32 (n, 3, S, S) in [0, 1]
    with S = ``profile.image_size``, and labels int64 (n,). ``root`` and ``download`` are
    used by the full profile only.
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a vfm_course.profile.Profile, got {type(profile)}")
    check_choice(split, "split", ("train", "test"))
    n = profile.n_train if split == "train" else profile.n_test
    if profile.dataset == "shapes":
        config = ShapesConfig(image_size=profile.image_size)
        return load_shapes(split, n, config, cache_dir=cache_dir)
    check_choice(profile.dataset, "profile.dataset", ("shapes", "cifar10"))
    x, y = load_torchvision("cifar10", root, split, download=download)
    x, y = x[:n], y[:n]
    if x.shape[-1] != profile.image_size:
        size = (profile.image_size, profile.image_size)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp_(0, 1)
    return x, y


# --- back to pictures -----------------------------------------------------------------------------


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Undo ``(x - mean) / std`` per channel on (C, H, W) or (B, C, H, W) images."""
    check_tensor(x, "x", ndim=(3, 4), floating=True)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * s + m


def to_image(
    x: torch.Tensor,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> np.ndarray:
    """A (C, H, W) float image tensor -> numpy for ``plt.imshow``: (H, W, C) in [0, 1], or
    (H, W) for one channel. Pass the ``mean``/``std`` it was normalized with, if any."""
    check_tensor(x, "x", ndim=3, floating=True)
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std to undo a normalization, or neither")
    if mean is not None and std is not None:
        x = denormalize(x, mean, std)
    img = x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    return img[..., 0] if img.shape[-1] == 1 else img
