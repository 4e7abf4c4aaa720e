"""Lesson 03's augmentation exercise: the checker for SimCLR's view pipeline (the registry entry
is in :mod:`.contrastive`, beside the lesson's other exercises).

The checker asks one question at a time, each on a configuration where only one step can act:
is a step applied only where its coin came up, does every image draw its own parameters, and
finally does the whole view equal the package's :func:`~vfm_course.data.augment.augment` drawn
from the same seeded generator (which needs the draw order the lesson lists).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ...data.augment import AugmentConfig, augment, hflip, random_resized_crop_boxes, resized_crop
from ...data.colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    rgb_to_grayscale,
)
from .checking import call_learner, close, expect_tensor, fail, passed

# Every step off: the whole image as the crop, every probability 0, every strength 0.
STILL = AugmentConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
    blur_sigma=(1e-6, 1e-6),  # a kernel that is 1 at its centre and 0 elsewhere: no blur
)
COLOUR = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}


def _augment_variant(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, bug: str):
    """The reference pipeline with one known mistake (same building blocks, same generator)."""
    B, C, H, W = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(B, generator=g)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(B, generator=g) < p

    def grey(x: torch.Tensor) -> torch.Tensor:
        return torch.where(coin(cfg.grayscale_p).view(B, 1, 1, 1), rgb_to_grayscale(x), x)

    x = resized_crop(x, random_resized_crop_boxes(B, H, W, cfg.crop_scale, cfg.crop_ratio, g), H)
    x = hflip(x, coin(cfg.flip_p))
    if bug == "grey_first":
        x = grey(x)
    on = coin(cfg.jitter_p)
    for adjust, s in (
        (adjust_brightness, cfg.brightness),
        (adjust_contrast, cfg.contrast),
        (adjust_saturation, cfg.saturation),
    ):
        x = adjust(x, torch.where(on, uniform(max(0.0, 1 - s), 1 + s), 1.0))
    if cfg.hue > 0 or bug == "hue_at_zero":
        x = adjust_hue(x, torch.where(on, uniform(-cfg.hue, cfg.hue), 0.0))
    if bug != "grey_first":
        x = grey(x)
    blur = coin(cfg.blur_p).view(B, 1, 1, 1)
    return torch.where(blur, gaussian_blur(x, uniform(*cfg.blur_sigma)), x)


def check_augment(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(images, cfg, generator)`` -> one random SimCLR view of every image, (B, C, H, W)
    in [0, 1], equal to :func:`~vfm_course.data.augment.augment` with the same generator."""
    ex = "check_augment"
    g = torch.Generator().manual_seed(303)
    x = torch.rand(6, 3, 12, 12, generator=g)

    def view(images: torch.Tensor, cfg: AugmentConfig, seed: int = 0) -> torch.Tensor:
        out = call_learner(ex, fn, images, cfg, torch.Generator().manual_seed(seed))
        return expect_tensor(
            ex, out, tuple(images.shape), "return one view per image, shaped like the images"
        )

    out = view(x, AugmentConfig())
    if out.min() < 0 or out.max() > 1:
        fail(ex, "the views leave the pixel range [0, 1]", "clamp after the colour steps")

    # 1. A step whose probability is 0 never acts.
    out = view(x, STILL)
    if not close(out, x):
        if close(out, rgb_to_grayscale(x.flip(-1)).expand_as(x)):
            fail(
                ex,
                "every step acted although every probability is 0",
                "a coin must come up True with probability p: torch.rand(B, generator="
                "generator) < p (not >=)",
            )
        flipped = [i for i in range(len(x)) if close(out[i], x[i].flip(-1))]
        grey = [i for i in range(len(x)) if close(out[i], out[i, :1].expand_as(out[i]))]
        if flipped:
            fail(
                ex,
                f"images {flipped} were flipped although flip_p = 0",
                "flip only the images whose coin came up: "
                "flip = torch.rand(B, generator=generator) < cfg.flip_p",
            )
        if grey:
            fail(
                ex,
                f"images {grey} turned grey although grayscale_p = 0",
                "grey only where the image's own coin, drawn with cfg.grayscale_p, came up; "
                "torch.where(coin.view(B, 1, 1, 1), grey_images, images) picks per image",
            )
        fail(
            ex,
            "with every step switched off (the whole image as the crop, every probability "
            "and strength 0) the view is not the image itself",
            "the crop is resized back to the input's size H x W; every other step is applied "
            "only where its coin came up",
        )
    out = view(x, dataclasses.replace(STILL, **COLOUR))
    if not close(out, x):
        fail(
            ex,
            "the colours changed although jitter_p = 0",
            "draw one jitter coin per image, shared by brightness, contrast, saturation and "
            "hue, and use the factor 1 (and hue shift 0) where it is False: "
            "torch.where(jitter, factor, 1.0)",
        )
    out = view(x, dataclasses.replace(STILL, blur_sigma=(1.0, 1.0)))
    if not close(out, x):
        fail(
            ex,
            "the images were blurred although blur_p = 0",
            "blur only where the image's blur coin (cfg.blur_p) came up",
        )

    # 2. Every image draws its own parameters: copies of one image get different views.
    copies = x[:1].expand(16, -1, -1, -1).clone()
    per_image = {
        "crop": (
            dataclasses.replace(STILL, crop_scale=(0.35, 1.0), crop_ratio=(0.75, 4 / 3)),
            "draw a box per image: random_resized_crop_boxes(B, H, W, ...) gives (B, 4)",
        ),
        "flip": (
            dataclasses.replace(STILL, flip_p=0.5),
            "draw one coin per image, torch.rand(B, generator=generator) < cfg.flip_p",
        ),
        "colour jitter": (
            dataclasses.replace(STILL, jitter_p=1.0, brightness=0.4, contrast=0.4, saturation=0.4),
            "draw B factors, one per image: low + (high - low) * torch.rand(B, generator=...)",
        ),
        "hue shift": (
            dataclasses.replace(STILL, jitter_p=1.0, hue=0.1),
            "draw B hue shifts, one per image, uniform in [-cfg.hue, cfg.hue]",
        ),
        "blur": (
            dataclasses.replace(STILL, blur_p=1.0, blur_sigma=(0.1, 2.0)),
            "draw B blur widths sigma, one per image (gaussian_blur takes a (B,) sigma)",
        ),
    }
    for step, (cfg, hint) in per_image.items():
        out = view(copies, cfg)
        if all(close(out[i], out[0]) for i in range(1, len(out))):
            fail(ex, f"16 copies of one image got the same {step}: one draw for the batch", hint)
    out = view(copies, dataclasses.replace(STILL, flip_p=1.0))
    if not close(out, copies.flip(-1)):
        fail(ex, "with flip_p = 1 not every image was flipped", "the coin is rand < p")

    # 3. The whole pipeline, against the reference drawn from the same generator.
    configs = {
        "the default AugmentConfig()": AugmentConfig(),
        "hue=0.1": AugmentConfig(hue=0.1),
        "grayscale_p=0.5": AugmentConfig(grayscale_p=0.5),
    }
    for what, cfg in configs.items():
        seed = int(torch.randint(2**31, (1,), generator=g))
        expected = augment(x, cfg, torch.Generator().manual_seed(seed))
        out = view(x, cfg, seed)
        if close(out, expected):
            continue  # the variants below are only built to name a mistake
        wrong = {
            "the hue draw happens only when cfg.hue > 0 (a hue of 0 draws nothing, so the "
            "draws after it stay where they were)": "hue_at_zero",
            "grayscale comes after the colour jitter: greying first, then jittering, puts "
            "colour back into grey images": "grey_first",
        }
        variants = {
            hint: _augment_variant(x, cfg, torch.Generator().manual_seed(seed), bug)
            for hint, bug in wrong.items()
        }
        variants = {h: v for h, v in variants.items() if not close(v, expected)}
        for hint, wrong_view in variants.items():
            if close(out, wrong_view):
                fail(ex, f"the views differ from the reference's with {what}", hint)
        err = (out.detach().double() - expected.double()).abs().max().item()
        fail(
            ex,
            f"the views differ from the reference's with {what}: max |yours - reference| = "
            f"{err:.3g}, though each step on its own behaves (checked above)",
            "draw the random numbers in the order the lesson lists (box, flip coin, jitter "
            "coin, brightness, contrast, saturation, hue if cfg.hue > 0, grey coin, blur coin, "
            "sigma), each a (B,) draw from the generator, one jitter coin for all four colour "
            "steps, and apply the steps in that order",
        )
    return passed(
        "your views match the package's augment: each step acts only where its coin came up, "
        "every image draws its own parameters, and the whole pipeline on 3 configurations"
    )
