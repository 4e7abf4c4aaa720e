"""Bring your own images: a folder laid out as torchvision's ``ImageFolder`` expects, one
sub-folder per class (``root/cat/001.jpg``, ``root/dog/xyz.png``), read into the course's
in-memory form (float32 (n, 3, S, S) in [0, 1] and int64 labels).

Classes are the sub-folder names in sorted order and files are the ones with an image
extension torchvision knows, so the labels are the ones ``ImageFolder(root).class_to_idx``
gives. Each image, of any size or mode, becomes RGB, is resized so its shorter side is S and
centre-cropped to S x S (the usual evaluation transform), so nothing is stretched.

A folder a classifier cannot use gets an error that says what to fix: a missing folder, no
class sub-folders, no images, a single class, or files that cannot be read as images (all of
them listed, so one pass fixes them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from ..core.validate import check_positive_int
from .real import DatasetFileError


@dataclass(frozen=True, eq=False)
class FolderImages:
    """``images`` float32 (n, 3, S, S) in [0, 1]; ``labels`` int64 (n,) index ``classes``;
    ``paths`` the file of each image, in the order read (class by class, files sorted)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.labels)


def find_images(root: str | os.PathLike) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names (sorted sub-folder names) and every (file, label) under ``root``, with
    the files of each class sorted; sub-folders of a class folder are searched too, as
    ``ImageFolder`` does. Raises a learner-facing error for a folder a classifier cannot use."""
    root = Path(root).expanduser()
    layout = "one sub-folder per class, e.g. my_images/cat/001.jpg and my_images/dog/002.png"
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist; it should hold {layout}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; pass the folder that holds {layout}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise ValueError(f"{root} has no sub-folders; the images must be in {layout}")
    samples, empty = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
        )
        if not files:
            empty.append(name)
        samples += [(p, label) for p in files]
    if empty:
        raise ValueError(
            f"no images in the class folder(s) {', '.join(empty)} of {root} (image files end in "
            f"{', '.join(IMG_EXTENSIONS)}); add images or remove the empty folders"
        )
    if len(classes) < 2:
        raise ValueError(
            f"{root} has one class ({classes[0]}); a classifier needs at least two class "
            f"sub-folders"
        )
    return classes, samples


def load_image_folder(root: str | os.PathLike, image_size: int = 32) -> FolderImages:
    """Every image under ``root`` (see :func:`find_images`), as RGB, resized (shorter side
    ``image_size``, then a centre crop) into one tensor; see :class:`FolderImages`.

    Raises :class:`~vfm_course.data.real.DatasetFileError` listing every file that could not be
    read as an image, after trying them all."""
    check_positive_int(image_size, "image_size")
    classes, samples = find_images(root)
    images, broken = [], []
    for path, _ in samples:
        try:
            with Image.open(path) as im:
                rgb = TF.pil_to_tensor(im.convert("RGB"))  # (3, H, W) uint8
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            broken.append(f"{path} ({type(exc).__name__})")
            continue
        rgb = TF.resize(rgb, image_size, antialias=True)  # the shorter side -> image_size
        images.append(TF.center_crop(rgb, [image_size, image_size]))
    if broken:
        shown = "\n  ".join(broken[:10]) + ("\n  ..." if len(broken) > 10 else "")
        raise DatasetFileError(
            f"{len(broken)} of {len(samples)} files under {root} could not be read as images; "
            f"fix or remove them:\n  {shown}"
        )
    return FolderImages(
        images=torch.stack(images).float() / 255,
        labels=torch.tensor([label for _, label in samples], dtype=torch.int64),
        classes=classes,
        paths=[path for path, _ in samples],
    )


def split_folder(
    data: FolderImages, test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A class-balanced random split of a folder's images: (train images, labels), (test
    images, labels), with ``test_fraction`` of each class (at least one image) held out and
    at least one left for training."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for k, name in enumerate(data.classes):
        members = (data.labels == k).nonzero().flatten()
        if len(members) < 2:
            raise ValueError(
                f"class {name} has {len(members)} image; a train/test split needs at least 2 "
                f"per class"
            )
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test_idx.append(members[torch.randperm(len(members), generator=g)[:n_test]])
    is_test = torch.zeros(len(data), dtype=torch.bool)
    is_test[torch.cat(test_idx)] = True
    return (
        (data.images[~is_test], data.labels[~is_test]),
        (data.images[is_test], data.labels[is_test]),
    )
