"""Recipes: stored configs rebuild the right model, pretraining runs end to end, shipped
checkpoints verify and load, and nothing is overwritten without --force."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from tests.helpers import assert_golden
from vfm_course.core import CheckpointError
from vfm_course.models import (
    CLIP,
    CLIP_PRESETS,
    DINO,
    DINO_PRESETS,
    MAE_PRESETS,
    SIMCLR_PRESETS,
    MaskedAutoencoder,
    SimCLR,
    SmallCNN,
    VisionTransformer,
    backbone,
    build_model,
    load_course_encoder,
    load_course_model,
    read_manifest,
    vit_config,
)
from vfm_course.recipes import runner as recipes
from vfm_course.recipes import settings as recipe_settings
from vfm_course.recipes.catalog import FULL_RECIPES, RECIPES
from vfm_course.recipes.classifier import train_classifier
from vfm_course.recipes.pretrain import pretrain
from vfm_course.recipes.runner import run_recipe
from vfm_course.recipes.settings import PretrainRecipe
from vfm_course.train import read_checkpoint, save_checkpoint

MODELS = {
    "vit": lambda: VisionTransformer(vit_config("vit_course_digits")),
    "mae": lambda: MaskedAutoencoder(MAE_PRESETS["mae_course_tiny"]),
    "simclr": lambda: SimCLR(SIMCLR_PRESETS["simclr_course_tiny"]),
    "clip": lambda: CLIP(CLIP_PRESETS["clip_course_tiny"]),
    "dino": lambda: DINO(DINO_PRESETS["dino_course_tiny_koleo"]),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_stored_config_rebuilds_the_same_model(kind, tmp_path):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, model.cfg)
    ckpt = read_checkpoint(path)
    rebuilt = build_model(ckpt["config"])
    assert type(rebuilt) is type(model) and rebuilt.cfg == model.cfg
    rebuilt.load_state_dict(ckpt["model"], strict=True)
    x = torch.rand(2, *((1, 8, 8) if kind == "vit" else (3, 32, 32)))
    with torch.no_grad():
        enc_a, enc_b = backbone(model), backbone(rebuilt.eval())
        torch.testing.assert_close(enc_a(x), enc_b(x), atol=0, rtol=0)


def test_unknown_config_type_is_explained():
    with pytest.raises(CheckpointError, match="don't know how to build"):
        build_model({"__type__": "ResNetConfig"})


def test_backbone_rejects_models_without_an_image_encoder():
    with pytest.raises(TypeError, match="no image encoder"):
        backbone(torch.nn.Linear(2, 2))


# What the deterministic 2-step runs below measure (seeded data, init and batches, one thread):
# pinned so that a change to the pipeline that moves a result shows up here.
GOLDEN_PRETRAIN = {  # 40 test images
    "mae": {"probe_acc": 0.175, "knn_acc": 0.05},
    "simclr": {"probe_acc": 0.15, "knn_acc": 0.075},  # the 8x8-patch, strong-colour preset
    "clip": {
        "probe_acc": 0.175,
        "knn_acc": 0.1,
        "zero_shot_shape_acc": 0.175,
        "zero_shot_colour_acc": 0.125,
    },
}
GOLDEN_FULL = {  # 48 fake test photos, results rounded to 4 decimals as stored
    ("mae_cifar10", "cifar10"): {"probe_acc": 0.0833, "knn_acc": 0.0417},
    ("mae_stl10", "stl10"): {"probe_acc": 0.0417, "knn_acc": 0.0833},
    ("simclr_cifar10", "cifar10"): {"probe_acc": 0.0625, "knn_acc": 0.0833},
    ("vit_cifar10", "cifar10"): {"test_acc": 0.1875},
    ("vit_cifar10", "stl10"): {"test_acc": 0.0833},
}


@pytest.mark.parametrize("method", ["mae", "simclr", "clip"])
def test_pretraining_runs_end_to_end_and_measures_the_encoder(method):
    name = {"mae": "mae_shapes", "simclr": "simclr_shapes", "clip": "clip_shapes"}[method]
    recipe = replace(RECIPES[name], steps=2, warmup_steps=0, batch_size=16, n_train=64, n_test=40)
    assert isinstance(recipe, PretrainRecipe) and recipe.method == method
    torch.manual_seed(0)
    model, results = pretrain(recipe, progress=False)
    assert not model.training
    assert backbone(model).cfg.num_classes == 0
    for key, golden in GOLDEN_PRETRAIN[method].items():
        assert_golden(results[key], golden, 40, f"{method} {key}")
    assert len(results["loss"]) == len(results["loss_steps"]) >= 1


def test_run_recipe_never_overwrites_without_force(tmp_path):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"my own file")
    with pytest.raises(FileExistsError, match="--force"):
        run_recipe("vit_digits", steps=1, out=str(out))
    assert out.read_bytes() == b"my own file"
    with pytest.raises(ValueError, match="unknown recipe"):
        run_recipe("no_such_recipe")


def test_every_recipe_has_a_shipped_checkpoint_that_verifies_and_loads():
    manifest = read_manifest()["checkpoints"]
    assert sorted(manifest) == sorted(RECIPES)
    for name in RECIPES:
        model, meta = load_course_model(name)  # sha256-verified against the manifest
        assert meta["recipe"] == name and not model.training
        if isinstance(RECIPES[name], PretrainRecipe):
            encoder, _ = load_course_encoder(name)
            if isinstance(encoder, SmallCNN):  # the CNN SimCLR: pooled features, no head
                assert encoder.num_classes == 0
            else:
                assert isinstance(encoder, VisionTransformer) and encoder.cfg.num_classes == 0
            assert meta["settings"]["steps"] == RECIPES[name].steps


def test_tiny_recipes_are_the_ones_that_made_the_shipped_checkpoints():
    """The full profile added recipes and a ``dataset`` field; every setting a shipped
    checkpoint stored must still be the tiny recipe's (a changed value would make the manifest
    lie about how a checkpoint was made)."""
    assert not set(RECIPES) & set(FULL_RECIPES)
    for name, recipe in RECIPES.items():
        _, meta = load_course_model(name)
        now = json.loads(json.dumps(asdict(recipe)))  # tuples -> lists, as stored
        # Fields added since a checkpoint was made (world, dataset) are absent from it.
        assert {k: v for k, v in now.items() if k in meta["settings"]} == meta["settings"]
        assert now.get("dataset", "shapes") in ("shapes", "digits")


def _fake_torchvision(calls: list):
    """Stands in for load_torchvision: 48 random photos of the dataset's size, no network."""

    def load(name, root, split="train", download=False):
        calls.append((name, split, download))
        size = {"cifar10": 32, "stl10": 96}[name]
        g = torch.Generator().manual_seed(len(calls))
        return torch.rand(48, 3, size, size, generator=g), torch.randint(0, 10, (48,), generator=g)

    return load


