"""Fine-tuning tools: freezing, LoRA (vs peft), layer-wise lr decay (vs timm), distillation,
adversarial examples; each with its bad-input errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vfm_course.core import eval_mode
from vfm_course.data import PRETRAIN_WORLD, BatchLoader, load_shapes
from vfm_course.layers import LoRALinear, apply_lora, lora_layers, merge_lora, unmerge_lora
from vfm_course.models import (
    SmallCNN,
    VisionTransformer,
    classifier_from_encoder,
    count_trainable,
    to_timm,
    train_all,
    train_head_only,
    train_last_blocks,
    vit_config,
)
from vfm_course.objectives import (
    adversarial_loss_fn,
    distillation_loss,
    distillation_loss_fn,
    fgsm,
    pgd,
    robust_accuracy,
)
from vfm_course.train import TrainConfig, fit, layer_decay_optimizer, layer_decay_param_groups

K = 6


def small_vit(seed: int = 0, **overrides: object) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(vit_config("vit_course_tiny", **{"depth": 3, **overrides}))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


def randomise_lora_B(model: nn.Module, seed: int = 1) -> None:
    """Non-zero B, so the adapters actually change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- classifier and freezing ------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_classifier_keeps_encoder_weights_and_pooling(pool: str) -> None:
    encoder = small_vit(num_classes=0, global_pool=pool).eval()
    before = copy.deepcopy(encoder.state_dict())
    model = classifier_from_encoder(encoder, K)
    x = images()
    assert model(x).shape == (4, K)
    assert model.cfg.global_pool == pool
    torch.testing.assert_close(
        model.forward_head(model.forward_features(x), pre_logits=True), encoder(x)
    )
    for k, v in encoder.state_dict().items():  # the encoder is copied, not changed
        assert torch.equal(v, before[k])
    assert not model.training


def test_classifier_replaces_an_existing_head() -> None:
    encoder = small_vit(num_classes=10)
    model = classifier_from_encoder(encoder, 3)
    assert model.head.weight.shape == (3, encoder.embed_dim)
    assert torch.equal(model.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)


def test_classifier_bad_input() -> None:
    with pytest.raises(TypeError, match="course VisionTransformer"):
        classifier_from_encoder(nn.Linear(3, 3), K)
    with pytest.raises(ValueError, match="num_classes"):
        classifier_from_encoder(small_vit(), 0)


def test_freezing_helpers_choose_the_right_parameters() -> None:
    model = small_vit()
    D = model.embed_dim
    train_head_only(model)
    assert trainable_names(model) == {"head.weight", "head.bias"}
    assert count_trainable(model) == D * K + K
    train_last_blocks(model, 2)
    names = trainable_names(model)
    assert {n.split(".")[1] for n in names if n.startswith("blocks.")} == {"1", "2"}
    assert {"norm.weight", "norm.bias", "head.weight", "head.bias"} <= names
    assert not any(n.startswith(("patch_embed", "cls_token", "pos_embed")) for n in names)
    per_block = sum(p.numel() for p in model.blocks[0].parameters())
    assert count_trainable(model) == 2 * per_block + 2 * D + D * K + K
    train_last_blocks(model, 0)
    assert trainable_names(model) == {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    train_all(model)
    assert count_trainable(model) == model.num_params()
    # Only what trains gets gradients.
    train_last_blocks(model, 1)
    F.cross_entropy(model(images()), labels()).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == trainable_names(model)


def test_full_fine_tuning_keeps_a_sincos_table_fixed() -> None:
    model = train_all(small_vit(pos_embed="sincos"))
    assert not model.pos_embed.requires_grad
    assert count_trainable(model) == model.num_params() - model.pos_embed.numel()


@pytest.mark.parametrize("k", [-1, 4, 2.0, True])
def test_partial_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="from 0 to the model's depth 3"):
        train_last_blocks(small_vit(), k)


