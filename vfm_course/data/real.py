"""The full profile's real datasets, read from torchvision's on-disk formats.

CIFAR-10, STL-10 and Oxford-IIIT Pet download through torchvision (only when asked:
``download=True``), into the same folders torchvision uses, so a copy downloaded by torchvision
elsewhere can be pointed at with ``root``. Penn-Fudan (lesson 06's full-profile detection and
instance-mask data) is not a torchvision dataset: :func:`load_pennfudan` reads the folder
unpacked from the authors' ``PennFudanPed.zip`` and never downloads.

Why the course reads CIFAR-10 and STL-10 itself instead of calling ``torchvision.datasets``:

- CIFAR-10's batches are *pickles*, and unpickling can run arbitrary code. The course never
  unpickles untrusted files, so :class:`_ArrayUnpickler` refuses everything except numpy arrays.
- torchvision checks each file's md5 and, on a mismatch, says "not found or corrupted". Here
  ``verify=True`` (the default) checks the same published md5s and names the bad file, while
  ``verify=False`` reads small test fixtures written in the same format (``tests/test_data.py``).
- Files are never re-downloaded over: a partial or corrupt folder is reported, not replaced.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.validate import check_choice, check_positive_int

TORCHVISION_DATASETS = ("cifar10", "stl10", "oxford_pets")
IGNORE_INDEX = 255  # segmentation label of the pets' uncertain border pixels (trimap value 3)


class DatasetFileError(RuntimeError):
    """A dataset or cache file is missing, corrupt, or not what it claims to be."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(folder: Path, files: list[str], name: str, download_hint: str) -> None:
    """Raise a clear error if any of ``files`` is missing from ``folder``."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetFileError(
            f"{name} is not in {folder} (missing {', '.join(missing)}). {download_hint}"
        )


def _verify(folder: Path, expected: dict[str, str], name: str) -> None:
    """Compare md5s with torchvision's published ones; name the first file that differs."""
    for filename, md5 in expected.items():
        got = _md5(folder / filename)
        if got != md5:
            raise DatasetFileError(
                f"{folder / filename} has md5 {got}, but the official {name} file has {md5}: it "
                f"is corrupt or not the official data. It was left untouched; delete {folder} "
                f"and download again with download=True."
            )


def _download(url: str, root: Path, filename: str, md5: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, str(root), filename=filename, md5=md5)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only. ``find_class`` is where pickle imports the
    callables a file asks for, so refusing all but numpy's array rebuilders makes loading a
    malicious file fail instead of running its code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a dataset file: only numpy arrays are read"
        )


def _prepare(
    ds: type,
    root: Path,
    expected: dict[str, str],
    name: str,
    size: str,
    split: str,
    download: bool,
    verify: bool,
) -> Path:
    """Download ``ds``'s archive if asked and its folder is absent, then require and (optionally)
    md5-verify the ``expected`` files. A partial folder is reported, never downloaded over."""
    folder = root / ds.base_folder
    if download and not folder.exists():
        _download(ds.url, root, ds.filename, ds.tgz_md5)
    key = name.lower().replace("-", "")
    hint = (
        f"Download it ({size}) with load_torchvision('{key}', root, '{split}', download=True)."
        if not folder.exists()
        else f"The folder is incomplete; delete {folder} and download again with download=True."
    )
    _require(folder, list(expected), name, hint)
    if verify:
        _verify(folder, expected, name)
    return folder


