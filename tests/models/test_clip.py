"""Mini-CLIP: the symmetric loss against a loop-by-loop version, the tokenizer on every caption,
the causal text tower, the two towers, zero-shot classification and the captioned data."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from vfm_course.data import (
    COLOUR_NAMES,
    SHAPE_CLASSES,
    BatchLoader,
    ShapesConfig,
    Tokenizer,
    build_vocab,
    generate_shapes,
    load_caption_data,
    load_shapes,
)
from vfm_course.data.tokenizer import EOT_ID, PAD_ID, SOT_ID
from vfm_course.eval import zero_shot_predict, zero_shot_weights
from vfm_course.models import (
    CLIP,
    CLIP_PRESETS,
    CLIPConfig,
    TextConfig,
    TextTransformer,
    ViTConfig,
    vit_config,
)
from vfm_course.objectives import clip_loss, clip_loss_fn
from vfm_course.train import TrainConfig, fit

VOCAB = build_vocab()
SMALL = CLIPConfig(
    image=ViTConfig(
        img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=32, depth=1, num_heads=2
    ),
    text=TextConfig(vocab_size=len(VOCAB), width=32, depth=2, num_heads=2),
    embed_dim=16,
)
CAPTIONS = [
    "a small red circle in the center",
    "a photo of a large blue star at the top left",
    "on the right is a small green heart",
    "there is a large purple cross at the bottom",
]


def _small_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(SMALL)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# --- clip_loss ---------------------------------------------------------------------------------


def _loop_clip_loss(logits: torch.Tensor) -> float:
    """The same loss written out: -log softmax of the matching entry, row by row (image->text)
    and column by column (text->image), in float64 Python arithmetic."""
    L = logits.double().tolist()
    B = len(L)
    i2t = t2i = 0.0
    for i in range(B):
        row = [L[i][j] for j in range(B)]
        col = [L[j][i] for j in range(B)]
        i2t += math.log(sum(math.exp(v) for v in row)) - L[i][i]
        t2i += math.log(sum(math.exp(v) for v in col)) - L[i][i]
    return 0.5 * (i2t / B + t2i / B)


@pytest.mark.parametrize("B", [2, 5, 9])
def test_clip_loss_matches_loops(B: int) -> None:
    logits = 3 * torch.randn(B, B, generator=torch.Generator().manual_seed(B))
    loss = clip_loss(logits)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_loop_clip_loss(logits), abs=1e-5)
    # Symmetric: swapping images and texts gives the same loss (but each direction differs).
    torch.testing.assert_close(clip_loss(logits.T), loss)
    i2t = F.cross_entropy(logits, torch.arange(B))
    assert not torch.allclose(i2t, loss)


def test_clip_loss_extremes() -> None:
    assert clip_loss(50 * torch.eye(6)).item() < 1e-6  # a perfect, confident match
    assert clip_loss(torch.zeros(6, 6)).item() == pytest.approx(math.log(6), abs=1e-6)


def test_clip_loss_errors() -> None:
    with pytest.raises(ValueError, match="must be square"):
        clip_loss(torch.randn(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        clip_loss(torch.randn(1, 1))
    with pytest.raises(ValueError, match="2 dimensions"):
        clip_loss(torch.randn(2, 3, 3))
    with pytest.raises(TypeError, match="floating-point"):
        clip_loss(torch.ones(3, 3, dtype=torch.long))


# --- tokenizer ---------------------------------------------------------------------------------


def test_vocab_is_deterministic_and_covers_the_world() -> None:
    assert build_vocab() == VOCAB
    assert VOCAB[:3] == ("<pad>", "<sot>", "<eot>")
    assert (PAD_ID, SOT_ID, EOT_ID) == (0, 1, 2)
    assert len(set(VOCAB)) == len(VOCAB)
    for word in (*SHAPE_CLASSES, *COLOUR_NAMES, "small", "large", "photo", "picture", "an"):
        assert word in VOCAB


def test_every_caption_round_trips() -> None:
    tok = Tokenizer()
    captions = generate_shapes(200).captions
    ids = tok.encode(captions)
    assert ids.shape == (200, 16) and ids.dtype == torch.long
    assert tok.decode(ids) == captions
    assert ids[:, 0].eq(SOT_ID).all()
    assert (ids == EOT_ID).sum(dim=1).eq(1).all()


def test_token_placement() -> None:
    tok = Tokenizer(context_length=8)
    ids = tok.encode("A Red  circle")  # case and extra spaces do not matter
    w = tok.word_to_id
    assert ids.tolist() == [[SOT_ID, w["a"], w["red"], w["circle"], EOT_ID, PAD_ID, 0, 0]]
    assert tok.decode(ids[0]) == "a red circle"
    assert tok.encode(["star", "a star"]).shape == (2, 8)


def test_tokenizer_errors() -> None:
    tok = Tokenizer()
    with pytest.raises(ValueError, match="the word 'dog' is not in the mini-CLIP vocabulary"):
        tok.encode("a photo of a dog")
    with pytest.raises(ValueError, match="has 15 words, but at most 14 fit"):
        tok.encode(" ".join(["red"] * 15))
    with pytest.raises(ValueError, match="non-empty"):
        tok.encode([])
    with pytest.raises(ValueError, match="special tokens"):
        Tokenizer(vocab=("a", "b"))


# --- text tower --------------------------------------------------------------------------------


def _text_tower(seed: int = 0) -> tuple[TextTransformer, torch.Tensor]:
    torch.manual_seed(seed)
    return TextTransformer(SMALL.text), Tokenizer().encode(CAPTIONS)


def test_text_tower_is_causal() -> None:
    model, tokens = _text_tower()
    with torch.no_grad():
        out = model(tokens)
        assert out.shape == (4, 32)
        # Other words in the padding after <eot> do not change the feature read at <eot> ...
        noisy = tokens.clone()
        pad = noisy == PAD_ID
        noisy[pad] = torch.randint(3, len(VOCAB), (int(pad.sum()),))
        torch.testing.assert_close(model(noisy), out, atol=1e-6, rtol=0)
        # ... and each row equals the same row fed alone, cut right after its <eot>.
        for i, row in enumerate(tokens):
            end = int((row == EOT_ID).nonzero()[0]) + 1
            torch.testing.assert_close(model(row[None, :end])[0], out[i], atol=1e-5, rtol=0)


def test_text_tower_depends_on_words_and_trains() -> None:
    model, tokens = _text_tower()
    out = model(tokens)
    assert (out[0] - out[1]).abs().max() > 1e-3
    other = Tokenizer().encode(["a small red square in the center"])  # one word changed
    assert (model(other)[0] - out[0]).abs().max() > 1e-3
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_text_tower_errors() -> None:
    model, tokens = _text_tower()
    with pytest.raises(ValueError, match="<eot>"):
        model(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer ids"):
        model(tokens.float())
    with pytest.raises(ValueError, match="0.."):
        model(tokens + 100)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        TextConfig(vocab_size=50, width=30, num_heads=4)


# --- the two towers ----------------------------------------------------------------------------


def test_embeddings_unit_norm_and_logits_are_scaled_cosines() -> None:
    model = _small_clip()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.05))
        x, tokens = _images(4), Tokenizer().encode(CAPTIONS[:3])
        img, txt = model.encode_image(x), model.encode_text(tokens)
        assert img.shape == (4, 16) and txt.shape == (3, 16)
        torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
        torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
        # Independent route: unnormalised projections and torch's cosine similarity.
        a = model.image_projection(model.encoder.forward_head(model.encoder.forward_features(x)))
        b = model.text_projection(model.text(tokens))
        cos = F.cosine_similarity(a[:, None], b[None], dim=-1)  # (4, 3)
        torch.testing.assert_close(model(x, tokens), 20 * cos, atol=1e-5, rtol=1e-5)


def test_loss_reaches_both_towers_and_the_temperature() -> None:
    model = _small_clip()
    clip_loss(model(_images(4), Tokenizer().encode(CAPTIONS))).backward()
    image = ("encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight")
    for name in ("logit_scale", *image,
                 "text.token_embedding.weight", "text.blocks.1.mlp.fc2.weight",
                 "image_projection.weight", "text_projection.weight"):  # fmt: skip
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_logit_scale_is_clamped_at_100() -> None:
    model = _small_clip()
    x, tokens = _images(3), Tokenizer().encode(CAPTIONS[:3])
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
        cos = model.encode_image(x) @ model.encode_text(tokens).T
    logits = model(x, tokens)
    torch.testing.assert_close(logits, 100 * cos, atol=1e-5, rtol=1e-5)
    clip_loss(logits).backward()
    assert model.logit_scale.grad.item() == 0.0  # above the clip: no push further up


def test_config_round_trips_through_json() -> None:
    for cfg in (SMALL, CLIP_PRESETS["clip_course_tiny"]):
        stored = json.loads(json.dumps({"__type__": "CLIPConfig", **dataclasses.asdict(cfg)}))
        assert CLIPConfig.from_dict(stored) == cfg
        assert CLIPConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ValueError, match="describes a ViTConfig"):
        CLIPConfig.from_dict({"__type__": "ViTConfig"})
    with pytest.raises(ValueError, match="unknown field\\(s\\) \\['colour'\\]"):
        CLIPConfig.from_dict({**dataclasses.asdict(SMALL), "colour": 1})


def test_config_errors_and_preset() -> None:
    with pytest.raises(ValueError, match="num_classes=0"):
        CLIPConfig(image=vit_config("vit_course_tiny"), text=SMALL.text)
    with pytest.raises(ValueError, match="init_temperature"):
        dataclasses.replace(SMALL, init_temperature=0.001)
    with pytest.raises(ValueError, match="unknown CLIP preset"):
        CLIP("clip_huge")
    torch.manual_seed(0)
    model = CLIP("clip_course_tiny")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32), Tokenizer().encode(CAPTIONS[:2])).shape == (2, 2)


def test_loss_fn_logs_and_trains_with_fit() -> None:
    data = load_caption_data("train", 16, ShapesConfig(image_size=16))
    model = _small_clip()
    loss_fn = clip_loss_fn()
    images, tokens = data.images[:8], data.tokens[:8]
    loss, logs = loss_fn(model, (images, tokens))
    logits = model(images, tokens)
    torch.testing.assert_close(loss, clip_loss(logits))
    assert logs["acc_i2t"] == (logits.argmax(1) == torch.arange(8)).float().mean().item()
    assert logs["temperature"] == pytest.approx(0.07, rel=1e-5)

    loader = BatchLoader(data.images, data.tokens, batch_size=8, seed=0)  # 2-D "labels"
    config = TrainConfig(steps=2, log_every=1, progress=False, device="cpu")
    history = fit(model, loss_fn, loader, config)
    assert len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)
    assert len(history.logs["acc_i2t"]) == 2 and len(history.logs["temperature"]) == 2


# --- zero-shot ---------------------------------------------------------------------------------


def test_zero_shot_weights_and_predictions() -> None:
    model, tok = _small_clip(), Tokenizer()
    model.train()
    w = zero_shot_weights(model, tok, SHAPE_CLASSES)
    assert model.training  # mode restored
    with torch.no_grad():
        prompts = tok.encode([f"a photo of a {c}" for c in SHAPE_CLASSES])
        torch.testing.assert_close(w, model.encode_text(prompts))
        templates = ("a photo of a {}", "a {} shape", "an image of a small {}")
        ensembled = torch.stack(
            [model.encode_text(tok.encode([t.format(c) for t in templates])).mean(0)
             for c in SHAPE_CLASSES]
        )  # fmt: skip
        w3 = zero_shot_weights(model, tok, SHAPE_CLASSES, templates)
        torch.testing.assert_close(w3, F.normalize(ensembled, dim=-1))
        x = _images(7)
        expected = (model.encode_image(x) @ w3.T).argmax(1)
    model.eval()
    pred = zero_shot_predict(model, x, w3, batch_size=3)
    assert not model.training
    assert pred.dtype == torch.long and torch.equal(pred, expected)


def test_zero_shot_with_perfect_encoders_is_perfect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand-built encoders: the image says its class in pixel (0, 0), the text in its class
    word. A correct pipeline must then classify every image right."""
    model, tok = _small_clip(), Tokenizer()
    K = len(SHAPE_CLASSES)
    word_class = torch.full((len(VOCAB),), -1)
    word_class[[tok.word_to_id[c] for c in SHAPE_CLASSES]] = torch.arange(K)
    fake_text = lambda tokens: F.one_hot(word_class[tokens].max(1).values, K).float()
    fake_image = lambda x: F.one_hot(x[:, 0, 0, 0].round().long(), K).float()
    monkeypatch.setattr(model, "encode_text", fake_text)
    monkeypatch.setattr(model, "encode_image", fake_image)
    labels = torch.arange(20) % K
    x = torch.zeros(20, 3, 16, 16)
    x[:, 0, 0, 0] = labels.float()
    w = zero_shot_weights(model, tok, SHAPE_CLASSES, ("a photo of a {}", "a {}"))
    assert torch.equal(zero_shot_predict(model, x, w, batch_size=8), labels)
    w_rev = zero_shot_weights(model, tok, SHAPE_CLASSES[::-1])
    assert torch.equal(zero_shot_predict(model, x, w_rev), K - 1 - labels)


