"""Augmentations equal torchvision image by image; NT-Xent equals a plain loop; SimCLR trains."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vfm_course.data import (
    AugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    hflip,
    random_resized_crop_boxes,
    resized_crop,
    rgb_to_grayscale,
    two_views,
)
from vfm_course.data.augment import augment
from vfm_course.models import (
    SIMCLR_PRESETS,
    ProjectionHead,
    SimCLR,
    SimCLRConfig,
    SmallCNN,
    vit_config,
)
from vfm_course.objectives import (
    alignment_loss,
    embedding_std,
    nt_xent_logits,
    nt_xent_loss,
    simclr_loss_fn,
)
from vfm_course.train import TrainConfig, fit

SMALL_ENCODER = vit_config("vit_course_tiny", num_classes=0, embed_dim=32, depth=1, num_heads=2)


def _images(B: int = 6, C: int = 3, H: int = 16, W: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, C, H, W, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- augmentations


COLOUR_OPS = {
    "brightness": (adjust_brightness, TF.adjust_brightness),
    "contrast": (adjust_contrast, TF.adjust_contrast),
    "saturation": (adjust_saturation, TF.adjust_saturation),
}


@pytest.mark.parametrize("name", list(COLOUR_OPS))
@pytest.mark.parametrize("channels", [3, 1])
def test_colour_ops_match_torchvision_per_image(name: str, channels: int) -> None:
    ours, theirs = COLOUR_OPS[name]
    x = _images(C=channels)
    # Factors below 1, at 1, above 1 (clamping kicks in) and 0 (fully gray / black).
    f = torch.tensor([0.0, 0.35, 1.0, 1.4, 1.9, 0.8])
    expected = torch.stack([theirs(x[i], float(f[i])) for i in range(len(x))])
    torch.testing.assert_close(ours(x, f), expected, atol=1e-5, rtol=0)
    assert ours(x, f).min() >= 0 and ours(x, f).max() <= 1


def test_hue_matches_torchvision_per_image() -> None:
    x = _images(B=8)
    x[0, :, :4] = 0.5  # gray rows: no hue at all
    x[1, :, :3] = 0.0  # black
    x[2, :2, :2] = 1.0  # ties between the largest channels (yellow)
    f = torch.tensor([0.0, 0.1, -0.2, 0.5, -0.5, 0.33, 0.25, -0.07])
    expected = torch.stack([TF.adjust_hue(x[i], float(f[i])) for i in range(len(x))])
    torch.testing.assert_close(adjust_hue(x, f), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, 0.0), x, atol=1e-6, rtol=0)
    # Half a turn twice is a full turn: back to the start.
    torch.testing.assert_close(adjust_hue(adjust_hue(x, 0.5), 0.5), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x[:, :1], f), x[:, :1])  # gray images have no hue
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        adjust_hue(x, 0.7)
    with pytest.raises(ValueError, match="half a turn"):
        AugmentConfig(hue=0.6)


def test_grayscale_matches_torchvision() -> None:
    x = _images()
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    assert rgb_to_grayscale(x).shape == (6, 1, 16, 16)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_gaussian_blur_matches_torchvision(kernel_size: int) -> None:
    x = _images(H=12, W=9)  # non-square, so rows and columns cannot be confused
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 3.0, 0.3])
    expected = torch.stack(
        [
            TF.gaussian_blur(x[i], [kernel_size, kernel_size], [float(s)] * 2)
            for i, s in enumerate(sigma)
        ]
    )
    torch.testing.assert_close(gaussian_blur(x, sigma, kernel_size), expected, atol=1e-5, rtol=0)


def test_hflip_flips_only_the_chosen_images() -> None:
    x = _images()
    flip = torch.tensor([True, False, True, True, False, False])
    expected = torch.stack([TF.horizontal_flip(x[i]) if f else x[i] for i, f in enumerate(flip)])
    assert torch.equal(hflip(x, flip), expected)


def _agreeing(start: int, extent: int, size: int, full: int) -> torch.Tensor:
    """(size,) bool: output positions along one axis where our crop must equal torchvision's.

    Output pixel j samples the box at src = (j + 0.5) * extent / size - 0.5 (box pixels). Inside
    [0, extent - 1] both read the same two pixels. Outside, torchvision clamps to the box edge
    while we read the neighbour beyond it -- unless the box touches the image border there, where
    our border padding clamps to the same pixel.
    """
    src = (torch.arange(size) + 0.5) * extent / size - 0.5
    return ((src >= 0) | (start == 0)) & ((src <= extent - 1) | (start + extent == full))


@pytest.mark.parametrize("size", [8, 13, 16, 24])
def test_resized_crop_matches_torchvision_exactly_where_sampling_stays_in_the_box(
    size: int,
) -> None:
    H, W = 16, 20
    x = _images(B=1, H=H, W=W)[0]
    g = torch.Generator().manual_seed(size)
    n_differ = 0
    for _ in range(40):
        h = int(torch.randint(1, H + 1, (1,), generator=g))
        w = int(torch.randint(1, W + 1, (1,), generator=g))
        top = int(torch.randint(0, H - h + 1, (1,), generator=g))
        left = int(torch.randint(0, W - w + 1, (1,), generator=g))
        box = torch.tensor([[top, left, h, w]], dtype=torch.float32)
        ours = resized_crop(x[None], box, size)[0]
        theirs = TF.resized_crop(x, top, left, h, w, [size, size], antialias=False)
        agree = _agreeing(top, h, size, H)[:, None] & _agreeing(left, w, size, W)[None, :]
        diff = (ours - theirs).abs().amax(dim=0)  # (size, size)
        assert (diff[agree] < 1e-5).all(), (top, left, h, w)
        if h >= size and w >= size:  # a shrinking crop samples inside the box everywhere
            assert agree.all()
        # The condition is exact: everywhere else the two really differ (random pixels).
        assert (diff[~agree] > 1e-6).all(), (top, left, h, w)
        n_differ += int((~agree).sum())
    assert n_differ > 0  # the enlarging crops above did exercise the boundary case


def test_resized_crop_handles_fractional_boxes_and_non_square_output() -> None:
    x = _images(B=2)
    # A box shifted by half a pixel is the average of its two integer neighbours (bilinear).
    boxes = torch.tensor([[2.0, 3.5, 8.0, 8.0], [0.0, 0.0, 16.0, 16.0]])
    out = resized_crop(x, boxes, (8, 8))
    a = resized_crop(x, torch.tensor([[2.0, 3.0, 8.0, 8.0]] * 2), 8)[0]
    b = resized_crop(x, torch.tensor([[2.0, 4.0, 8.0, 8.0]] * 2), 8)[0]
    torch.testing.assert_close(out[0], (a + b) / 2, atol=1e-5, rtol=0)
    full = resized_crop(x, boxes, 16)[1]  # the whole image at its own size: unchanged
    torch.testing.assert_close(full, x[1], atol=1e-5, rtol=0)
    assert resized_crop(x, boxes, (6, 10)).shape == (2, 3, 6, 10)


def test_random_resized_crop_boxes_fit_and_follow_scale_and_ratio() -> None:
    H, W, scale, ratio = 32, 24, (0.2, 0.9), (0.5, 2.0)
    boxes = random_resized_crop_boxes(
        4000, H, W, scale, ratio, generator=torch.Generator().manual_seed(0)
    )
    top, left, h, w = boxes.unbind(1)
    assert boxes.shape == (4000, 4) and boxes.dtype == torch.float32
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= H + 1e-4).all() and (left + w <= W + 1e-4).all()
    area = h * w / (H * W)
    assert area.max() <= scale[1] + 1e-5
    free = (h < H) & (w < W)  # boxes that were not clamped keep their sampled area and ratio
    assert free.float().mean() > 0.5
    assert area[free].min() >= scale[0] - 1e-5
    assert (w / h)[free].min() >= ratio[0] - 1e-4 and (w / h)[free].max() <= ratio[1] + 1e-4
    # Positions are spread over the whole free range, not stuck in a corner.
    assert (top / (H - h).clamp(min=1e-6))[free].mean().item() == pytest.approx(0.5, abs=0.05)


def test_augment_is_seeded_keeps_shape_and_range_and_views_differ() -> None:
    x = _images(B=8, H=32, W=32)
    a = augment(x, AugmentConfig(), generator=torch.Generator().manual_seed(1))
    b = augment(x, AugmentConfig(), generator=torch.Generator().manual_seed(1))
    c = augment(x, AugmentConfig(), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    v1, v2 = two_views(x, generator=torch.Generator().manual_seed(3))
    assert (v1 - v2).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image's two views differ
    # Without a generator: torch's global RNG, so torch.manual_seed (as fit does) repeats it.
    torch.manual_seed(5)
    d = augment(x)
    torch.manual_seed(5)
    assert torch.equal(d, augment(x))
    # Grayscale images (digits) go through too.
    assert augment(x[:, :1], generator=torch.Generator().manual_seed(0)).shape == (8, 1, 32, 32)


def test_augment_with_everything_off_is_the_identity() -> None:
    x = _images(B=4, H=32, W=32)
    off = AugmentConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
    )
    torch.testing.assert_close(augment(x, off), x, atol=1e-5, rtol=0)
    gray = dataclasses.replace(off, grayscale_p=1.0)
    torch.testing.assert_close(augment(x, gray), TF.rgb_to_grayscale(x, 3), atol=1e-5, rtol=0)


def test_augmentation_errors() -> None:
    x = _images()
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.8, 0.2))
    with pytest.raises(ValueError, match=">= 0"):
        adjust_brightness(x, torch.full((6,), -1.0))
    with pytest.raises(ValueError, match="one value per image"):
        adjust_contrast(x, torch.ones(5))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, torch.ones(6), kernel_size=4)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        augment(torch.rand(2, 4, 8, 8))
    with pytest.raises(TypeError, match="bool"):
        hflip(x, torch.ones(6))
    assert (
        AugmentConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(AugmentConfig()))))
        == AugmentConfig()
    )


# ----------------------------------------------------------------------------- NT-Xent


def loop_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The loss written straight from the paper, one anchor at a time, in float64."""
    z = torch.cat([z1, z2]).double()
    n, B = len(z), len(z1)
    total = 0.0
    for i in range(n):
        sims = [F.cosine_similarity(z[i], z[k], dim=0).item() / t for k in range(n)]
        positive = math.exp(sims[(i + B) % n])
        others = sum(math.exp(sims[k]) for k in range(n) if k != i)
        total += -math.log(positive / others)
    return total / n


