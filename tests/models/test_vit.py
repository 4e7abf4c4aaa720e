"""The course ViT against timm's VisionTransformer: same weights -> same logits; presets; errors."""

import dataclasses

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vfm_course.models import (
    PRESETS,
    VisionTransformer,
    ViTConfig,
    from_timm,
    timm_kwargs,
    to_timm,
    vit_config,
)

PARITY_CONFIGS = {
    "tiny": vit_config("vit_course_tiny"),
    "digits": vit_config("vit_course_digits"),
    "tiny-avg": vit_config("vit_course_tiny", global_pool="avg"),
    "tiny-sincos": vit_config("vit_course_tiny", pos_embed="sincos"),
    "tiny-avg-nocls-sincos": vit_config(
        "vit_course_tiny", global_pool="avg", class_token=False, pos_embed="sincos"
    ),
    "digits-avg-nocls": vit_config("vit_course_digits", global_pool="avg", class_token=False),
    "odd-mlp-nobias-nohead": vit_config(
        "vit_course_digits", mlp_ratio=2.5, qkv_bias=False, num_classes=0
    ),
}


def _images(cfg: ViTConfig, batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)


def test_block_matches_timm_block_with_and_without_mask() -> None:
    from timm.models.vision_transformer import Block as TimmBlock

    from vfm_course.layers import Block

    torch.manual_seed(0)
    ours = Block(64, num_heads=4, mlp_ratio=4.0, qkv_bias=True)
    ref = TimmBlock(64, num_heads=4, mlp_ratio=4.0, qkv_bias=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 17, 64)
    mask = torch.rand(2, 1, 17, 17) > 0.3
    mask[..., 0] = True  # every query may see at least one key
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            ours(x, attn_mask=mask), ref(x, attn_mask=mask), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_same_logits_as_timm(name: str) -> None:
    cfg = PARITY_CONFIGS[name]
    torch.manual_seed(0)
    model = VisionTransformer(cfg).eval()
    ref = TimmViT(**timm_kwargs(cfg)).eval()
    # Strict: every name and shape agrees, nothing missing, nothing extra.
    ref.load_state_dict(model.state_dict(), strict=True)
    x = _images(cfg)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert ours.shape == (4, cfg.num_classes or cfg.embed_dim)
    assert (ours - theirs).abs().max().item() < 1e-5
    torch.testing.assert_close(feats, ref.forward_features(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, ref.forward_head(feats, pre_logits=True), atol=1e-5, rtol=0)
    assert feats.shape == (4, cfg.seq_len, cfg.embed_dim)


def test_same_gradients_as_timm() -> None:
    cfg = vit_config("vit_course_digits")
    model = VisionTransformer(cfg)
    ref = to_timm(model)
    x, y = _images(cfg), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_timm_module_layout_is_mirrored() -> None:
    for pool in ("token", "avg"):
        model = VisionTransformer(vit_config("vit_course_digits", global_pool=pool))
        ref = TimmViT(**timm_kwargs(model.cfg))
        for attr in ("norm", "fc_norm", "head"):
            assert isinstance(getattr(model, attr), torch.nn.Identity) == isinstance(
                getattr(ref, attr), torch.nn.Identity
            ), (pool, attr)
        assert model.blocks[0].norm1.eps == ref.blocks[0].norm1.eps == 1e-6
        assert model.num_prefix_tokens == ref.num_prefix_tokens


@pytest.mark.parametrize("name", ["tiny-sincos", "tiny-avg-nocls-sincos", "digits", "tiny-avg"])
def test_round_trip_through_timm(name: str) -> None:
    cfg = PARITY_CONFIGS[name]
    model = VisionTransformer(cfg).eval()
    ref = to_timm(model)
    assert not ref.training
    assert ref.pos_embed.requires_grad == (cfg.pos_embed == "learned")
    back = from_timm(ref)
    assert back.cfg == cfg  # config read off the timm model, sin-cos recognised
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    x = _images(cfg, batch=2)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_from_timm_refuses_what_it_cannot_hold() -> None:
    kw = timm_kwargs(vit_config("vit_course_digits"))
    with pytest.raises(ValueError, match="layer scale"):
        from_timm(TimmViT(**kw, init_values=1e-5))
    with pytest.raises(ValueError, match="register tokens"):
        from_timm(TimmViT(**kw, reg_tokens=2))
    with pytest.raises(ValueError, match="do not match"):
        from_timm(TimmViT(**kw), cfg=vit_config("vit_course_digits", depth=2))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_backpropagates(name: str) -> None:
    cfg = PRESETS[name]
    model = VisionTransformer(name)
    batch = 1 if cfg.img_size > 64 else 2
    logits = model(_images(cfg, batch=batch))
    assert logits.shape == (batch, cfg.num_classes)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.pos_embed.shape == (1, cfg.seq_len, cfg.embed_dim)


EXPECTED_PARAMS = {
    "vit_course_tiny": 459_174,
    "vit_course_digits": 152_202,
    "vit_course_small": 2_693_578,
    "vit_tiny_patch16_224": 5_717_416,
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_counts_match_timm(name: str) -> None:
    assert set(EXPECTED_PARAMS) == set(PRESETS)
    model = VisionTransformer(name)
    n_timm = sum(p.numel() for p in TimmViT(**timm_kwargs(model.cfg)).parameters())
    print(f"{name}: {model.num_params():,} parameters (timm: {n_timm:,})")
    assert model.num_params() == n_timm == EXPECTED_PARAMS[name]


def test_frozen_sincos_is_not_trainable() -> None:
    n_timm = EXPECTED_PARAMS["vit_course_tiny"]
    sincos = VisionTransformer(vit_config("vit_course_tiny", pos_embed="sincos"))
    assert sincos.num_params() == n_timm
    assert sincos.num_params(trainable_only=True) == n_timm - 65 * 96  # pos_embed is frozen


def test_attn_impls_agree() -> None:
    cfg = vit_config("vit_course_digits")
    models = {
        impl: VisionTransformer(dataclasses.replace(cfg, attn_impl=impl)).eval()
        for impl in ("sdpa", "explicit", "chunked")
    }
    state = models["sdpa"].state_dict()
    x = _images(cfg)
    with torch.no_grad():
        for m in models.values():
            m.load_state_dict(state)
        outs = {impl: m(x) for impl, m in models.items()}
    for impl in ("explicit", "chunked"):
        torch.testing.assert_close(outs[impl], outs["sdpa"], atol=1e-5, rtol=0, msg=impl)


def test_attention_maps() -> None:
    cfg = vit_config("vit_course_tiny")
    model = VisionTransformer(cfg).eval()
    x = _images(cfg, batch=2)
    with torch.no_grad():
        maps = model.get_attention_maps(x)
        logits_after = model(x)
        ref = to_timm(model)(x)
    assert len(maps) == cfg.depth
    for m in maps:
        assert m.shape == (2, cfg.num_heads, cfg.seq_len, cfg.seq_len)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, cfg.num_heads, cfg.seq_len))
        assert (m >= 0).all()
    # The switch is restored: later forwards use the fast kernel and nothing is kept around.
    assert all(not blk.attn.store_attn and blk.attn.attn_weights is None for blk in model.blocks)
    assert (logits_after - ref).abs().max() < 1e-5