def test_freezing_helpers_bad_input() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        train_head_only(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        count_trainable("model")


# --- LoRA -----------------------------------------------------------------------------------


def test_lora_linear_starts_at_the_base_layer() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    lora = LoRALinear(copy.deepcopy(base), r=2, alpha=4.0)
    x = torch.randn(3, 7, 8)
    assert torch.equal(lora(x), base(x))
    assert lora.scaling == 2.0 and lora.lora_A.shape == (2, 8) and lora.lora_B.shape == (5, 2)
    assert lora.lora_A.abs().sum() > 0 and lora.lora_B.abs().sum() == 0
    assert not any(p.requires_grad for p in lora.base_layer.parameters())


def test_lora_linear_is_base_plus_low_rank_update() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    lora = LoRALinear(copy.deepcopy(base), r=3, alpha=6.0)
    nn.init.normal_(lora.lora_B)
    x = torch.randn(4, 8)
    want = base(x) + (6.0 / 3) * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), want)
    assert torch.linalg.matrix_rank(lora.delta_weight().detach()) == 3


def test_lora_at_init_equals_the_base_model() -> None:
    model = small_vit().eval()
    base = copy.deepcopy(model)
    apply_lora(model, ("qkv", "proj", "fc1", "fc2"), r=4, alpha=8.0)
    x = images()
    assert torch.equal(model(x), base(x))


def test_lora_merged_and_unmerged_agree() -> None:
    model = apply_lora(small_vit().eval(), ("qkv", "proj", "fc1"), r=4, alpha=8.0, dropout=0.1)
    randomise_lora_B(model)
    qkv = model.blocks[0].attn.qkv.base_layer.weight.clone()
    x = images()
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        assert all(layer.merged for layer in lora_layers(model).values())
        merged = model(x)
        unmerge_lora(model)
        again = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.blocks[0].attn.qkv.base_layer.weight, qkv)
    assert not torch.equal(unmerged, small_vit().eval()(x))  # the adapters did change the output


def test_lora_merge_twice_and_unmerge_unmerged_are_refused() -> None:
    model = apply_lora(small_vit(), r=2)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    with pytest.raises(RuntimeError, match="not merged"):
        model.blocks[0].attn.qkv.unmerge()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(small_vit())


@pytest.mark.parametrize("targets", [("qkv",), ("qkv", "proj"), ("qkv", "proj", "fc1", "fc2")])
def test_lora_parameter_count_and_gradients(targets: tuple[str, ...]) -> None:
    r = 4
    model = apply_lora(small_vit(), targets, r=r)
    D, F_ = model.embed_dim, int(model.embed_dim * 4.0)
    shapes = {"qkv": (D, 3 * D), "proj": (D, D), "fc1": (D, F_), "fc2": (F_, D)}
    per_block = sum(r * (i + o) for t, (i, o) in shapes.items() if t in targets)
    head = D * K + K
    assert count_trainable(model) == len(model.blocks) * per_block + head
    assert len(lora_layers(model)) == len(model.blocks) * len(targets)
    randomise_lora_B(model)  # with B = 0, A would get no gradient at the first step
    F.cross_entropy(model(images()), labels()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)
    assert all(n.endswith((".lora_A", ".lora_B")) or n.startswith("head.") for n in with_grad)


@pytest.mark.parametrize(
    ("targets", "pattern"),
    [
        (("qkv", "proj"), r".*\.attn\.(qkv|proj)"),
        (("qkv", "proj", "fc1", "fc2"), r"blocks\..*\.(qkv|proj|fc1|fc2)"),
    ],
)
def test_lora_matches_peft(targets: tuple[str, ...], pattern: str) -> None:
    """Same base weights, same A and B (B non-zero) -> the same logits as peft's LoRA.

    The pattern keeps peft off ``patch_embed.proj``, a convolution that the course never adapts.
    """
    peft = pytest.importorskip("peft")
    base = small_vit().eval()
    ours = apply_lora(copy.deepcopy(base), targets, r=4, alpha=8.0)
    randomise_lora_B(ours)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=pattern, lora_dropout=0.0)
    theirs = peft.get_peft_model(copy.deepcopy(base), config).eval()
    inner = theirs.base_model.model
    for name, layer in lora_layers(ours).items():
        ref = inner.get_submodule(name)
        assert ref.scaling["default"] == layer.scaling
        with torch.no_grad():
            ref.lora_A["default"].weight.copy_(layer.lora_A)
            ref.lora_B["default"].weight.copy_(layer.lora_B)
    adapted = {
        n.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        for n, _ in theirs.named_parameters()
        if ".lora_A." in n
    }
    assert adapted == set(lora_layers(ours))
    x = images(8)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert (got - want).abs().max() <= 1e-5
    with torch.no_grad():
        merge_lora(ours)
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)


