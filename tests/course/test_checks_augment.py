"""Lesson 03's augmentation checker passes the reference and a learner-style pipeline, and fails
known-wrong pipelines with the hint that names the mistake.

The learner's pipeline is written here the way the lesson asks for it (from the package's
building blocks, with switchable mistakes), independently of the checker's own variants.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.augmentation import check_augment
from vfm_course.data import augment as aug


def pipeline(bug: str | None = None):
    def my_augment(x, cfg, generator=None):
        B, C, H, W = x.shape

        def coin(p):
            on = torch.rand(B, generator=generator) < p
            return ~on if bug == "inverted_coin" else on

        def uniform(low, high):
            return low + (high - low) * torch.rand(B, generator=generator)

        n = 1 if bug == "one_crop" else B
        boxes = aug.random_resized_crop_boxes(n, H, W, cfg.crop_scale, cfg.crop_ratio, generator)
        x = aug.resized_crop(x, boxes.expand(B, 4), H)
        x = aug.hflip(x, coin(cfg.flip_p))
        jitter = torch.ones(B, dtype=torch.bool) if bug == "ungated" else coin(cfg.jitter_p)
        for i, (adjust, s) in enumerate(
            [
                (aug.adjust_brightness, cfg.brightness),
                (aug.adjust_contrast, cfg.contrast),
                (aug.adjust_saturation, cfg.saturation),
            ]
        ):
            if bug == "coin_per_step" and i > 0:
                jitter = coin(cfg.jitter_p)
            factor = uniform(1 - s, 1 + s)
            if bug == "one_factor":
                factor = factor[:1].expand(B)
            x = adjust(x, torch.where(jitter, factor, 1.0))
        if cfg.hue > 0 or bug == "hue_at_zero":
            shift = uniform(-cfg.hue, cfg.hue)
            if bug == "one_hue":
                shift = shift[:1].expand(B)
            x = aug.adjust_hue(x, torch.where(jitter, shift, 0.0))
        grey = coin(cfg.grayscale_p).view(B, 1, 1, 1)
        if bug == "always_grey":
            grey = torch.ones_like(grey)
        x = torch.where(grey, aug.rgb_to_grayscale(x), x)
        blur = coin(cfg.blur_p).view(B, 1, 1, 1)
        if bug == "always_blur":
            blur = torch.ones_like(blur)
        return torch.where(blur, aug.gaussian_blur(x, uniform(*cfg.blur_sigma)), x)

    return my_augment


def test_reference_and_learner_pipeline_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_augment(aug.augment)
    assert check_augment(pipeline())
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize(
    "answer, hint",
    [
        (pipeline("one_crop"), "got the same crop: one draw for the batch"),
        (pipeline("one_factor"), "got the same colour jitter"),
        (pipeline("one_hue"), "got the same hue shift"),
        (pipeline("ungated"), "colours changed although jitter_p = 0"),
        (pipeline("always_grey"), "turned grey although grayscale_p = 0"),
        (pipeline("always_blur"), "blurred although blur_p = 0"),
        (pipeline("inverted_coin"), "True with probability p"),
        (pipeline("hue_at_zero"), "hue draw happens only when cfg.hue > 0"),
        (pipeline("coin_per_step"), "one jitter coin for all four colour steps"),
        (lambda x, cfg, g: x[:, :1], r"shaped like the images"),
        (lambda x, cfg, g: x * 2, r"leave the pixel range"),
        (unfinished, "not finished"),
    ],
)
def test_wrong_answers_fail_with_their_hint(answer, hint: str) -> None:
    with pytest.raises(AssertionError, match=hint):
        check_augment(answer)