@pytest.mark.parametrize(("B", "D", "t"), [(2, 3, 0.5), (5, 8, 0.2), (8, 16, 0.07), (3, 4, 1.0)])
def test_nt_xent_equals_a_plain_loop(B: int, D: int, t: float) -> None:
    g = torch.Generator().manual_seed(B * 100 + D)
    z1, z2 = torch.randn(B, D, generator=g) * 3, torch.randn(B, D, generator=g)
    loss = nt_xent_loss(z1, z2, t)
    assert loss.ndim == 0
    assert abs(loss.item() - loop_nt_xent(z1, z2, t)) < 1e-5
    # Symmetric under swapping the views, and blind to the embeddings' lengths.
    torch.testing.assert_close(nt_xent_loss(z2, z1, t), loss, atol=1e-5, rtol=0)
    scale = torch.rand(B, 1, generator=g) * 10 + 0.1
    torch.testing.assert_close(nt_xent_loss(z1 * scale, z2 * 7.0, t), loss, atol=1e-5, rtol=0)


def test_nt_xent_logits_target_column_holds_the_positive_pair() -> None:
    B, D, t = 5, 6, 0.3
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    logits, targets = nt_xent_logits(z1, z2, t)
    assert logits.shape == (2 * B, 2 * B - 1) and targets.shape == (2 * B,)
    assert targets.dtype == torch.int64
    positive = F.cosine_similarity(z1, z2, dim=1) / t  # (B,)
    torch.testing.assert_close(logits[torch.arange(2 * B), targets], positive.repeat(2))
    # No row contains the self-similarity 1/t (random vectors are never parallel).
    assert (logits < 1 / t - 1e-3).all()
    # Views that are exact copies: each positive is the row maximum, and the loss is low.
    same_logits, same_targets = nt_xent_logits(z1, z1.clone(), 0.05)
    assert torch.equal(same_logits.argmax(dim=1), same_targets)


