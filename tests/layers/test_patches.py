"""patchify / unpatchify / PatchEmbed: exact round trip, conv == patchify + matmul, bad input."""

import pytest
import torch

from vfm_course.layers import (
    PatchEmbed,
    conv_weight_as_linear,
    patch_embed_as_linear,
    patchify,
    unpatchify,
)


@pytest.mark.parametrize(("c", "h", "w", "p"), [(3, 32, 32, 4), (1, 8, 8, 2), (3, 12, 20, 4)])
def test_round_trip_is_exact(c: int, h: int, w: int, p: int) -> None:
    imgs = torch.randn(2, c, h, w)
    x = patchify(imgs, p)
    assert x.shape == (2, (h // p) * (w // p), p * p * c)
    back = unpatchify(x, p, grid_size=(h // p, w // p), channels=c)
    assert torch.equal(back, imgs)


def test_square_grid_is_inferred() -> None:
    imgs = torch.randn(2, 1, 8, 8)
    assert torch.equal(unpatchify(patchify(imgs, 2), 2, channels=1), imgs)


def test_pixel_order_is_row_col_channel_like_mae() -> None:
    imgs = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 3, 4, 4)
    x = patchify(imgs, 2)  # grid 2x2
    # Patch 1 is grid cell (row 0, col 1): pixels rows 0-1, columns 2-3.
    expected = imgs[1, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1)  # (P, P, C) flattened
    assert torch.equal(x[1, 1], expected)
    # MAE's reference implementation (models_mae.py), written with einsum.
    p, g = 2, 2
    mae = imgs.reshape(2, 3, g, p, g, p)
    mae = torch.einsum("nchpwq->nhwpqc", mae).reshape(2, g * g, p * p * 3)
    assert torch.equal(x, mae)


@pytest.mark.parametrize(("img", "p", "c", "d"), [(32, 4, 3, 96), (8, 2, 1, 64), (16, 8, 3, 20)])
def test_patch_embed_conv_equals_linear(img: int, p: int, c: int, d: int) -> None:
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=img, patch_size=p, in_chans=c, embed_dim=d)
    assert embed.grid_size == (img // p, img // p)
    assert embed.num_patches == (img // p) ** 2
    x = torch.randn(3, c, img, img)
    out = embed(x)
    assert out.shape == (3, embed.num_patches, d)
    torch.testing.assert_close(patch_embed_as_linear(embed, x), out, atol=1e-5, rtol=0)
    weight, bias = conv_weight_as_linear(embed)
    assert weight.shape == (d, p * p * c)
    assert bias.shape == (d,)


def test_patch_embed_matches_timm() -> None:
    from timm.layers import PatchEmbed as TimmPatchEmbed

    embed = PatchEmbed(32, 4, 3, 96)
    ref = TimmPatchEmbed(img_size=32, patch_size=4, in_chans=3, embed_dim=96)
    ref.load_state_dict(embed.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(embed(x), ref(x))


def test_bad_inputs_are_explained() -> None:
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        patchify(torch.randn(1, 3, 30, 30), 4)
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        PatchEmbed(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="4 dimensions"):
        patchify(torch.randn(3, 32, 32), 4)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        patchify(torch.randn(1, 3, 32, 32), 0)
    embed = PatchEmbed(32, 4, 3, 96)
    with pytest.raises(ValueError, match="images have 1 channels but .* in_chans=3"):
        embed(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="images are 16x16 but this model was built for 32x32"):
        embed(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        embed(torch.randn(2, 3, 30, 30))
    with pytest.raises(TypeError, match="floating-point"):
        embed(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="2\\*2\\*3 = 12 numbers"):
        unpatchify(torch.randn(1, 16, 4), 2, channels=3)
    with pytest.raises(ValueError, match="do not form a square grid"):
        unpatchify(torch.randn(1, 15, 12), 2)
    with pytest.raises(ValueError, match="grid_size 3x4 holds 12 patches"):
        unpatchify(torch.randn(1, 16, 12), 2, grid_size=(3, 4))