def _load_cifar10(
    root: Path, split: str, download: bool, verify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    listed = CIFAR10.train_list if split == "train" else CIFAR10.test_list
    expected = {f: md5 for f, md5 in listed} | {CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
    folder = _prepare(CIFAR10, root, expected, "CIFAR-10", "170 MB", split, download, verify)
    images, labels = [], []
    for filename, _ in listed:
        with open(folder / filename, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    x = torch.from_numpy(np.concatenate(images)).float().div_(255)  # (n, 3, 32, 32): rows are CHW
    return x, torch.tensor(labels, dtype=torch.int64)


def _load_stl10(
    root: Path, split: str, download: bool, verify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import STL10

    expected = {f: md5 for f, md5 in STL10.train_list + STL10.test_list if f.startswith(split)}
    # The archive is 2.6 GB because it includes the unlabeled split.
    folder = _prepare(STL10, root, expected, "STL-10", "2.6 GB", split, download, verify)
    raw = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    if raw.size != labels.size * 3 * 96 * 96:
        raise DatasetFileError(
            f"{folder / f'{split}_X.bin'} holds {raw.size} bytes, but {labels.size} labels need "
            f"{labels.size * 3 * 96 * 96} (3 x 96 x 96 each): the files do not belong together."
        )
    # The binary is column-major per channel (MATLAB's layout): swap to (C, H, W) rows.
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # (n, 3, 96, 96)
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    return x, torch.from_numpy(labels)


class PetSegmentationTransform:
    """Joint transform for Oxford-IIIT Pet: PIL image and trimap -> tensors of one size.

    Returns image float32 (3, S, S) in [0, 1] and mask int64 (S, S): 0 background, 1 pet,
    :data:`IGNORE_INDEX` for the border band (trimap 1 pet, 2 background, 3 border). The mask
    is resized with nearest neighbour so no in-between labels appear.
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = check_positive_int(image_size, "image_size")

    def __call__(
        self, image: Image.Image, trimap: Image.Image
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = (self.image_size, self.image_size)
        img = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))
        tri = np.asarray(trimap.resize(size, Image.Resampling.NEAREST), dtype=np.int64)
        lut = np.array([0, 1, 0, IGNORE_INDEX], dtype=np.int64)  # trimap value -> label
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float().div_(255)  # (3, S, S)
        return x, torch.from_numpy(lut[np.clip(tri, 0, 3)])


def _load_pets(root: Path, split: str, download: bool, image_size: int) -> Dataset:
    from torchvision.datasets import OxfordIIITPet

    folder = root / "oxford-iiit-pet"
    have = (folder / "images").is_dir() and (folder / "annotations").is_dir()
    if not have and not download:
        raise DatasetFileError(
            f"Oxford-IIIT Pet is not in {folder} (need images/ and annotations/). Download it "
            f"(800 MB) with load_torchvision('oxford_pets', root, split, download=True)."
        )
    return OxfordIIITPet(
        str(root),
        split="trainval" if split == "train" else "test",
        target_types="segmentation",
        transforms=PetSegmentationTransform(image_size),
        download=download and not have,
    )


def load_torchvision(
    name: str,
    root: str | os.PathLike,
    split: str = "train",
    download: bool = False,
    verify: bool = True,
    image_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor] | Dataset:
    """Load a real dataset from ``root`` in torchvision's layout.

    ``"cifar10"`` and ``"stl10"`` (labelled splits) return ``(images, labels)``: float32
    (n, 3, H, W) in [0, 1] (32 or 96 pixels) and int64 (n,), small enough to hold in memory.
    ``"oxford_pets"`` returns a Dataset of (image float32 (3, S, S), mask int64 (S, S)) with
    S = ``image_size`` (see :class:`PetSegmentationTransform`); its images vary in size.
    ``split`` is "train" or "test". ``download=True`` fetches only a dataset that is absent;
    ``verify`` checks torchvision's published md5s (CIFAR-10, STL-10).
    """
    if name == "pennfudan":
        raise ValueError(
            "Penn-Fudan is not a torchvision dataset, so load_torchvision cannot fetch it; "
            f"download and unzip {PENNFUDAN_URL} yourself, then read it with load_pennfudan(root)."
        )
    check_choice(name, "name", TORCHVISION_DATASETS)
    check_choice(split, "split", ("train", "test"))
    root = Path(root)
    if name == "cifar10":
        return _load_cifar10(root, split, download, verify)
    if name == "stl10":
        return _load_stl10(root, split, download, verify)
    return _load_pets(root, split, download, image_size)


# --- Penn-Fudan pedestrians: boxes and instance masks ---------------------------------------------

PENNFUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
PENNFUDAN_TEST_IMAGES = 50  # the last 50 images (by name) are the test split, as in
# torchvision's detection tutorial, which trains on the rest of the 170


class PennFudanDataset(Dataset):
    """Penn-Fudan pedestrians (Wang et al. 2007), read from the official folder layout::

        PennFudanPed/PNGImages/FudanPed00001.png      RGB photo
        PennFudanPed/PedMasks/FudanPed00001_mask.png  one 8-bit value per pixel: 0 background,
                                                      i = the i-th pedestrian (1, 2, ...)

    Item i is ``(image, target)``: image float32 (3, S, S) in [0, 1]; target a dict with
    ``boxes`` float32 (n, 4) xyxy on pixel edges (the extent of each instance mask, as
    :mod:`vfm_course.data.scenes`: columns 3..7 give x1 = 3, x2 = 8), ``labels`` int64 (n,) all 0
    (the single class "pedestrian"), ``masks`` bool (n, S, S), and ``semantic`` int64 (S, S):
    0 background, 1 pedestrian. ``image_size`` S resizes image (bilinear) and masks (nearest
    neighbour) to a square, boxes following the resized masks; ``None`` keeps the photo's size.
    """

    def __init__(self, folder: Path, names: list[str], image_size: int | None) -> None:
        self.folder, self.names = folder, names
        self.image_size = (
            None if image_size is None else check_positive_int(image_size, "image_size")
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        name = self.names[index]
        image = Image.open(self.folder / "PNGImages" / f"{name}.png").convert("RGB")
        mask = Image.open(self.folder / "PedMasks" / f"{name}_mask.png")
        if mask.size != image.size:
            raise DatasetFileError(
                f"PedMasks/{name}_mask.png is {mask.size[0]}x{mask.size[1]} but its image is "
                f"{image.size[0]}x{image.size[1]}: the files do not belong together."
            )
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
            image = image.resize(size, Image.Resampling.BILINEAR)
            mask = mask.resize(size, Image.Resampling.NEAREST)  # no in-between instance ids
        ids = np.asarray(mask, dtype=np.int64)  # (H, W), palette indices = instance ids
        present = np.unique(ids)
        present = present[present > 0]
        masks = ids[None] == present[:, None, None]  # (n, H, W)
        boxes = np.zeros((len(present), 4), dtype=np.float32)
        for j, m in enumerate(masks):
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            boxes[j] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)
        return x, {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.zeros(len(present), dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "semantic": torch.from_numpy((ids > 0).astype(np.int64)),
        }


def load_pennfudan(
    root: str | os.PathLike, split: str = "train", image_size: int | None = 128
) -> PennFudanDataset:
    """Penn-Fudan from ``root`` (the folder holding ``PennFudanPed/``); see
    :class:`PennFudanDataset`. ``split`` "train" (the first 120 images by name) or "test" (the
    last 50). Never downloads: get the zip from :data:`PENNFUDAN_URL` and unzip it in ``root``.
    """
    check_choice(split, "split", ("train", "test"))
    folder = Path(root) / "PennFudanPed"
    if not (folder / "PNGImages").is_dir() or not (folder / "PedMasks").is_dir():
        raise DatasetFileError(
            f"Penn-Fudan is not in {folder} (need PNGImages/ and PedMasks/). Download "
            f"{PENNFUDAN_URL} (53 MB) and unzip it in {Path(root)}."
        )
    names = sorted(p.stem for p in (folder / "PNGImages").glob("*.png"))
    masks = {p.name for p in (folder / "PedMasks").glob("*_mask.png")}
    missing = [f"{n}_mask.png" for n in names if f"{n}_mask.png" not in masks]
    if not names or missing:
        problem = f"PedMasks/ lacks {', '.join(missing[:3])}" if missing else "PNGImages/ is empty"
        raise DatasetFileError(f"Penn-Fudan in {folder} is incomplete: {problem}.")
    n_test = PENNFUDAN_TEST_IMAGES if len(names) > PENNFUDAN_TEST_IMAGES else len(names) // 2
    cut = len(names) - n_test  # a small folder (a test fixture) splits half and half
    return PennFudanDataset(folder, names[:cut] if split == "train" else names[cut:], image_size)
