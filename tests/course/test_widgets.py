"""Explorers: static figures, widgets that redraw, the numbers behind the pictures, bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vfm_course.course.widgets import (
    CLS_QUERY,
    STATIC_MASK_RATIOS,
    WIDGETS_ENV,
    Explorer,
    attention_explorer,
    mae_mask_ratio_explorer,
    mae_views,
    pos_embed_explorer,
    pos_embed_similarity,
    query_attention,
    use_widgets,
    widgets_available,
)
from vfm_course.layers import (
    num_kept,  # noqa: E402
    patchify,  # noqa: E402
    scaled_dot_product_attention,  # noqa: E402
)
from vfm_course.models import (  # noqa: E402
    MaskedAutoencoder,  # noqa: E402
    VisionTransformer,
    vit_config,
)


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch):
    monkeypatch.delenv(WIDGETS_ENV, raising=False)  # the "auto" tests must not see the caller's
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(vit_config("vit_course_tiny", depth=2))  # 3 heads, 8x8 grid


@pytest.fixture(scope="module")
def vit_no_cls():
    torch.manual_seed(1)
    cfg = vit_config("vit_course_tiny", depth=1, class_token=False, global_pool="avg")
    return VisionTransformer(cfg)


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(2)
    return MaskedAutoencoder("mae_course_tiny")


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------------ the mode


def test_mode_rule(monkeypatch):
    assert widgets_available() is False  # pytest runs outside an IPython kernel
    assert use_widgets() is False
    assert use_widgets(True) is True
    monkeypatch.setenv(WIDGETS_ENV, "interactive")
    assert use_widgets() is True
    assert use_widgets(False) is False  # the argument beats the environment
    monkeypatch.setenv(WIDGETS_ENV, "Static")
    assert use_widgets() is False
    monkeypatch.setenv(WIDGETS_ENV, "yes")
    with pytest.raises(ValueError, match="VFM_WIDGETS must be 'static' or 'interactive'"):
        use_widgets()
    with pytest.raises(TypeError, match="interactive must be True"):
        use_widgets("yes")


def test_environment_variable_picks_the_mode(monkeypatch, vit):
    assert isinstance(pos_embed_explorer(vit), Figure)
    monkeypatch.setenv(WIDGETS_ENV, "interactive")
    assert isinstance(pos_embed_explorer(vit), Explorer)


# ------------------------------------------------------------------------------ attention


def test_attention_static_figure(vit, vit_no_cls, images):
    fig = attention_explorer(vit, images, labels=["a", "b", "c"], index=1, interactive=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3  # one row per layer, one column per head
    assert "image 1: b" in fig.get_suptitle() and "CLS token" in fig.get_suptitle()
    fig = attention_explorer(vit_no_cls, images[0], interactive=False)  # one image, no CLS
    assert len(fig.axes) == 1 * 3
    assert "patch 36 (row 4, col 4)" in fig.get_suptitle()  # the centre patch
    deep = VisionTransformer(vit_config("vit_course_tiny", depth=9, num_heads=8, embed_dim=64))
    assert len(attention_explorer(deep, images[:1], interactive=False).axes) == 6 * 6


def test_query_attention_rows_sum_to_one(vit, vit_no_cls, images):
    with torch.no_grad():
        attn = vit.get_attention_maps(images)[1][0]  # (h, L, L)
    cls_map = query_attention(attn, 2, CLS_QUERY, (8, 8), 1)
    assert cls_map.shape == (8, 8)
    # The row sums to 1 over all tokens: the patches plus what the CLS token gets.
    torch.testing.assert_close(cls_map.sum() + attn[2, 0, 0], torch.tensor(1.0))
    patch_map = query_attention(attn, 0, 10, (8, 8), 1)
    torch.testing.assert_close(patch_map, attn[0, 11, 1:].reshape(8, 8))
    with torch.no_grad():
        attn = vit_no_cls.get_attention_maps(images)[0][2]  # (h, N, N)
    for query in (0, 63):
        torch.testing.assert_close(
            query_attention(attn, 1, query, (8, 8), 0).sum(), torch.tensor(1.0)
        )


def test_attention_widget_controls_and_redraw(vit, images):
    w = attention_explorer(vit, images, labels=torch.tensor([3, 1, 4]), interactive=True)
    assert isinstance(w, ipywidgets.VBox) and isinstance(w, Explorer)
    ranges = {name: (c.min, c.max) for name, c in w.controls.items()}
    assert ranges == {"image": (0, 2), "layer": (0, 1), "head": (0, 2), "query": (-1, 63)}
    assert w.controls["query"].value == CLS_QUERY
    first = bytes(w.picture.value)
    assert first.startswith(b"\x89PNG")
    w.controls["layer"].value = 1
    w.controls["query"].value = 20
    w.controls["image"].value = 2
    assert w.shown["layer"] == 1 and w.shown["query"] == 20 and w.shown["image"] == 2
    assert bytes(w.picture.value) != first


def test_attention_widget_map_equals_qkv_computation(vit, images):
    layer, head, query, i = 1, 2, 27, 1
    w = attention_explorer(vit, images, interactive=True)
    for name, value in {"image": i, "layer": layer, "head": head, "query": query}.items():
        w.controls[name].value = value

    # Independently: run the residual stream up to the block, then its qkv projection.
    with torch.no_grad():
        x = vit.patch_embed(images[i : i + 1])  # (1, N, D)
        x = torch.cat([vit.cls_token, x], dim=1) + vit.pos_embed  # (1, L, D)
        for blk in vit.blocks[:layer]:
            x = blk(x)
        blk = vit.blocks[layer]
        qkv = blk.attn.qkv(blk.norm1(x))[0]  # (L, 3D)
        dim, d = vit.embed_dim, vit.embed_dim // vit.cfg.num_heads
        q = qkv[:, head * d : (head + 1) * d]  # (L, d)
        k = qkv[:, dim + head * d : dim + (head + 1) * d]  # (L, d)
        by_hand = torch.softmax(q @ k.T / d**0.5, dim=-1)  # (L, L)
        _, weights = scaled_dot_product_attention(q, k, k, return_weights=True)  # (L, L)
    expected = by_hand[1 + query, 1:].reshape(8, 8)
    torch.testing.assert_close(w.shown["map"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        w.shown["map"], weights[1 + query, 1:].reshape(8, 8), atol=1e-5, rtol=0
    )


def test_attention_restores_train_mode(images):
    model = VisionTransformer(vit_config("vit_course_tiny", depth=1)).train()
    attention_explorer(model, images, interactive=False)
    assert model.training
    attention_explorer(model.eval(), images, interactive=True)
    assert not model.training


def test_attention_bad_inputs(vit, mae, images):
    with pytest.raises(TypeError, match="needs a vfm_course VisionTransformer.*mae.encoder"):
        attention_explorer(mae, images)
    with pytest.raises(ValueError, match="images are 28x28 but this model was built for 32x32"):
        attention_explorer(vit, torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="images have 1 channels"):
        attention_explorer(vit, torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="images must have 3 or 4 dimensions"):
        attention_explorer(vit, torch.rand(32, 32))
    with pytest.raises(ValueError, match="index 3 is out of range: there are 3 image"):
        attention_explorer(vit, images, index=3)
    with pytest.raises(ValueError, match="got 3 images but 2 labels"):
        attention_explorer(vit, images, labels=["a", "b"])
    attn = torch.softmax(torch.randn(3, 65, 65), dim=-1)
    with pytest.raises(ValueError, match="query 64 is out of range: pick a patch 0..63 or -1"):
        query_attention(attn, 0, 64, (8, 8), 1)
    with pytest.raises(ValueError, match="head 3 is out of range"):
        query_attention(attn, 3, 0, (8, 8), 1)
    with pytest.raises(ValueError, match="has no class token"):
        query_attention(attn[:, 1:, 1:], 0, CLS_QUERY, (8, 8), 0)


# ------------------------------------------------------------------------------------ MAE


def test_mae_static_figure_and_views(mae, images):
    mae.train()
    fig = mae_mask_ratio_explorer(mae, images, index=2, interactive=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(STATIC_MASK_RATIOS) * 4
    assert mae.training  # restored
    hidden = {}
    for ratio in (0.0, 0.5, 0.75, 0.95):
        views = mae_views(mae, images[0], ratio, seed=7)
        assert set(views) == {"original", "masked", "reconstruction", "pasted"}
        assert all(v.shape == (3, 32, 32) for v in views.values())
        grey = (patchify(views["masked"][None], 4)[0] == 0.5).all(dim=-1)  # (N,), hidden patches
        assert int(grey.sum()) == 64 - num_kept(64, ratio)
        hidden[ratio] = grey
    # One seed, one noise: a higher ratio hides a superset of the patches (nested masks).
    assert (hidden[0.5] <= hidden[0.75]).all() and (hidden[0.75] <= hidden[0.95]).all()
    again = mae_views(mae, images[0], 0.75, seed=7)
    torch.testing.assert_close(
        again["reconstruction"], mae_views(mae, images[0], 0.75, 7)["reconstruction"]
    )


def test_mae_widget_controls_and_redraw(mae, images):
    w = mae_mask_ratio_explorer(mae, images, interactive=True)
    ratio = w.controls["mask_ratio"]
    assert (ratio.min, ratio.max, ratio.step, ratio.value) == (0.0, 0.95, 0.05, 0.75)
    assert (w.controls["image"].min, w.controls["image"].max) == (0, 2)
    masked_before = w.shown["views"]["masked"]
    ratio.value = 0.3
    assert w.shown["mask_ratio"] == 0.3
    ratio.value = 0.75  # back again: the same mask, since each image has its own fixed seed
    torch.testing.assert_close(w.shown["views"]["masked"], masked_before)
    w.controls["image"].value = 1
    torch.testing.assert_close(w.shown["views"]["original"], images[1])


def test_mae_bad_inputs(vit, mae, images):
    with pytest.raises(TypeError, match="needs a vfm_course MaskedAutoencoder, got VisionT"):
        mae_mask_ratio_explorer(vit, images)
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        mae_mask_ratio_explorer(mae, images, mask_ratios=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        mae_views(mae, images[0], -0.1)
    with pytest.raises(ValueError, match="mask_ratios is empty"):
        mae_mask_ratio_explorer(mae, images, mask_ratios=())
    with pytest.raises(ValueError, match="images are 16x16 but this model was built for 32x32"):
        mae_mask_ratio_explorer(mae, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="index -1 is out of range"):
        mae_mask_ratio_explorer(mae, images, index=-1)


# ----------------------------------------------------------------------- position embeddings


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
@pytest.mark.parametrize("class_token", [True, False])
def test_pos_embed_similarity(pos_embed, class_token):
    cfg = vit_config(
        "vit_course_digits",  # 4x4 grid
        depth=1,
        pos_embed=pos_embed,
        class_token=class_token,
        global_pool="token" if class_token else "avg",
    )
    sim = pos_embed_similarity(VisionTransformer(cfg))
    assert sim.shape == (16, 16)
    torch.testing.assert_close(sim.diagonal(), torch.ones(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(sim, sim.T, atol=1e-6, rtol=0)
    assert sim.abs().max() <= 1 + 1e-5


def test_pos_embed_figure_and_widget(vit, vit_no_cls):
    fig = pos_embed_explorer(vit, interactive=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # the mosaic and its colour bar
    w = pos_embed_explorer(vit_no_cls, interactive=True)
    assert {n: (c.min, c.max, c.value) for n, c in w.controls.items()} == {
        "row": (0, 7, 4),
        "col": (0, 7, 4),
    }
    w.controls["row"].value, w.controls["col"].value = 1, 6
    sim = pos_embed_similarity(vit_no_cls)
    torch.testing.assert_close(w.shown["similarity"], sim[1 * 8 + 6].reshape(8, 8))
    assert w.shown["similarity"][1, 6] == pytest.approx(1.0, abs=1e-5)


def test_pos_embed_bad_input(mae):
    with pytest.raises(TypeError, match="needs a vfm_course VisionTransformer.*mae.encoder"):
        pos_embed_explorer(mae)
    with pytest.raises(TypeError, match="got str"):
        pos_embed_similarity("vit_course_tiny")


def test_explorers_fit_a_laptop_screen_at_their_own_size(vit, mae, images):
    """Each picture is drawn at twice the size it is shown at (sharp on dense screens) and is
    shown at that size, not stretched to the notebook's width; the tallest fits beside its
    sliders on a 1366x768 laptop screen."""
    for w in (
        attention_explorer(vit, images, interactive=True),
        mae_mask_ratio_explorer(mae, images, interactive=True),
        pos_embed_explorer(vit, interactive=True),
    ):
        png = bytes(w.picture.value)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert w.picture.layout.width == f"{width // 2}px"
        assert w.picture.layout.height == "auto"
        assert width // 2 <= 700 and height // 2 <= 500, (type(w).__name__, width, height)
