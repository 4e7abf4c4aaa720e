"""The course ViT under SimCLR's first recipe, one change at a time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/simclr_vit_sweep.py [--steps 600] [--out FILE]

Every row starts from the *old* recipe's settings (``OLD``: the course ViT with 4x4 patches,
crops of 0.5-1 of the area, colour jitter 0.4 with full hue jitter, temperature 0.2, batch 64,
AdamW 1e-3 with cosine decay), changes what the row names, pretrains for ``--steps`` steps on
the 20,000 unlabelled training images of ``COURSE_WORLD``, then freezes the encoder and fits a
linear probe (and 20-NN) for the shape on 5,000 labelled training images, scored on 2,000
held-out ones. "Probe at init" is the same encoder before training.

At 600 steps (about an hour on one core) no single change lifts the probe far; the two that
move it, 8x8 patches and colour jitter 0.8, are crossed at the recipe's 2,500 steps by shipped
checkpoints (``simclr_shapes*``), in lesson 03. Prints a Markdown table; the README's "The ViT
under SimCLR" shows it. Deterministic on CPU. No assertions: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch
from tables import emit  # bench/tables.py (this script's folder is on sys.path)
from torch import nn

from vfm_course.data import COURSE_WORLD, AugmentConfig, BatchLoader, load_shapes
from vfm_course.eval import extract_features, knn_accuracy, linear_probe
from vfm_course.models import SimCLR, SimCLRConfig, vit_config
from vfm_course.objectives import simclr_loss_fn
from vfm_course.train import TrainConfig, fit

# The recipe before this sweep: its ViT probed below its own random init.
OLD = SimCLRConfig(
    encoder=vit_config("vit_course_tiny", num_classes=0),
    augment=AugmentConfig(crop_scale=(0.5, 1.0), hue=0.5),
)
STRONG = {"brightness": 0.8, "contrast": 0.8, "saturation": 0.8}  # SimCLR's ImageNet strength


def _aug(**changes: Any) -> dict[str, Any]:
    return {"augment": dataclasses.replace(OLD.augment, **changes)}


def _enc(**changes: Any) -> dict[str, Any]:
    return {"encoder": dataclasses.replace(OLD.encoder, **changes)}


# (row label, SimCLRConfig changes, training changes). Training changes: lr, weight_decay,
# "freeze_patch" (MoCo v3's frozen random patch projection), "out_bn" (a BatchNorm without
# affine on the projection's output, as MoCo v3's heads end), "no_pos" (no position table).
SWEEP: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("old recipe's settings", {}, {}),
    ("  temperature 0.1 (instead of 0.2)", {"temperature": 0.1}, {}),
    (
        "  colour jitter 0.8 (SimCLR's ImageNet strength; 0.4)",
        _aug(**STRONG),
        {},
    ),
    ("  grayscale p 0.5 (0.2)", _aug(grayscale_p=0.5), {}),
    ("  crop scale 0.2-1 (0.5-1)", _aug(crop_scale=(0.2, 1.0)), {}),
    ("  average-pooled patch tokens instead of CLS", _enc(global_pool="avg"), {}),
    ("  no position embedding (a bag of patches)", {}, {"no_pos": True}),
    (
        "  MoCo v3: lr 5e-4, wd 0.1, frozen patch projection, BN on the output",
        {},
        {"lr": 5e-4, "weight_decay": 0.1, "freeze_patch": True, "out_bn": True},
    ),
    ("  8x8 patches (a 4x4 grid instead of 8x8)", _enc(patch_size=8), {}),
]


def build(changes: dict[str, Any], train: dict[str, Any]) -> SimCLR:
    torch.manual_seed(0)
    cfg = dataclasses.replace(OLD, **changes)
    model = SimCLR(cfg)
    if train.get("out_bn"):
        model.projector.fc2 = nn.Sequential(
            model.projector.fc2, nn.BatchNorm1d(cfg.proj_dim, affine=False)
        )
    if train.get("no_pos"):
        model.encoder.pos_embed.data.zero_()
        model.encoder.pos_embed.requires_grad_(False)
    if train.get("freeze_patch"):
        model.encoder.patch_embed.requires_grad_(False)
    return model


def probe(model: SimCLR, data: dict[str, torch.Tensor]) -> tuple[float, float]:
    f_train = extract_features(model.encoder, data["x_probe"])
    f_test = extract_features(model.encoder, data["x_test"])
    acc = linear_probe(f_train, data["y_probe"], f_test, data["y_test"]).test_acc
    return acc, knn_accuracy(f_train, data["y_probe"], f_test, data["y_test"], k=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    x_train, y_train = load_shapes("train", 20_000, COURSE_WORLD)
    x_test, y_test = load_shapes("test", 2_000, COURSE_WORLD)
    data = {
        "x_probe": x_train[:5000],
        "y_probe": y_train[:5000],
        "x_test": x_test,
        "y_test": y_test,
    }
    lines = [
        f"| SimCLR ViT, {args.steps} steps of batch 64 | final loss (chance 4.84) | "
        "probe at init | probe / 20-NN after |",
        "|---|---|---|---|",
    ]
    for label, changes, train in SWEEP:
        model = build(changes, train)
        random_probe, _ = probe(model, data)
        cfg = TrainConfig(
            steps=args.steps,
            lr=train.get("lr", 1e-3),
            weight_decay=train.get("weight_decay", 0.05),
            warmup_steps=min(args.steps, max(60, args.steps // 12)),  # 200 at 2,400 steps
            progress=False,
        )
        start = time.perf_counter()
        history = fit(model, simclr_loss_fn(), BatchLoader(x_train, y_train, 64, seed=0), cfg)
        seconds = time.perf_counter() - start
        acc, knn = probe(model, data)
        lines.append(
            f"| {label} | {history.loss[-1]:.2f} | {random_probe:.3f} | {acc:.3f} / {knn:.3f} |"
        )
        print(lines[-1], f"({seconds:.0f} s)", flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
