"""Dense features from patch tokens (resized encoders vs timm) and the segmentation head."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from vfm_course.dense import (
    SegmentationHead,
    SegmentationModel,
    predict_masks,
    segmentation_loss,
    segmentation_loss_fn,
)
from vfm_course.layers import resample_pos_embed
from vfm_course.models import (
    DenseEncoder,
    VisionTransformer,
    resize_vit,
    to_timm,
    tokens_to_feature_map,
    vit_config,
)


def encoder(**overrides) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(vit_config("vit_course_tiny", num_classes=0, depth=2, **overrides))


@pytest.mark.parametrize(("new", "prefix"), [((16, 16), 1), ((4, 4), 1), ((12, 6), 0)])
def test_resample_pos_embed_matches_timm(new: tuple[int, int], prefix: int) -> None:
    pos = torch.randn(1, prefix + 64, 96)
    want = resample_abs_pos_embed(pos, list(new), num_prefix_tokens=prefix)
    torch.testing.assert_close(resample_pos_embed(pos, new, prefix), want)
    torch.testing.assert_close(resample_pos_embed(pos, (8, 8), prefix), pos)  # same size: same


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
def test_resized_vit_equals_timm_at_the_new_size(pos_embed: str) -> None:
    small = encoder(pos_embed=pos_embed).eval()
    big = resize_vit(small, 64)
    assert big.cfg.img_size == 64 and big.pos_embed.shape == (1, 1 + 256, 96)
    assert big.pos_embed.requires_grad == small.pos_embed.requires_grad
    # timm's own way: a 64x64 model whose pos_embed is resampled by timm from the 32x32 one
    ref = to_timm(small)
    state = ref.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [16, 16])
    ref64 = type(ref)(**{**_timm_kwargs(small), "img_size": 64}).eval()
    ref64.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(big.forward_features(x), ref64.forward_features(x))
    # every other weight is shared
    for name, p in small.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(p, big.state_dict()[name])


def _timm_kwargs(model: VisionTransformer) -> dict:
    from vfm_course.models import timm_kwargs

    return timm_kwargs(model.cfg)


def test_tokens_to_feature_map_places_patches_row_by_row() -> None:
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # 1 cls + 2x3 grid
    fmap = tokens_to_feature_map(tokens, (2, 3), 1)
    assert fmap.shape == (2, 3, 2, 3)
    assert torch.equal(fmap[1, :, 1, 0], tokens[1, 1 + 3])  # row 1, column 0 = patch 3
    with pytest.raises(ValueError, match="a 4x4 patch grid plus 1 prefix token"):
        tokens_to_feature_map(tokens, (4, 4))


def test_dense_encoder_matches_the_encoders_tokens() -> None:
    enc = encoder()
    x = torch.rand(2, 3, 32, 32)
    fmap = DenseEncoder(enc, frozen=False)(x)
    tokens = enc.forward_features(x)[:, 1:]  # (B, 64, 96)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), tokens)
    with pytest.raises(ValueError, match="images are 64x64 but this model was built for 32x32"):
        DenseEncoder(enc)(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("frozen", [True, False])
def test_segmentation_model_shapes_grads_and_loss(kind: str, frozen: bool) -> None:
    model = SegmentationModel(encoder(), num_classes=7, head=kind, img_size=64, frozen=frozen)
    x = torch.rand(3, 3, 64, 64)
    masks = torch.randint(0, 7, (3, 64, 64))
    masks[0, :5] = 255  # ignored pixels
    loss, logs = segmentation_loss_fn()(model, (x, masks))
    assert model(x).shape == (3, 7, 64, 64) and 0 <= logs["pixel_acc"] <= 1
    loss.backward()
    enc_grad = [p.grad is not None for p in model.backbone.encoder.parameters() if p.requires_grad]
    assert (not any(enc_grad)) if frozen else all(enc_grad)
    assert all(p.grad is not None for p in model.head.parameters())
    pred = predict_masks(model, x)
    assert pred.shape == (3, 64, 64) and pred.dtype == torch.int64 and model.training


def test_loss_is_cross_entropy_without_ignored_pixels() -> None:
    logits = torch.randn(2, 4, 8, 8)
    masks = torch.randint(0, 4, (2, 8, 8))
    masks[1, 3:] = 255
    keep = masks != 255
    want = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], masks[keep])
    torch.testing.assert_close(segmentation_loss(logits, masks), want)


def test_linear_head_is_a_per_token_classifier() -> None:
    head = SegmentationHead(96, 5, patch_size=4).eval()
    f = torch.randn(1, 96, 3, 3)
    logits = head(f)
    assert logits.shape == (1, 5, 12, 12)
    small = head.classifier(head.norm(f))  # (1, 5, 3, 3)
    up = F.interpolate(small, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, up)
    # a constant feature map gives the same class scores at every pixel
    flat = head(torch.ones(1, 96, 3, 3))
    torch.testing.assert_close(flat, flat[..., :1, :1].expand_as(flat))


def test_bad_input_is_explained() -> None:
    with pytest.raises(ValueError, match="power of two"):
        SegmentationHead(96, 5, patch_size=6, kind="conv")
    with pytest.raises(ValueError, match="kind must be one of"):
        SegmentationHead(96, 5, patch_size=4, kind="mlp")
    logits = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="class id 9, but there are 4 classes"):
        segmentation_loss(logits, torch.full((2, 8, 8), 9))
    with pytest.raises(ValueError, match=r"masks of shape \(2, 8, 8\)"):
        segmentation_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        segmentation_loss(logits, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="every pixel is ignore_index"):
        segmentation_loss(logits, torch.full((2, 8, 8), 255))
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        resize_vit(encoder(), 30)
