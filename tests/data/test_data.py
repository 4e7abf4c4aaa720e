"""Loaders and datasets: BatchLoader's epochs, the shapes cache, digits, and the torchvision
formats read from small fixtures written in the real on-disk layouts (never downloaded)."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from vfm_course.core import PROFILES
from vfm_course.data import (
    BatchLoader,
    DatasetFileError,
    ShapesConfig,
    get_classification_data,
    load_digits,
    load_shapes,
    load_torchvision,
)
from vfm_course.data import real as torchvision_data

# --- BatchLoader -----------------------------------------------------------------------------


def _toy(n=103):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return x, torch.arange(n)


def _order(loader):
    return torch.cat([y for _, y in loader])


def test_every_sample_once_per_epoch():
    x, y = _toy()
    loader = BatchLoader(x, y, batch_size=10)
    batches = list(loader)
    assert len(loader) == len(batches) == 11
    assert [len(b[1]) for b in batches] == [10] * 10 + [3]
    for xb, yb in batches:
        assert xb.shape[1:] == (3, 2, 2) and xb.dtype == torch.float32
        assert torch.equal(xb[:, 0, 0, 0], yb.float())  # images and labels stay paired
    assert torch.equal(_order(loader).sort().values, y)
    assert not torch.equal(_order(loader), y)  # shuffled


def test_drop_last_and_no_shuffle():
    x, y = _toy()
    loader = BatchLoader(x, y, batch_size=10, drop_last=True)
    assert len(loader) == 10 and all(len(b) == 10 for _, b in loader)
    assert len(set(_order(loader).tolist())) == 100
    assert torch.equal(_order(BatchLoader(x, y, 10, shuffle=False)), y)


def test_order_reproducible_per_seed_and_epoch():
    x, y = _toy()
    a, b, c = BatchLoader(x, y, 16, seed=1), BatchLoader(x, y, 16, seed=1), BatchLoader(x, y, 16)
    first = _order(a)
    assert torch.equal(first, _order(b)) and torch.equal(first, _order(a))
    assert not torch.equal(first, _order(c))
    a.set_epoch(1)
    assert not torch.equal(_order(a), first)
    b.set_epoch(1)
    assert torch.equal(_order(a), _order(b))
    a.set_epoch(0)
    assert torch.equal(_order(a), first)
    assert torch.equal(a.indices(), first)


def test_batch_transform_and_token_labels():
    x, _ = _toy(20)
    tokens = torch.arange(20 * 5).view(20, 5)
    loader = BatchLoader(x, tokens, 8, transform=lambda b: b * 0 - 1)
    xb, yb = next(iter(loader))
    assert torch.all(xb == -1) and yb.shape == (8, 5)


def test_loader_bad_input():
    x, y = _toy(10)
    with pytest.raises(ValueError, match="same length"):
        BatchLoader(x, y[:5], 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        BatchLoader(x, y, 0)
    with pytest.raises(ValueError, match="no batch at all"):
        BatchLoader(x, y, 11, drop_last=True)
    with pytest.raises(ValueError, match="epoch"):
        BatchLoader(x, y, 4).set_epoch(-1)


# --- shapes cache --------------------------------------------------------------------------------


def test_shapes_cache_round_trip(tmp_path):
    x, y = load_shapes("train", 64, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[1] == files[0] + ".sha256"
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    x2, y2 = load_shapes("train", 64, cache_dir=tmp_path)  # read back, checksum verified
    x3, y3 = load_shapes("train", 64, cache_dir=None)
    assert torch.equal(x, x2) and torch.equal(x, x3) and torch.equal(y, y3)
    xt, _ = load_shapes("test", 64, cache_dir=tmp_path)
    assert not torch.equal(x, xt)  # train and test use different seeds
    load_shapes("train", 64, ShapesConfig(noise_std=0.0), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3  # another config, another file


def test_corrupt_cache_is_reported_and_left_alone(tmp_path):
    load_shapes("test", 32, cache_dir=tmp_path)
    path = next(tmp_path.glob("*.npz"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFileError, match="delete it") as err:
        load_shapes("test", 32, cache_dir=tmp_path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == bytes(data)  # never regenerated over
    path.with_name(path.name + ".sha256").unlink()
    with pytest.raises(DatasetFileError, match="no checksum file"):
        load_shapes("test", 32, cache_dir=tmp_path)
    assert path.read_bytes() == bytes(data)


def test_load_shapes_bad_input(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_shapes("val", 10, cache_dir=None)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        load_shapes("train", 0, cache_dir=None)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_split():
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert xtr.min() == 0 and xtr.max() == 1
    train_counts, test_counts = torch.bincount(ytr), torch.bincount(yte)
    assert torch.all((test_counts - 0.2 * (train_counts + test_counts)).abs() <= 1)  # stratified
    assert torch.equal(load_digits("test")[0], xte)
    assert not torch.equal(load_digits("test", seed=1)[0], xte)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("train", test_fraction=1.5)


# --- torchvision formats, from fixtures ---------------------------------------------------------


def _write_cifar(root, per_batch=4, n_test=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name in names:
        m = n_test if name == "test_batch" else per_batch
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, m).tolist(),
            "data": rng.integers(0, 256, (m, 3072), dtype=np.uint8),  # rows are C, H, W
            "filenames": [f"img_{i}.png" for i in range(m)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = batch
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_fixture_reads_like_torchvision(tmp_path, monkeypatch):
    written = _write_cifar(tmp_path)
    x, y = load_torchvision("cifar10", tmp_path, "train", verify=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = torch.from_numpy(written["data_batch_1"]["data"][0]).view(3, 32, 32).float() / 255
    assert torch.equal(x[0], first)
    xt, yt = load_torchvision("cifar10", tmp_path, "test", verify=False)
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == written["test_batch"]["labels"]
    # Parity with torchvision on the same files, its md5 checks bypassed for the fixture.
    from torchvision.datasets import CIFAR10, cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)
    ref = CIFAR10(str(tmp_path), train=True)
    assert torch.equal(x, torch.from_numpy(ref.data).permute(0, 3, 1, 2).float() / 255)
    assert y.tolist() == ref.targets


def test_cifar10_checksum_mismatch_names_the_file(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(DatasetFileError, match="data_batch_1 has md5"):
        load_torchvision("cifar10", tmp_path, "train")


def test_pickles_cannot_run_code(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_torchvision("cifar10", tmp_path, "train", verify=False)
    assert not marker.exists()


def _write_stl10(root, n=3):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # what we expect back
    # The binary stores each channel column-major, so the file holds the transpose.
    images.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")
    labels = rng.integers(1, 11, n, dtype=np.uint8)  # 1-based on disk
    labels.tofile(folder / "train_y.bin")
    return images, labels


def test_stl10_fixture_reads_like_torchvision(tmp_path, monkeypatch):
    images, labels = _write_stl10(tmp_path)
    x, y = load_torchvision("stl10", tmp_path, "train", verify=False)
    assert x.shape == (3, 3, 96, 96) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(images).float() / 255)
    assert y.tolist() == (labels.astype(int) - 1).tolist()
    from torchvision.datasets import STL10

    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)
    ref = STL10(str(tmp_path), split="train")
    assert torch.equal(x, torch.from_numpy(ref.data).float() / 255)
    with pytest.raises(DatasetFileError, match="train_X.bin has md5"):
        load_torchvision("stl10", tmp_path, "train")
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(b"\x01")
    with pytest.raises(DatasetFileError, match="do not belong together"):
        load_torchvision("stl10", tmp_path, "train", verify=False)


def _write_pets(root):
    from PIL import Image

    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in ("Abyssinian_1", "beagle_2"):
        pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "images" / f"{name}.jpg")
        trimap = np.full((40, 50), 2, dtype=np.uint8)  # background
        trimap[10:30, 10:40], trimap[10, 10:40] = 1, 3  # a pet with a border row
        Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
    (base / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 2 2 1\n")
    (base / "annotations" / "test.txt").write_text("beagle_2 2 2 1\n")


def test_oxford_pets_fixture(tmp_path):
    _write_pets(tmp_path)
    ds = load_torchvision("oxford_pets", tmp_path, "train", image_size=32)
    assert len(ds) == 2 and len(load_torchvision("oxford_pets", tmp_path, "test")) == 1
    x, mask = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1, torchvision_data.IGNORE_INDEX}


@pytest.mark.parametrize("name", ["cifar10", "stl10", "oxford_pets"])
def test_missing_dataset_says_how_to_download(tmp_path, name):
    with pytest.raises(DatasetFileError, match="download=True"):
        load_torchvision(name, tmp_path, "train")
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


def test_unknown_datasets_are_explained(tmp_path):
    with pytest.raises(ValueError, match="not a torchvision dataset"):
        load_torchvision("pennfudan", tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_torchvision("imagenet", tmp_path)


# --- profiles and pictures ------------------------------------------------------------------------


def test_classification_data_per_profile(tmp_path, monkeypatch):
    tiny = dataclasses.replace(PROFILES["tiny"], n_train=40, n_test=20)
    x, y = get_classification_data(tiny, "test", cache_dir=tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    _write_cifar(tmp_path / "downloads")
    full = dataclasses.replace(PROFILES["full"], n_train=10, n_test=2)
    with pytest.raises(DatasetFileError, match="md5"):  # the fixture is not the real CIFAR-10
        get_classification_data(full, "train", root=tmp_path / "downloads")
    monkeypatch.setattr(torchvision_data, "_verify", lambda *args: None)
    x, y = get_classification_data(full, "train", root=tmp_path / "downloads")
    assert x.shape == (10, 3, 32, 32) and y.shape == (10,)


# --- Penn-Fudan (lesson 06's full profile), from a fixture in the official layout -----------------


def _write_pennfudan(root, n=4):
    """PennFudanPed/PNGImages/*.png and PedMasks/*_mask.png: palette PNGs of instance ids."""
    from PIL import Image

    base = root / "PennFudanPed"
    (base / "PNGImages").mkdir(parents=True)
    (base / "PedMasks").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        name = f"FudanPed{i + 1:05d}"
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
            base / "PNGImages" / f"{name}.png"
        )
        ids = np.zeros((30, 40), dtype=np.uint8)
        ids[5:25, 3:10] = 1  # pedestrian 1: rows 5..24, columns 3..9
        if i % 2 == 0:
            ids[2:28, 20:31] = 2  # pedestrian 2
        mask = Image.fromarray(ids, mode="P")  # the official masks are palette images
        mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
        mask.save(base / "PedMasks" / f"{name}_mask.png")
    return base


def test_pennfudan_fixture_boxes_and_masks(tmp_path):
    _write_pennfudan(tmp_path)
    train = torchvision_data.load_pennfudan(tmp_path, "train", image_size=None)
    test = torchvision_data.load_pennfudan(tmp_path, "test", image_size=None)
    assert len(train) == 2 and len(test) == 2  # a small folder splits half and half
    x, target = train[0]
    assert x.shape == (3, 30, 40) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert target["boxes"].tolist() == [[3.0, 5.0, 10.0, 25.0], [20.0, 2.0, 31.0, 28.0]]
    assert target["labels"].tolist() == [0, 0] and target["masks"].shape == (2, 30, 40)
    assert int(target["masks"][0].sum()) == 20 * 7 and target["masks"].dtype == torch.bool
    assert torch.equal(target["semantic"], target["masks"].any(0).long())
    assert len(train[1][1]["boxes"]) == 1
    # resized: a square image, masks by nearest neighbour, boxes from the resized masks
    x, target = torchvision_data.load_pennfudan(tmp_path, "train", image_size=20)[0]
    assert x.shape == (3, 20, 20) and target["masks"].shape == (2, 20, 20)
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_pennfudan_missing_or_broken_is_explained(tmp_path):
    with pytest.raises(DatasetFileError, match="PennFudanPed.zip"):
        torchvision_data.load_pennfudan(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created
    base = _write_pennfudan(tmp_path)
    (base / "PedMasks" / "FudanPed00002_mask.png").unlink()
    with pytest.raises(DatasetFileError, match="lacks FudanPed00002_mask.png"):
        torchvision_data.load_pennfudan(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        torchvision_data.load_pennfudan(tmp_path, "val")