def test_nt_xent_errors() -> None:
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z, torch.randn(3, 8))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent_loss(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent_loss(z, z, temperature=-1)
    with pytest.raises(ValueError, match="at least 2 images"):
        nt_xent_loss(z[:1], z[:1])
    with pytest.raises(ValueError, match="2 dimensions"):
        nt_xent_loss(z[0], z[0])
    with pytest.raises(TypeError, match="floating-point"):
        nt_xent_loss(z.long(), z.long())


# ----------------------------------------------------------------------------- SimCLR


def test_simclr_shapes_and_gradients_reach_encoder_and_projector() -> None:
    torch.manual_seed(0)
    model = SimCLR(SimCLRConfig(encoder=SMALL_ENCODER, proj_hidden_dim=48, proj_dim=16))
    x = torch.rand(4, 3, 32, 32)
    assert model(x).shape == (4, 16)
    assert model.features(x).shape == (4, 32)
    loss = nt_xent_loss(*model(torch.cat([x, x.flip(-1)])).chunk(2))
    loss.backward()
    for name in (
        "encoder.patch_embed.proj.weight",
        "encoder.blocks.0.attn.qkv.weight",
        "projector.fc1.weight",
        "projector.fc2.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert isinstance(model.projector, ProjectionHead)


def test_simclr_with_a_cnn_encoder() -> None:
    torch.manual_seed(0)
    cfg = SimCLRConfig(encoder=SMALL_ENCODER, arch="cnn", cnn_width=8, proj_dim=16)
    model = SimCLR(cfg)
    x = torch.rand(4, 3, 32, 32)
    assert isinstance(model.encoder, SmallCNN)
    assert model.features(x).shape == (4, 32) and model(x).shape == (4, 16)  # 4 * width
    loss, _ = simclr_loss_fn()(model.train(), x)
    loss.backward()
    assert model.encoder.features[0][0].weight.grad.abs().sum() > 0
    # Configs stored before arch existed load as the ViT they were.
    old = {k: v for k, v in dataclasses.asdict(SIMCLR_PRESETS["simclr_course_tiny"]).items()}
    del old["arch"], old["cnn_width"]
    assert SimCLRConfig.from_dict(old).arch == "vit"
    preset = SIMCLR_PRESETS["simclr_cnn_tiny"]
    assert preset.arch == "cnn" and preset.augment.hue == 0.5
    with pytest.raises(ValueError, match="arch"):
        SimCLRConfig(encoder=SMALL_ENCODER, arch="resnet")


def test_simclr_config_round_trips_through_json_and_validates() -> None:
    cfg = SimCLRConfig(
        encoder=SMALL_ENCODER,
        proj_dim=32,
        temperature=0.1,
        augment=AugmentConfig(crop_scale=(0.2, 1.0), blur_p=0.0),
    )
    d = json.loads(json.dumps({"__type__": "SimCLRConfig", **dataclasses.asdict(cfg)}))
    assert SimCLRConfig.from_dict(d) == cfg
    preset = SIMCLR_PRESETS["simclr_course_tiny"]
    assert SimCLRConfig.from_dict(dataclasses.asdict(preset)) == preset
    with pytest.raises(ValueError, match="num_classes=0"):
        SimCLRConfig(encoder=vit_config("vit_course_tiny"))
    with pytest.raises(ValueError, match="temperature"):
        SimCLRConfig(encoder=SMALL_ENCODER, temperature=0)
    with pytest.raises(ValueError, match="unknown field"):
        SimCLRConfig.from_dict({**d, "lr": 1.0})


def test_simclr_loss_fn_trains_with_fit() -> None:
    cfg = SimCLRConfig(encoder=SMALL_ENCODER, proj_hidden_dim=32, proj_dim=16)
    model = SimCLR(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(8, 3, 32, 32, generator=g), torch.zeros(8, dtype=torch.long))] * 2
    before = model.encoder.patch_embed.proj.weight.detach().clone()
    history = fit(
        model,
        simclr_loss_fn(),
        batches,
        TrainConfig(steps=2, progress=False, device="cpu", log_every=1),
    )
    assert len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)
    assert all(0 <= a <= 1 for a in history.logs["pos_acc"])
    assert not torch.equal(model.encoder.patch_embed.proj.weight, before)
    # Bare images work too (labels are ignored anyway), as does an explicit config.
    loss, logs = simclr_loss_fn(cfg)(model.train(), batches[0][0])
    assert loss.ndim == 0 and set(logs) == {"pos_acc", "z_std"}