def test_zero_shot_errors() -> None:
    model, tok = _small_clip(), Tokenizer()
    with pytest.raises(ValueError, match="non-empty list of class names"):
        zero_shot_weights(model, tok, [])
    with pytest.raises(ValueError, match='has no "{}"'):
        zero_shot_weights(model, tok, SHAPE_CLASSES, ("a photo of a circle",))
    with pytest.raises(ValueError, match="'dog' is not in the mini-CLIP vocabulary"):
        zero_shot_weights(model, tok, ["dog"])
    with pytest.raises(ValueError, match="weights have width 5"):
        zero_shot_predict(model, _images(2), torch.randn(6, 5))


# --- data --------------------------------------------------------------------------------------


def test_caption_data_matches_load_shapes() -> None:
    config = ShapesConfig(image_size=16)
    data = load_caption_data("test", 40, config)
    images, labels = load_shapes("test", 40, config, cache_dir=None)
    assert len(data) == 40 and data.images.dtype == torch.float32
    assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
    assert data.tokens.shape == (40, 16)
    assert Tokenizer().decode(data.tokens) == data.captions
    for caption, label, colour in zip(data.captions, data.labels, data.colours, strict=True):
        words = caption.split()
        assert SHAPE_CLASSES[label] in words and COLOUR_NAMES[colour] in words
    assert not torch.equal(load_caption_data("train", 40, config).images, images)