def test_lora_bad_input() -> None:
    with pytest.raises(ValueError, match="rank r must be a positive integer"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match="rank r"):
        apply_lora(small_vit(), r=-2)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(4, 4), dropout=1.0)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv2d(3, 3, 1))
    with pytest.raises(
        ValueError, match=r"no linear layer named \['qvk'\].*fc1, fc2, head, proj, qkv"
    ):
        apply_lora(small_vit(), ("qvk",))
    with pytest.raises(ValueError, match="non-empty list"):
        apply_lora(small_vit(), "qkv")
    with pytest.raises(ValueError, match="match no parameter"):
        apply_lora(small_vit(), trainable=("heads",))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(apply_lora(small_vit()))


# --- layer-wise learning-rate decay ---------------------------------------------------------------


def lr_scales(groups: list[dict], model: nn.Module) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("pool", ["avg", "token"])
@pytest.mark.parametrize("decay", [0.75, 0.5, 1.0])
def test_layer_decay_matches_timm(pool: str, decay: float) -> None:
    from timm.optim import create_optimizer_v2

    model = small_vit(global_pool=pool)
    timm_model = to_timm(model)
    theirs = create_optimizer_v2(timm_model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=decay)
    want = lr_scales(theirs.param_groups, timm_model)
    groups = layer_decay_param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=decay)
    got = lr_scales(groups, model)
    assert got.keys() == want.keys()
    # timm groups the final `norm` (class-token pooling) with the last block; BEiT and MAE, which
    # this course follows, give it the head's full lr. With mean pooling there is no such norm.
    differ = {"norm.weight", "norm.bias"} if pool == "token" else set()
    for name in got.keys() - differ:
        assert got[name][0] == pytest.approx(want[name][0], rel=1e-12), name
        assert got[name][1] == want[name][1], name
    for name in differ:
        assert got[name] == (1.0, 0.0) and want[name] == (decay, 0.0)
    depth = len(model.blocks)
    assert got["blocks.0.attn.qkv.weight"][0] == pytest.approx(decay**depth)
    assert got["cls_token"][0] == pytest.approx(decay ** (depth + 1))
    assert all(g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) for g in groups)


def test_layer_decay_skips_frozen_parameters() -> None:
    model = apply_lora(small_vit(), r=2)
    groups = layer_decay_param_groups(model, lr=1e-3, layer_decay=0.5)
    scales = lr_scales(groups, model)
    assert scales.keys() == trainable_names(model)
    assert scales["blocks.2.attn.qkv.lora_A"] == (0.5, 0.05)
    assert scales["head.weight"] == (1.0, 0.05)


def test_layer_decay_plugs_into_fit() -> None:
    model = small_vit(depth=2)
    x, y = images(32), labels(32)
    optimizer = layer_decay_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    before = model.blocks[0].attn.qkv.weight.clone()

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    cfg = TrainConfig(steps=3, lr=123.0, warmup_steps=1, progress=False, device="cpu")
    history = fit(model, loss_fn, BatchLoader(x, y, 16), cfg, optimizer=optimizer)
    assert len(history.loss) == 1 and math.isfinite(history.loss[0])
    assert not torch.equal(model.blocks[0].attn.qkv.weight, before)
    for g in optimizer.param_groups:  # fit scaled each group's own lr, not cfg.lr
        assert g["initial_lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert g["lr"] / g["initial_lr"] == pytest.approx(
            optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"]
        )


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, True, "0.7"])
def test_layer_decay_bad_decay(decay: object) -> None:
    with pytest.raises(ValueError, match=r"layer_decay must be (in|a number in) \(0, 1\]"):
        layer_decay_param_groups(small_vit(), lr=1e-3, layer_decay=decay)


