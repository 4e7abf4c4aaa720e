"""Masked autoencoder: loss on masked patches only, targets, no leakage, every config trains."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from vfm_course.layers import num_kept
from vfm_course.models import MAE_PRESETS, MAEConfig, MaskedAutoencoder, ViTConfig, vit_config
from vfm_course.objectives import mae_loss_fn
from vfm_course.train import TrainConfig, fit


def small_cfg(
    class_token: bool = True,
    pos_embed: str = "learned",
    norm_pix_loss: bool = True,
    decoder_depth: int = 1,
    patch_size: int = 4,
    mask_ratio: float = 0.75,
) -> MAEConfig:
    encoder = ViTConfig(
        img_size=16,
        patch_size=patch_size,
        in_chans=3,
        num_classes=0,
        embed_dim=32,
        depth=1,
        num_heads=2,
        class_token=class_token,
        global_pool="token" if class_token else "avg",
        pos_embed=pos_embed,
    )
    return MAEConfig(encoder, 16, decoder_depth, 2, mask_ratio, norm_pix_loss)


def images(cfg: MAEConfig, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = cfg.encoder
    return torch.rand(batch, e.in_chans, e.img_size, e.img_size, generator=g)


def make(cfg: MAEConfig, seed: int = 0) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(cfg)


def manual_targets(imgs: torch.Tensor, p: int, norm_pix: bool) -> np.ndarray:
    """Patches cut out with slicing loops, pixels (row, col, channel), numpy statistics."""
    x = imgs.double().numpy()
    B, C, H, W = x.shape
    out = np.empty((B, (H // p) * (W // p), p * p * C))
    for b in range(B):
        for n, (i, j) in enumerate(itertools.product(range(H // p), range(W // p))):
            patch = x[b, :, i * p : (i + 1) * p, j * p : (j + 1) * p].transpose(1, 2, 0).ravel()
            if norm_pix:
                patch = (patch - patch.mean()) / np.sqrt(patch.var(ddof=1) + 1e-6)
            out[b, n] = patch
    return out


@pytest.mark.parametrize("norm_pix", [True, False])
def test_targets_and_loss_equal_a_hand_computation(norm_pix: bool) -> None:
    cfg = small_cfg(norm_pix_loss=norm_pix)
    model = make(cfg)
    imgs = images(cfg)
    targets = manual_targets(imgs, 4, norm_pix)
    np.testing.assert_allclose(model.patch_targets(imgs).numpy(), targets, rtol=1e-5, atol=1e-5)

    loss, pred, mask = model(imgs, generator=torch.Generator().manual_seed(3))
    total, count = 0.0, 0
    for b, n in itertools.product(range(pred.shape[0]), range(pred.shape[1])):
        if mask[b, n] == 1:
            total += float(np.mean((pred[b, n].detach().double().numpy() - targets[b, n]) ** 2))
            count += 1
    assert count == imgs.shape[0] * (16 - num_kept(16, 0.75))
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_loss_ignores_visible_patches() -> None:
    cfg = small_cfg()
    model = make(cfg)
    imgs = images(cfg)
    with torch.no_grad():
        loss, pred, mask = model(imgs, generator=torch.Generator().manual_seed(0))
        visible = (mask == 0).nonzero()[0].tolist()
        hidden = (mask == 1).nonzero()[0].tolist()
        bumped = pred.clone()
        bumped[visible[0], visible[1]] += 10.0
        assert model.forward_loss(imgs, bumped, mask).item() == loss.item()
        bumped = pred.clone()
        bumped[hidden[0], hidden[1]] += 10.0
        assert model.forward_loss(imgs, bumped, mask).item() > loss.item() + 1.0


@pytest.mark.parametrize("class_token", [True, False])
def test_encoder_sees_only_visible_tokens(class_token: bool) -> None:
    cfg = small_cfg(class_token=class_token, pos_embed="learned")
    model = make(cfg).eval()
    imgs = images(cfg, batch=2)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(1))
    keep, prefix = num_kept(16, 0.75), int(class_token)
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(imgs, noise=noise)
        assert latent.shape == (2, prefix + keep, 32)
        assert mask.shape == ids_restore.shape == (2, 16)

        # The full-sequence path, run sample by sample on just the visible tokens.
        enc = model.encoder
        tokens = enc.patch_embed(imgs) + enc.pos_embed[:, prefix:]  # (B, N, D)
        for b in range(2):
            ids = noise[b].argsort()[:keep]
            x = tokens[b : b + 1, ids]  # (1, N_keep, D)
            if class_token:
                x = torch.cat([enc.cls_token + enc.pos_embed[:, :1], x], dim=1)
            torch.testing.assert_close(latent[b : b + 1], enc.norm(enc.blocks(x)))

        # Changing the pixels of masked patches must not change the encoding at all.
        hidden = mask.reshape(2, 1, 4, 1, 4, 1).expand(2, 3, 4, 4, 4, 4).reshape(2, 3, 16, 16)
        scribbled = torch.where(hidden.bool(), torch.rand_like(imgs), imgs)
        assert not torch.equal(scribbled, imgs)
        torch.testing.assert_close(model.forward_encoder(scribbled, noise=noise)[0], latent)

        # Nothing masked, identity order: exactly the ViT's own forward_features.
        full = model.forward_encoder(imgs, mask_ratio=0.0, noise=torch.arange(16.0).expand(2, 16))
        torch.testing.assert_close(full[0], enc.forward_features(imgs))


def test_decoder_places_tokens_at_their_original_positions() -> None:
    cfg = small_cfg(decoder_depth=2)
    model = make(cfg).eval()
    imgs = images(cfg, batch=2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(imgs, generator=g)
        pred = model.forward_decoder(latent, ids_restore)
        # Loop reference: slot n holds the embedded visible token that came from patch n,
        # or the mask token.
        emb = model.decoder_embed(latent)
        ids_keep = torch.argsort(ids_restore, dim=1)[:, : latent.shape[1] - 1]
        rows = []
        for b in range(2):
            slots = [emb[b, 0]]
            for n in range(16):
                hit = (ids_keep[b] == n).nonzero()
                slots.append(emb[b, 1 + hit.item()] if len(hit) else model.mask_token[0, 0])
            rows.append(torch.stack(slots))
        x = torch.stack(rows) + model.decoder_pos_embed
        x = model.decoder_pred(model.decoder_norm(model.decoder_blocks(x)))[:, 1:]
        torch.testing.assert_close(pred, x)

        # The same visible set in another order gives the same prediction (order is bookkeeping).
        noise_a = torch.rand(2, 16, generator=g)
        noise_b = noise_a.clone()
        keep_a = noise_a.argsort(1)[:, :4]
        noise_b.scatter_(1, keep_a, noise_a.gather(1, keep_a).flip(1))  # reverse the kept order
        pa = model(imgs, noise=noise_a)[1]
        pb = model(imgs, noise=noise_b)[1]
        assert not torch.equal(noise_a.argsort(1), noise_b.argsort(1))
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


# class_token (avg pooling without it), pos_embed, norm_pix_loss, decoder_depth, patch_size
COMBOS = list(
    itertools.product([True, False], ["learned", "sincos"], [True, False], [1, 2], [4, 8])
)


@pytest.mark.parametrize("class_token, pos_embed, norm_pix, depth, patch", COMBOS)
def test_every_config_builds_and_backprops(
    class_token: bool, pos_embed: str, norm_pix: bool, depth: int, patch: int
) -> None:
    cfg = small_cfg(class_token, pos_embed, norm_pix, depth, patch)
    model = make(cfg)
    imgs = images(cfg, batch=2)
    n = (16 // patch) ** 2
    loss, pred, mask = model(imgs, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (2, n, patch * patch * 3) and mask.shape == (2, n)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # With global_pool="avg" the ViT's final norm is fc_norm, applied after pooling: MAE's
    # pre-training path does not use it.
    unused = {"encoder.fc_norm.weight", "encoder.fc_norm.bias"}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert name in ("encoder.pos_embed", "decoder_pos_embed"), name
            assert p.grad is None
        elif name not in unused:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.decoder_pos_embed.requires_grad is False
    assert model.encoder.pos_embed.requires_grad is (pos_embed == "learned")
    for name in ["mask_token", "decoder_pred.weight", "encoder.patch_embed.proj.weight"]:
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    if class_token:
        assert model.encoder.cls_token.grad.abs().sum() > 0


def test_decoder_pos_embed_is_the_sincos_table() -> None:
    from vfm_course.layers import sincos_pos_embed_2d

    for class_token in (True, False):
        model = make(small_cfg(class_token=class_token))
        table = sincos_pos_embed_2d(16, 4, cls_token=class_token)
        assert torch.equal(model.decoder_pos_embed[0], table)


def test_decoder_linears_get_maes_xavier_init() -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoder("mae_course_tiny")
    decoder = [model.decoder_embed, model.decoder_blocks, model.decoder_pred]
    linears = [m for part in decoder for m in part.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 + 4 * model.cfg.decoder_depth
    for m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert m.weight.abs().max() <= bound and (m.bias == 0).all()
        assert abs(m.weight.std().item() / (bound / 3**0.5) - 1) < 0.15


def test_config_round_trips_through_dict_and_json() -> None:
    for cfg in [MAE_PRESETS["mae_course_tiny"], small_cfg(False, "sincos", False, 2, 8, 0.5)]:
        d = dataclasses.asdict(cfg)
        assert MAEConfig.from_dict(d) == cfg
        assert MAEConfig.from_dict(json.loads(json.dumps(d))) == cfg
        assert MAEConfig.from_dict({"__type__": "MAEConfig", **d}) == cfg
    with pytest.raises(ValueError, match=r"unknown field\(s\) \[.decoder_width.\]"):
        MAEConfig.from_dict({**d, "decoder_width": 3})
    nested = r"encoder config does not fit ViTConfig: unknown field\(s\) \[.heads.\]"
    with pytest.raises(ValueError, match=nested):
        MAEConfig.from_dict({**d, "encoder": {**d["encoder"], "heads": 3}})


def test_preset_builds_and_tiny_encoder_matches_the_course_vit() -> None:
    cfg = MAE_PRESETS["mae_course_tiny"]
    assert cfg.encoder == vit_config("vit_course_tiny", num_classes=0, pos_embed="sincos")
    assert (cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads) == (64, 2, 4)
    model = MaskedAutoencoder("mae_course_tiny")
    # The encoder's state dict loads into a plain ViT backbone (for fine-tuning later).
    from vfm_course.models import VisionTransformer

    VisionTransformer(cfg.encoder).load_state_dict(model.encoder.state_dict(), strict=True)


def test_reconstruct_shapes_and_pasting() -> None:
    for norm_pix in (True, False):
        cfg = small_cfg(norm_pix_loss=norm_pix)
        model = make(cfg).train()
        imgs = images(cfg)
        out = model.reconstruct(imgs, generator=torch.Generator().manual_seed(2))
        assert model.training  # mode restored
        assert set(out) == {"masked", "reconstruction", "pasted"}
        for v in out.values():
            assert v.shape == imgs.shape and not v.requires_grad
        # Same generator seed -> same mask as forward_encoder draws.
        _, mask, _ = model.forward_encoder(imgs, generator=torch.Generator().manual_seed(2))
        hidden = mask.reshape(3, 1, 4, 1, 4, 1).expand(3, 3, 4, 4, 4, 4).reshape(imgs.shape) == 1
        assert torch.equal(out["pasted"][~hidden], imgs[~hidden])
        assert torch.equal(out["pasted"][hidden], out["reconstruction"][hidden])
        assert torch.equal(out["masked"][~hidden], imgs[~hidden])
        assert (out["masked"][hidden] == 0.5).all()
        rec = out["reconstruction"]
        assert rec.min() >= 0 and rec.max() <= 1


def test_reconstruction_unnormalises_with_true_patch_statistics() -> None:
    cfg = small_cfg(norm_pix_loss=True)
    model = make(cfg)
    imgs = images(cfg) * 0.5 + 0.25
    out = model.reconstruct(imgs, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    latent, _, ids_restore = model.forward_encoder(imgs, 0.5, generator=g)
    pred = model.forward_decoder(latent, ids_restore).detach().double().numpy()
    patches = manual_targets(imgs, 4, norm_pix=False)
    std = np.sqrt(patches.var(axis=-1, ddof=1, keepdims=True) + 1e-6)
    expected = np.clip(pred * std + patches.mean(-1, keepdims=True), 0, 1)
    from vfm_course.layers import patchify

    np.testing.assert_allclose(patchify(out["reconstruction"], 4).numpy(), expected, atol=1e-5)


def test_loss_fn_for_fit_accepts_images_or_pairs_and_trains() -> None:
    cfg = small_cfg()
    model = make(cfg)
    imgs = images(cfg, batch=4)
    loss_fn = mae_loss_fn()
    torch.manual_seed(7)
    a, logs = loss_fn(model, imgs)
    assert logs == {}
    torch.manual_seed(7)
    b, _ = loss_fn(model, (imgs, torch.zeros(4, dtype=torch.long)))
    assert a.ndim == 0 and a.item() == b.item()
    torch.manual_seed(7)
    c, _ = mae_loss_fn(mask_ratio=0.5)(model, [imgs, None])
    assert c.item() != a.item()
    loader = [(imgs, torch.zeros(4)), (imgs.flip(-1), torch.zeros(4))]
    cfg_train = TrainConfig(steps=3, lr=1e-3, device="cpu", progress=False, log_every=1)
    history = fit(model, loss_fn, loader, cfg_train)
    assert len(history.loss) == 3 and all(np.isfinite(history.loss))


def test_bad_configs_and_inputs_are_explained() -> None:
    enc = small_cfg().encoder
    backbone = "the MAE encoder is a backbone; build it with num_classes=0"
    with pytest.raises(ValueError, match=backbone):
        MAEConfig(dataclasses.replace(enc, num_classes=10))
    with pytest.raises(TypeError, match="encoder must be a ViTConfig"):
        MAEConfig("vit_course_tiny")
    with pytest.raises(ValueError, match="not divisible by decoder_num_heads"):
        MAEConfig(enc, decoder_embed_dim=30, decoder_num_heads=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        MAEConfig(enc, decoder_embed_dim=6, decoder_num_heads=3)
    with pytest.raises(ValueError, match="decoder_depth must be a positive integer"):
        MAEConfig(enc, decoder_depth=0)
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        MAEConfig(enc, mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_ratio must be > 0"):
        MAEConfig(enc, mask_ratio=0.0)
    with pytest.raises(TypeError, match="norm_pix_loss must be True or False"):
        MAEConfig(enc, norm_pix_loss="yes")
    with pytest.raises(ValueError, match="unknown MAE preset"):
        MaskedAutoencoder("mae_huge")
    with pytest.raises(ValueError, match="mask_ratio must be > 0"):
        mae_loss_fn(0.0)
    model = make(small_cfg())
    with pytest.raises(ValueError, match="built for 16x16"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="forward_encoder"):
        model(torch.rand(2, 3, 16, 16), mask_ratio=0.0)
    with pytest.raises(ValueError, match="latent must be"):
        model.forward_decoder(torch.rand(2, 5, 31), torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pred must have shape \(2, 16, 48\)"):
        model.forward_loss(torch.rand(2, 3, 16, 16), torch.rand(2, 16, 47), torch.ones(2, 16))