def test_sincos_pos_embed_is_frozen_table() -> None:
    from vfm_course.layers import sincos_pos_embed_2d

    model = VisionTransformer(vit_config("vit_course_tiny", pos_embed="sincos"))
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.pos_embed[0], sincos_pos_embed_2d(96, 8, cls_token=True))


def test_bad_configs_are_explained() -> None:
    with pytest.raises(ValueError, match="embed_dim 96 is not divisible by num_heads 5"):
        vit_config("vit_course_tiny", num_heads=5)
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        vit_config("vit_course_tiny", img_size=30)
    with pytest.raises(ValueError, match="unknown ViT preset 'vit_huge'.*vit_course_tiny"):
        vit_config("vit_huge")
    with pytest.raises(ValueError, match="unknown ViT preset"):
        VisionTransformer("nope")
    with pytest.raises(ValueError, match="sincos' needs embed_dim divisible by 4"):
        vit_config("vit_course_tiny", embed_dim=90, pos_embed="sincos")
    with pytest.raises(ValueError, match="class_token=False"):
        vit_config("vit_course_tiny", class_token=False)
    with pytest.raises(ValueError, match="global_pool must be one of"):
        vit_config("vit_course_tiny", global_pool="max")
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        vit_config("vit_course_tiny", attn_impl="flash")
    with pytest.raises(ValueError, match="no field.*'dim'"):
        vit_config("vit_course_tiny", dim=64)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        vit_config("vit_course_tiny", depth=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["vit_course_tiny"].depth = 2  # type: ignore[misc]
    model = VisionTransformer("vit_course_digits")
    with pytest.raises(ValueError, match="images are 32x32 but this model was built for 8x8"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="images have 3 channels"):
        model(torch.randn(1, 3, 8, 8))


def test_init_is_maes_xavier_uniform() -> None:
    """Every Linear weight has xavier's spread, sqrt(2 / (fan_in + fan_out)), and a zero bias;
    the learned position table is trunc-normal(0.02) and the class token near zero."""
    torch.manual_seed(0)
    model = VisionTransformer("vit_course_tiny")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 4 + 1  # qkv, proj, fc1, fc2 per block; the head
    for m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert m.weight.abs().max() <= bound
        assert abs(m.weight.std().item() / (bound / 3**0.5) - 1) < 0.1
        assert (m.bias == 0).all()
    assert abs(model.pos_embed.std().item() - 0.02) < 0.002
    assert model.cls_token.abs().max() < 1e-4


def test_init_makes_attention_differ_between_tokens() -> None:
    """The reason for xavier: with timm's trunc-normal(0.02) the first layer's attention rows
    are uniform to within a few percent at this width; with xavier they are visibly not."""
    x = _images(vit_config("vit_course_tiny"), batch=16)

    def peak(model: VisionTransformer) -> float:  # mean over rows of (largest weight x L)
        first = model.eval().get_attention_maps(x)[0]  # (B, h, L, L)
        return (first.max(-1).values * first.shape[-1]).mean().item()

    torch.manual_seed(0)
    xavier = VisionTransformer("vit_course_tiny")
    timm_like = VisionTransformer("vit_course_tiny")
    with torch.no_grad():
        for m in timm_like.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.trunc_normal_(m.weight, std=0.02)
    assert peak(timm_like) < 1.1 < 1.2 < peak(xavier)


def test_timm_weight_init_is_kept_as_an_option() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(vit_config("vit_course_tiny", weight_init="timm"))
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            assert abs(m.weight.std().item() - 0.02) < 0.003
    with pytest.raises(ValueError, match="weight_init"):
        vit_config("vit_course_tiny", weight_init="jax")


def test_init_linear_refuses_an_unknown_scheme() -> None:
    """A direct caller's typo is an error, not a silent xavier init; the layer is untouched."""
    from vfm_course.layers import init_linear

    layer = torch.nn.Linear(4, 4)
    before = layer.weight.clone()
    with pytest.raises(ValueError, match="scheme must be one of 'mae', 'timm'; got 'tim'"):
        init_linear(layer, "tim")
    assert torch.equal(layer.weight, before)