def test_layer_decay_bad_input() -> None:
    with pytest.raises(TypeError, match="needs a ViT"):
        layer_decay_param_groups(nn.Linear(2, 2), lr=1e-3)
    with pytest.raises(ValueError, match="learning rate"):
        layer_decay_param_groups(small_vit(), lr=0.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        layer_decay_param_groups(small_vit().requires_grad_(False), lr=1e-3)


# --- knowledge distillation ---------------------------------------------------------------------


def reference_kd(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float):
    """Hinton et al. 2015 written out row by row, in float64."""
    s, t = s.double(), t.double()
    total_kl, total_ce = 0.0, 0.0
    for i in range(len(s)):
        p = torch.exp(t[i] / T) / torch.exp(t[i] / T).sum()
        q = torch.exp(s[i] / T) / torch.exp(s[i] / T).sum()
        total_kl += sum(p[k] * math.log(p[k] / q[k]) for k in range(len(p)))
        total_ce += -math.log(torch.exp(s[i, y[i]]) / torch.exp(s[i]).sum())
    n = len(s)
    return alpha * T**2 * total_kl / n + (1 - alpha) * total_ce / n


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_distillation_loss_matches_references(T: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(int(T * 10 + alpha * 100))
    s, t = torch.randn(16, 7, generator=g) * 3, torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    got = distillation_loss(s, t, y, T, alpha)
    assert got.ndim == 0
    assert got.item() == pytest.approx(float(reference_kd(s, t, y, T, alpha)), rel=1e-5, abs=1e-6)
    # torch's kl_div(input=log q, target=p) computes KL(p || q).
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    want = alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(got, want)


def test_distillation_gradient_skips_the_teacher() -> None:
    s = torch.randn(4, K, requires_grad=True)
    t = torch.randn(4, K, requires_grad=True)
    distillation_loss(s, t, labels(), 3.0, 0.7).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    # Equal logits and alpha = 1: the student already matches, the gradient is zero.
    s2 = t.detach().clone().requires_grad_(True)
    distillation_loss(s2, t, labels(), 3.0, 1.0).backward()
    assert s2.grad.abs().max() < 1e-6


def test_distillation_bad_input() -> None:
    s, t, y = torch.randn(4, K), torch.randn(4, K), labels()
    for T in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            distillation_loss(s, t, y, temperature=T)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
            distillation_loss(s, t, y, alpha=a)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, torch.randn(4, K + 1), y)
    with pytest.raises(ValueError, match="4 images/logits but 3 labels"):
        distillation_loss(s, t, y[:3])
    with pytest.raises(TypeError, match="integer class ids"):
        distillation_loss(s, t, y.float())
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss_fn(small_vit(), temperature=0)


def test_distillation_loss_fn_trains_student_only() -> None:
    teacher, student = small_vit(seed=1, depth=1), small_vit(seed=2, depth=1)
    teacher.train()
    frozen = copy.deepcopy(teacher.state_dict())
    x, y = images(16), labels(16)
    loss_fn = distillation_loss_fn(teacher, temperature=2.0, alpha=0.5)
    cfg = TrainConfig(steps=2, progress=False, device="cpu")
    fit(student, loss_fn, BatchLoader(x, y, 8), cfg)
    assert not teacher.training
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())


