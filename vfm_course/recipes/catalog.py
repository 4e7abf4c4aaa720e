"""Every recipe by name: the tiny profile's shipped checkpoints (:data:`RECIPES`)
and the full profile's GPU recipes on real photos (:data:`FULL_RECIPES`).
"""

from __future__ import annotations

from ..data.shapes import COURSE_WORLD
from ..models.mae import MASK_RATIOS
from .settings import ClassifierRecipe, PretrainRecipe

DATA_SIZES = (1_000, 4_000, 20_000)  # lesson 02's training-set sizes

RECIPES: dict[str, ClassifierRecipe | PretrainRecipe] = {
    # Real handwriting, 8x8: the course ViT learns it in about half a minute on one core.
    "vit_digits": ClassifierRecipe(
        preset="vit_course_digits", dataset="digits", steps=1500, batch_size=64, lr=2e-3
    ),
    # Supervised reference for the self-supervised lessons, on the same world they pretrain on.
    "vit_shapes": ClassifierRecipe(
        preset="vit_course_tiny", dataset="shapes", steps=2000, n_train=20_000, world=COURSE_WORLD
    ),
    # Lesson 02's data-size comparison: the same ViT and SmallCNN, the same 1,000 steps, on 1k,
    # 4k and 20k images of the course world (train and test accuracy are measured in the lesson).
    **{
        f"{arch}_shapes_{n // 1000}k": ClassifierRecipe(
            preset=preset, dataset="shapes", steps=1000, n_train=n, world=COURSE_WORLD
        )
        for arch, preset in (("vit", "vit_course_tiny"), ("cnn", "cnn_course_tiny"))
        for n in DATA_SIZES
    },
    # The three pretrained tiny encoders of lessons 03-06 (same ViT backbone, three objectives).
    "mae_shapes": PretrainRecipe("mae", "mae_course_tiny", steps=2000, warmup_steps=200),
    # The same MAE with raw-pixel targets (lesson 04 compares the two as initialisations).
    "mae_shapes_pixels": PretrainRecipe(
        "mae", "mae_course_tiny_pixels", steps=2000, warmup_steps=200
    ),
    # Lesson 04's mask-ratio curve (MAE Fig. 5): the same MAE pretrained at each ratio with
    # the same 1,000 steps (half of mae_shapes's, so that four fit the CPU budget).
    **{
        f"mae_shapes_mask{round(100 * r)}": PretrainRecipe(
            "mae", f"mae_course_tiny_mask{round(100 * r)}", steps=1000, warmup_steps=100
        )
        for r in MASK_RATIOS
    },
    # Lesson 03's ViT SimCLR and the 2x2 behind it (patch size x colour-jitter strength), all
    # with the same steps, batch, seed and schedule.
    **{
        f"simclr_shapes{suffix}": PretrainRecipe(
            "simclr", f"simclr_course_tiny{suffix}", steps=2500, batch_size=64, warmup_steps=200
        )
        for suffix in ("", "_p4", "_mild", "_p4_mild")
    },
    # The same objective with a small CNN and full hue jitter (lesson 03's comparison).
    "simclr_cnn_shapes": PretrainRecipe("simclr", "simclr_cnn_tiny", steps=1200, warmup_steps=50),
    "clip_shapes": PretrainRecipe("clip", "clip_course_tiny", steps=3000, warmup_steps=200),
    # DINO: the 8x8-patch course ViT self-distilled with multi-crop views, a BatchNorm head
    # and KoLeo (batch 64 and lr 1e-3 as SimCLR's recipe), and the same without KoLeo as the
    # control lesson 07 compares it with.
    **{
        name: PretrainRecipe(
            "dino", preset, steps=600, batch_size=64, weight_decay=0.04, warmup_steps=100
        )
        for name, preset in (
            ("dino_shapes", "dino_course_tiny_koleo"),
            ("dino_shapes_no_koleo", "dino_course_tiny_bn"),
        )
    },
}


# --- the full profile: real photos, wider models, one GPU or several ------------------------

# Model configs of the full recipes, built from the course presets (same code, wider and
# deeper): the ViT-Tiny-width backbone ``vit_course_small``, at 32 px (CIFAR-10) or at 96 px
# with 8 px patches (STL-10: a 12 x 12 grid).

# Batch sizes are global (split over the GPUs under torchrun). Learning rates follow each
# paper's linear scaling rule, lr = base * batch / 256 (Goyal et al. 2017): MAE base 1.5e-4.
# Step counts are about 200 (ViT, SimCLR) and 400 (MAE) epochs of CIFAR-10 at batch 512.
FULL_RECIPES: dict[str, ClassifierRecipe | PretrainRecipe] = {
    "vit_cifar10": ClassifierRecipe(
        preset="vit_course_small",
        dataset="cifar10",
        steps=20_000,
        batch_size=512,
        lr=1e-3,
        warmup_steps=1_000,
        augment=True,
        n_train=50_000,
        n_test=10_000,
    ),
    "mae_cifar10": PretrainRecipe(
        "mae",
        "mae_course_small",
        steps=40_000,
        batch_size=512,
        lr=3e-4,
        warmup_steps=2_000,
        n_train=50_000,
        n_test=10_000,
        dataset="cifar10",
    ),
    "simclr_cifar10": PretrainRecipe(
        "simclr",
        "simclr_course_small",
        steps=20_000,
        batch_size=512,
        lr=1e-3,
        warmup_steps=1_000,
        n_train=50_000,
        n_test=10_000,
        dataset="cifar10",
    ),
    # STL-10's 5,000 labelled training photos at 96 px (the unlabelled split is not read).
    "mae_stl10": PretrainRecipe(
        "mae",
        "mae_course_small_96",
        steps=20_000,
        batch_size=256,
        lr=1.5e-4,
        warmup_steps=1_000,
        n_train=5_000,
        n_test=8_000,
        dataset="stl10",
    ),
}
