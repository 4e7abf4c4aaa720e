"""Bring-your-own-images folders: the labels equal torchvision's ImageFolder, any size and mode
is resized to S x S without stretching, and every unusable folder gets an error naming the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from vfm_course.data import DatasetFileError, find_images, load_image_folder, split_folder


def _write(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    # Different sizes, aspect ratios, formats and modes, as a learner's photos would be.
    _write(root / "dog" / "a.png", (40, 30), (200, 10, 10))
    _write(root / "dog" / "b.JPG", (64, 64), (190, 20, 20))
    _write(root / "dog" / "nested" / "c.png", (20, 50), (210, 0, 0))
    _write(root / "cat" / "x.bmp", (33, 33), (10, 10, 200))
    _write(root / "cat" / "y.png", (100, 20), 128, mode="L")  # grayscale
    _write(root / "cat" / "z.png", (16, 16), (0, 0, 255, 128), mode="RGBA")
    (root / "cat" / "notes.txt").write_text("not an image, and not an image extension")
    return root


def test_labels_and_order_equal_torchvision_image_folder(folder):
    data = load_image_folder(folder, image_size=24)
    reference = ImageFolder(folder)
    assert data.classes == reference.classes == ["cat", "dog"]
    ours = [(str(p), int(y)) for p, y in zip(data.paths, data.labels, strict=True)]
    assert ours == reference.samples  # the same files, labels and order
    assert data.images.shape == (6, 3, 24, 24) and data.images.dtype == torch.float32
    assert 0 <= data.images.min() and data.images.max() <= 1


def test_images_are_resized_and_centre_cropped_not_stretched(tmp_path):
    root = tmp_path / "imgs"
    wide = np.zeros((10, 40, 3), dtype=np.uint8)
    wide[:, 15:25] = 255  # a white band in the middle quarter of a 4:1 image
    (root / "a").mkdir(parents=True)
    Image.fromarray(wide).save(root / "a" / "wide.png")
    _write(root / "b" / "plain.png", (8, 8), (0, 0, 0))
    data = load_image_folder(root, image_size=10)
    img = data.images[data.labels.tolist().index(0)]  # (3, 10, 10)
    # Shorter side 10 keeps the scale, the centre crop keeps the middle 10 of 40 columns:
    # the band fills it; a squash to 10 x 10 would have left it 2-3 columns wide.
    assert img.mean() > 0.95


def test_every_unusable_folder_gets_an_error_that_says_what_to_fix(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist.*one sub-folder per class"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_image_folder(tmp_path / "file.png")
    (tmp_path / "flat").mkdir()
    _write(tmp_path / "flat_imgs" / "only.png", (4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match="no sub-folders"):
        load_image_folder(tmp_path / "flat")
    one = tmp_path / "one"
    _write(one / "cat" / "a.png", (4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match="one class \\(cat\\).*at least two"):
        load_image_folder(one)
    (one / "dog").mkdir()
    (one / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images in the class folder\\(s\\) dog"):
        find_images(one)
    (folder / "dog" / "broken.png").write_bytes(b"not a png")
    (folder / "cat" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetFileError, match="2 of 8 files.*could not be read") as err:
        load_image_folder(folder)
    assert "broken.png" in str(err.value) and "empty.jpg" in str(err.value)
    assert (folder / "dog" / "broken.png").read_bytes() == b"not a png"  # left as it was


def test_split_is_class_balanced_and_keeps_a_training_image_per_class(folder):
    data = load_image_folder(folder, image_size=8)
    (x_tr, y_tr), (x_te, y_te) = split_folder(data, test_fraction=0.34, seed=0)
    assert torch.bincount(y_te).tolist() == [1, 1] and torch.bincount(y_tr).tolist() == [2, 2]
    assert len(x_tr) + len(x_te) == len(data)
    again = split_folder(data, test_fraction=0.34, seed=0)
    assert torch.equal(again[1][0], x_te)  # the seed fixes the split
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_folder(data, test_fraction=1.0)