# ----------------------------------------------------------------------------- collapse


def test_embedding_std_is_zero_for_one_point_and_one_over_sqrt_d_on_the_sphere() -> None:
    g = torch.Generator().manual_seed(0)
    assert embedding_std(torch.ones(50, 8) * torch.rand(1, 8, generator=g)) == pytest.approx(
        0.0, abs=1e-6
    )
    for D in (16, 64):
        z = torch.randn(20_000, D, generator=g) * 3.0  # the scale is removed by normalising
        assert embedding_std(z) == pytest.approx(1 / math.sqrt(D), rel=0.02)
    # Dimensional collapse: rows on a line through the origin fill 1 of D directions.
    line = torch.randn(1000, 1, generator=g) * torch.ones(1, 64)
    assert embedding_std(line) == pytest.approx(1 / 8, rel=0.02)  # every coordinate +-1/8
    with pytest.raises(ValueError, match="at least 2"):
        embedding_std(torch.ones(1, 8))


def test_alignment_loss_equals_a_loop_and_ignores_the_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    loop = sum(1 - float(z1[i] @ z2[i] / (z1[i].norm() * z2[i].norm())) for i in range(6)) / 6
    assert alignment_loss(z1, z2).item() == pytest.approx(loop, rel=1e-6)
    same = torch.randn(1, 5, generator=g).expand(6, 5)
    assert alignment_loss(same, 2 * same).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        alignment_loss(z1, z2[:3])