# --- adversarial examples ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for about two seconds on the pretraining shapes world (test
    accuracy 1.0 when measured; it has BatchNorm, so eval mode matters)."""
    x, y = load_shapes("train", 1500, PRETRAIN_WORLD, cache_dir=None)
    x_test, y_test = load_shapes("test", 300, PRETRAIN_WORLD, cache_dir=None)
    torch.manual_seed(0)
    model = SmallCNN(width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x_test, y_test


def test_shapes_images_are_in_the_attack_bounds() -> None:
    x, _ = load_shapes("test", 50, cache_dir=None)  # the hard default world
    assert x.min() >= 0 and x.max() <= 1


def test_fgsm_is_the_signed_gradient_step(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:64], y[:64]
    eps = 0.03
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    want = (x + eps * xr.grad.sign()).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    adv = fgsm(model, x, y, eps)
    torch.testing.assert_close(adv, want, atol=0, rtol=0)
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= eps + 1e-6


def test_pgd_stays_in_the_ball_and_the_valid_range(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:64], y[:64]
    for eps, steps in [(0.02, 5), (0.1, 10), (0.5, 3)]:
        adv = pgd(model, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > 0
    unbounded = pgd(model, x, y, 0.5, steps=3, bounds=None)
    assert unbounded.min() < 0 or unbounded.max() > 1  # only the ball, no clamp


def test_zero_epsilon_returns_the_input(shapes_model) -> None:
    model, x, y = shapes_model
    assert torch.equal(fgsm(model, x[:8], y[:8], 0.0), x[:8])
    assert torch.equal(pgd(model, x[:8], y[:8], 0.0), x[:8])
    assert torch.equal(pgd(model, x[:8], y[:8], 0, random_start=False), x[:8])


def test_pgd_is_at_least_as_strong_as_fgsm(shapes_model) -> None:
    model, x, y = shapes_model
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255]
    clean = robust_accuracy(model, x, y, [0.0], attack="fgsm")[0.0]
    fg = robust_accuracy(model, x, y, eps, attack="fgsm")
    pg = robust_accuracy(model, x, y, eps, attack="pgd", steps=10)
    assert clean > 0.9  # the model did learn
    assert fg[0.0] == pg[0.0] == clean
    for e in eps[1:]:
        assert pg[e] <= fg[e] + 1e-9, (e, pg, fg)
    assert fg[eps[-1]] < clean and pg[eps[-1]] < 0.5 * clean
    again = robust_accuracy(model, x, y, eps[-1:], attack="pgd")
    assert again == {eps[-1]: pg[eps[-1]]}  # seeded random starts: it repeats exactly


class DropBN(nn.Module):
    """Dropout and BatchNorm: both behave differently in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 32 * 32, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(x).flatten(1)))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_runs_in_eval_mode_restores_mode_and_leaves_parameters(attack: str) -> None:
    torch.manual_seed(0)
    model = DropBN().train()
    x, y = images(8), labels(8)
    stats = copy.deepcopy(model.bn.state_dict())

    def run() -> torch.Tensor:
        if attack == "fgsm":
            return fgsm(model, x, y, 0.05)
        return pgd(model, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(0))

    a, b = run(), run()
    assert model.training and model.drop.training  # mode restored
    assert torch.equal(a, b)  # no dropout noise in the attack
    for k, v in model.bn.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(v, stats[k]), k
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    run()
    assert not model.training  # eval stays eval


def test_attack_restores_mode_when_the_model_fails() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, K)).train()
    with pytest.raises(RuntimeError):
        fgsm(model, images(2), labels(2), 0.1)
    assert model.training
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_attack_bad_input(shapes_model) -> None:
    model, x, y = shapes_model
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="epsilon .* must be >= 0"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="epsilon .* must be >= 0"):
        pgd(model, x, y, -1)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            pgd(model, x, y, 0.1, steps=steps)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pgd(model, x, y, 0.1, step_size=0.0)
    with pytest.raises(ValueError, match=r"outside the valid range bounds=\(0.0, 1.0\)"):
        fgsm(model, x * 2 - 1, y, 0.1)
    with pytest.raises(ValueError, match="4 images/logits but 3 labels"):
        pgd(model, x, y[:3], 0.1)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        fgsm(model, x[0], y, 0.1)
    with pytest.raises(ValueError, match="attack must be one of"):
        robust_accuracy(model, x, y, [0.1], attack="cw")
    with pytest.raises(ValueError, match="epsilon"):
        robust_accuracy(model, x, y, [0.1, -0.1])
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_loss_fn(-0.1)
    with pytest.raises(ValueError, match="steps"):
        adversarial_loss_fn(0.1, steps=0)
    with pytest.raises(ValueError, match="clean_weight"):
        adversarial_loss_fn(0.1, clean_weight=2)


def test_adversarial_training_in_fit() -> None:
    model = DropBN()
    x, y = images(32), labels(32)
    loss_fn = adversarial_loss_fn(8 / 255, steps=2, clean_weight=0.5)
    calls = []

    def watched(m: nn.Module, batch):
        out = loss_fn(m, batch)
        calls.append(m.training)  # fit's train mode survives the attack inside the loss
        return out

    cfg = TrainConfig(steps=3, progress=False, device="cpu", log_every=1)
    history = fit(model, watched, BatchLoader(x, y, 16), cfg)
    assert calls == [True, True, True]
    assert len(history.logs["adv_acc"]) == 3 and all(math.isfinite(v) for v in history.loss)


def test_lora_trains_in_fit_and_leaves_the_base_weights() -> None:
    model = apply_lora(small_vit(depth=1), ("qkv", "proj"), r=2)
    base = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    cfg = TrainConfig(steps=3, lr=1e-2, progress=False, device="cpu")
    fit(model, loss_fn, BatchLoader(images(16), labels(16), 8), cfg)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in base.items())
    assert all(not torch.equal(params[n], v) for n, v in adapters.items())
