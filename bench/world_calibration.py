"""The measurements that chose the course world: a ViT and a CNN, one factor changed at a time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/world_calibration.py [--steps 300] [--out FILE]

Each row trains the tiny ViT (``vit_course_tiny``) and the SmallCNN for the lesson's live
budget (300 steps of 128 images, AdamW 1e-3 unless the row says otherwise, 30 warm-up steps,
cosine) on 20,000 images of one world, and measures accuracy on 2,000 of its training images
and on 2,000 held-out ones. Row 1 is the course world (``COURSE_WORLD``); each later row changes
one thing: the learning rate (two rows), the ViT's initialisation, or one property of the world
(towards the harder ``ShapesConfig()``, the last row). Prints a Markdown table (the README's
"How the course world was chosen" is its output); about half an hour on one core.
Deterministic on CPU. No assertions: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from tables import emit  # bench/tables.py (this script's folder is on sys.path)
from torch import nn

from vfm_course.data import COURSE_WORLD, BatchLoader, ShapesConfig, load_shapes
from vfm_course.eval import evaluate_classifier
from vfm_course.models import SmallCNN, VisionTransformer
from vfm_course.objectives import classification_loss
from vfm_course.train import TrainConfig, fit

HARD = ShapesConfig()
# (row label, world, ViT init, lr): each row differs from the first in the one thing it names.
ROWS = [
    ("course world (upright, size 0.22-0.3, plain background)", COURSE_WORLD, "xavier", 1e-3),
    ("  learning rate 5e-4", COURSE_WORLD, "xavier", 5e-4),
    ("  learning rate 2e-3", COURSE_WORLD, "xavier", 2e-3),
    ("  ViT init: timm trunc-normal(0.02) instead of xavier", COURSE_WORLD, "timm", 1e-3),
    *(
        (label, dataclasses.replace(COURSE_WORLD, **{field: getattr(HARD, field)}), "xavier", 1e-3)
        for label, field in [
            ("  + rotation", "rotate"),
            ("  smaller shapes (size 0.11-0.21)", "size_range"),
            ("  + 2 clutter strokes", "clutter"),
            ("  + pixel noise (std 0.05)", "noise_std"),
            ("  mixed backgrounds", "background"),
        ]
    ),
    ("hard world, ShapesConfig() (all of the above)", HARD, "xavier", 1e-3),
]


def build(arch: str, init: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "cnn":
        return SmallCNN()
    model = VisionTransformer("vit_course_tiny")
    if init == "timm":  # timm's VisionTransformer default for every Linear weight
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
    return model


def run(
    arch: str, world: ShapesConfig, init: str, lr: float, steps: int
) -> tuple[float, float, float]:
    """Train one arm; return (train accuracy, test accuracy, seconds)."""
    x_train, y_train = load_shapes("train", 20_000, world)
    x_test, y_test = load_shapes("test", 2_000, world)
    model = build(arch, init)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10, progress=False)
    start = time.perf_counter()
    fit(model, classification_loss(None), BatchLoader(x_train, y_train, 128, seed=0), cfg)
    seconds = time.perf_counter() - start
    train = evaluate_classifier(model, x_train[:2000], y_train[:2000])["acc"]
    return train, evaluate_classifier(model, x_test, y_test)["acc"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    lines = [
        f"| world ({args.steps} steps, batch 128, chance 0.167) | ViT train / test | "
        "CNN train / test |",
        "|---|---|---|",
    ]
    for label, world, init, lr in ROWS:
        vit_train, vit_test, vit_s = run("vit", world, init, lr, args.steps)
        if init == "xavier":
            cnn_train, cnn_test, _ = run("cnn", world, init, lr, args.steps)
            cnn = f"{cnn_train:.3f} / {cnn_test:.3f}"
        else:  # the ViT's init does not touch the CNN
            cnn = "(as row 1)"
        lines.append(f"| {label} | {vit_train:.3f} / {vit_test:.3f} | {cnn} |")
        print(lines[-1], f"(ViT {vit_s:.0f} s)", flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