def test_positives_only_collapses_and_negatives_prevent_it() -> None:
    cfg = SimCLRConfig(encoder=SMALL_ENCODER, proj_hidden_dim=32, proj_dim=16)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(16, 3, 32, 32, generator=g) for _ in range(4)]
    spread = {}
    for negatives in (False, True):
        torch.manual_seed(0)
        model = SimCLR(cfg)
        history = fit(
            model,
            simclr_loss_fn(negatives=negatives),
            batches * 15,
            TrainConfig(steps=60, lr=5e-3, progress=False, device="cpu", log_every=1),
        )
        spread[negatives] = history.logs["z_std"]
    start = spread[True][0]
    assert spread[False][0] == pytest.approx(start, rel=1e-5)  # same model, same first batch
    # Measured: alignment alone 0.180 -> 0.013 in 60 steps; NT-Xent 0.180 -> 0.097.
    assert spread[False][-1] < 0.1 * start  # alignment alone: the embeddings close up
    assert spread[True][-1] > 0.4 * start  # the negatives keep them apart


def test_simclr_vit_presets_cross_patch_size_and_colour_strength_only() -> None:
    """Lesson 03's 2x2: the four ViT presets differ in the patch size and the colour-jitter
    strength and in nothing else, so the lesson's comparison changes one thing at a time."""
    grid = {
        "simclr_course_tiny": (8, 0.8),
        "simclr_course_tiny_p4": (4, 0.8),
        "simclr_course_tiny_mild": (8, 0.4),
        "simclr_course_tiny_p4_mild": (4, 0.4),
    }
    base = SIMCLR_PRESETS["simclr_course_tiny"]
    for name, (patch, colour) in grid.items():
        preset = SIMCLR_PRESETS[name]
        a = preset.augment
        assert preset.encoder.patch_size == patch and a.brightness == a.contrast == colour
        assert a.saturation == colour and a.hue == 0.5
        undone = dataclasses.replace(
            preset,
            encoder=dataclasses.replace(preset.encoder, patch_size=8),
            augment=dataclasses.replace(a, brightness=0.8, contrast=0.8, saturation=0.8),
        )
        assert undone == base
    # The first recipe's settings are the defaults: lesson 02's ViT and AugmentConfig's jitter.
    first = SIMCLR_PRESETS["simclr_course_tiny_p4_mild"]
    assert first.encoder == vit_config("vit_course_tiny", num_classes=0)
    assert first.augment == AugmentConfig(crop_scale=(0.5, 1.0), hue=0.5)