@pytest.mark.parametrize(
    ("name", "dataset"),
    [*((n, FULL_RECIPES[n].dataset) for n in sorted(FULL_RECIPES)), ("vit_cifar10", "stl10")],
)
def test_full_recipes_build_and_run_two_steps_offline(name, dataset, monkeypatch):
    calls: list = []
    monkeypatch.setattr(recipe_settings, "load_torchvision", _fake_torchvision(calls))
    recipe = replace(FULL_RECIPES[name], steps=2, warmup_steps=0, batch_size=16, dataset=dataset)
    torch.manual_seed(0)
    if isinstance(recipe, PretrainRecipe):
        model, results = pretrain(recipe, progress=False, download=True)
        for key in ("probe_acc", "knn_acc"):
            assert_golden(results[key], GOLDEN_FULL[name, dataset][key], 48, f"{name} {key}")
        assert results["loss_steps"] == [2]
        assert backbone(model).cfg.embed_dim == 192  # the wider vit_course_small backbone
    else:  # STL-10's 96 px photos are resized to the preset's 32 px
        model, results = train_classifier(recipe, progress=False, download=True)
        golden = GOLDEN_FULL[name, dataset]["test_acc"]
        assert_golden(results["test_acc"], golden, 48, f"{name} test_acc")
        assert model.cfg.img_size == 32
    assert not model.training
    assert calls == [(dataset, "train", True), (dataset, "test", True)]


def test_full_recipe_cli_writes_outside_the_manifest(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe_settings, "load_torchvision", _fake_torchvision([]))
    monkeypatch.setenv("VFM_DATA_DIR", str(tmp_path))
    path = run_recipe("vit_cifar10", steps=2)
    assert path == tmp_path / "checkpoints" / "full" / "vit_cifar10.safetensors"
    assert read_checkpoint(path)["metadata"]["settings"]["dataset"] == "cifar10"
    assert not (tmp_path / "manifest.json").exists()
    assert not path.with_name("vit_cifar10.resume.safetensors").exists()  # removed when done
    with pytest.raises(FileExistsError, match="--force"):
        recipes.main(["vit_cifar10", "--steps", "2"])


def test_clip_needs_captions():
    recipe = replace(RECIPES["clip_shapes"], dataset="cifar10", steps=1)
    with pytest.raises(ValueError, match="no captions"):
        pretrain(recipe, progress=False)
