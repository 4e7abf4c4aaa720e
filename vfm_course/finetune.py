"""Adapting a pretrained ViT: what to train, how fast, from whom, and how robustly.

Five ideas, each a few lines, all plugging into the one engine :func:`vfm_course.train.fit`:

- which weights train: a linear probe (head only), partial fine-tuning (last k blocks), full
  fine-tuning, counted with :func:`count_trainable`;
- LoRA (Hu et al. 2021): freeze ``W`` and learn a low-rank update ``W + (alpha / r) B A``;
- layer-wise learning-rate decay (BEiT, Bao et al. 2022; MAE, He et al. 2022): early blocks,
  which hold the most general features, move less than late ones;
- knowledge distillation (Hinton et al. 2015): a small student learns the teacher's softened
  class probabilities as well as the labels;
- adversarial examples: FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018) and training on
  them (Madry et al. 2018).

Images are what :func:`vfm_course.data.load_shapes` returns and the course ViT reads directly:
float (B, C, H, W) in [0, 1], no mean/std normalisation. So the attacks clamp to [0, 1] by
default (``bounds``); a model that normalises inside ``forward`` keeps the same bounds.
Shapes: logits (B, K), labels (B,) int64 class ids.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .validate import check_choice, check_positive_int, check_tensor
from .vit import VisionTransformer

# ----------------------------------------------------------------------------- what trains


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def classifier_from_encoder(encoder: VisionTransformer, num_classes: int) -> VisionTransformer:
    """A new ViT classifier: ``encoder``'s weights and pooling, a freshly initialised head.

    The result is a plain :class:`VisionTransformer` whose config is the encoder's with
    ``num_classes`` replaced (timm's ``reset_classifier``), so parameter names stay timm's
    (``blocks.{i}...``, ``head``) and every tool of the course applies to it. Pooling (class
    token or mean, with ``fc_norm``) is the encoder's own. The encoder is not modified.
    """
    if not isinstance(encoder, VisionTransformer):
        raise TypeError(
            f"encoder must be a course VisionTransformer, got {type(encoder).__name__}; "
            f"load one with recipes.load_course_encoder(name)"
        )
    check_positive_int(num_classes, "num_classes")
    model = VisionTransformer(dataclasses.replace(encoder.cfg, num_classes=num_classes))
    ref = next(encoder.parameters())
    model.to(device=ref.device, dtype=ref.dtype)
    body = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    missing, _ = model.load_state_dict(body, strict=False)
    assert set(missing) == {"head.weight", "head.bias"}, missing  # only the head is new
    return model.train(encoder.training)


def _check_vit(model: object) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"model must be a course VisionTransformer, got {type(model).__name__} "
            f"(build one with classifier_from_encoder)"
        )
    return model


def _train_only(model: VisionTransformer, prefixes: Sequence[str]) -> VisionTransformer:
    """requires_grad on parameters whose names start with one of ``prefixes``, off elsewhere.
    A fixed sin-cos ``pos_embed`` stays frozen whatever is asked (it is not a weight)."""
    fixed_pos = model.cfg.pos_embed == "sincos"
    for name, p in model.named_parameters():
        keep = name.startswith(tuple(prefixes)) and not (fixed_pos and name == "pos_embed")
        p.requires_grad_(keep)
    return model


def train_head_only(model: VisionTransformer) -> VisionTransformer:
    """Linear probe: freeze everything but ``head`` (returns ``model``, changed in place)."""
    return _train_only(_check_vit(model), ["head."])


def train_last_blocks(model: VisionTransformer, k: int) -> VisionTransformer:
    """Partial fine-tuning: train the last ``k`` blocks, the final norm and the head.

    Late blocks are the most task-specific, early ones the most generic (Yosinski et al. 2014),
    so this spends the gradient where it matters. ``k=0`` trains the final norm and head only.
    """
    model = _check_vit(model)
    depth = len(model.blocks)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= depth:
        raise ValueError(
            f"k (the number of last blocks to train) must be an integer from 0 to the model's "
            f"depth {depth}, got {k!r}"
        )
    blocks = [f"blocks.{i}." for i in range(depth - k, depth)]
    return _train_only(model, [*blocks, "norm.", "fc_norm.", "head."])


def train_all(model: VisionTransformer) -> VisionTransformer:
    """Full fine-tuning: every parameter trains (except a fixed sin-cos position table)."""
    return _train_only(_check_vit(model), [""])


def count_trainable(model: nn.Module) -> int:
    """Number of parameter values that will receive gradients (``requires_grad``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (LoRA, Hu et al. 2021).

    ``y = base_layer(x) + (alpha / r) * B A dropout(x)`` with ``A`` (r, in) and ``B`` (out, r).
    ``A`` starts random (Kaiming-uniform, as ``nn.Linear`` and peft) and ``B`` at zero, so at
    the start the layer equals the base layer exactly and training moves away from it smoothly.
    Dividing by ``r`` keeps the update's size about the same when ``r`` changes, so ``alpha``
    need not be re-tuned (Hu et al. 2021, Sec. 4.1). Parameter names follow peft
    (``base_layer``, ``lora_A``, ``lora_B``).

    :meth:`merge` folds the update into the base weight for inference: no extra matmul, the
    same outputs (exactly so only with dropout off, i.e. in eval mode or ``dropout=0``).

    Shapes:
        forward: (..., in) -> (..., out).
    """

    def __init__(
        self, base_layer: nn.Linear, r: int = 4, alpha: float = 8.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRA wraps an nn.Linear, got {type(base_layer).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
        if not _is_number(alpha) or not alpha > 0:
            raise ValueError(
                f"LoRA alpha must be > 0 (the update is scaled by alpha / r), got {alpha!r}"
            )
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
        self.base_layer = base_layer.requires_grad_(False)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.alpha, self.scaling = r, float(alpha), alpha / r
        like = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **like))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **like))  # (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        """A Kaiming-uniform (like ``nn.Linear``'s own weight), B zero: the update starts at 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) B A`` as a dense (out, in) matrix."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in), rank <= r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        out = self.base_layer(x)  # (..., out)
        if self.merged:
            return out  # the update already lives in base_layer.weight
        z = self.lora_dropout(x) @ self.lora_A.T  # (..., r): the low-rank bottleneck
        return out + (z @ self.lora_B.T) * self.scaling  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``base_layer.weight`` (W <- W + (alpha/r) B A)."""
        if self.merged:
            raise RuntimeError(
                "this LoRA layer is already merged; merging again would add the update twice "
                "(call unmerge() first)"
            )
        self.base_layer.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again, back to the frozen base weight plus a separate adapter."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged, so there is nothing to unmerge")
        self.base_layer.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name (e.g. ``"blocks.0.attn.qkv"``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(
    model: nn.Module,
    targets: Sequence[str] = ("qkv", "proj"),
    r: int = 4,
    alpha: float = 8.0,
    dropout: float = 0.0,
    trainable: Sequence[str] = ("head",),
) -> nn.Module:
    """Replace every ``nn.Linear`` whose name ends in one of ``targets`` by a :class:`LoRALinear`,
    and freeze everything except the adapters and the modules named in ``trainable``.

    For the course ViT the targets are the attention's ``qkv`` and ``proj`` (the paper adapts
    the attention projections) and optionally the MLP's ``fc1`` / ``fc2``; ``patch_embed.proj``
    is a convolution and is never adapted. ``trainable`` keeps e.g. the new ``head`` training.
    Changes ``model`` in place and returns it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if lora_layers(model):
        raise ValueError("this model already has LoRA layers; apply_lora once per model")
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"targets must be a non-empty list of layer names, got {targets!r}")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    leaf = {n: n.rsplit(".", 1)[-1] for n in linears}
    unknown = [t for t in targets if t not in leaf.values()]
    if unknown:
        raise ValueError(
            f"no linear layer named {unknown} in this model; its linear layers end in: "
            f"{', '.join(sorted(set(leaf.values())))}"
        )
    chosen = [n for n in linears if leaf[n] in targets]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        # A new module starts in train mode; match the model's, or its dropout would be on.
        layer = LoRALinear(linears[name], r, alpha, dropout).train(parent.training)
        setattr(parent, child, layer)
    keep = tuple(trainable)
    names = [n for n, _ in model.named_parameters()]
    missing = [t for t in keep if not any(n == t or n.startswith(t + ".") for n in names)]
    if missing:
        raise ValueError(f"trainable names {missing} match no parameter of this model")
    for name, p in model.named_parameters():
        is_adapter = name.endswith((".lora_A", ".lora_B"))
        p.requires_grad_(is_adapter or any(name == t or name.startswith(t + ".") for t in keep))
    return model


def _each_lora(model: nn.Module) -> list[LoRALinear]:
    layers = list(lora_layers(model).values())
    if not layers:
        raise ValueError("this model has no LoRA layers (call apply_lora first)")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of ``model`` into its base weight (for inference)."""
    for layer in _each_lora(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora`, e.g. to train the adapters further."""
    for layer in _each_lora(model):
        layer.unmerge()
    return model


# ----------------------------------------------------------------------------- layer-wise lr decay

_EMBEDDINGS = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """Depth of parameter ``name`` in a ViT: 0 for the embeddings, i + 1 for ``blocks.{i}``,
    ``depth + 1`` for everything after the blocks (final norm, head)."""
    if name.startswith(_EMBEDDINGS):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_param_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay (BEiT; MAE fine-tuning).

    Block ``i`` of ``depth`` gets ``lr * layer_decay ** (depth - i)``; the embeddings
    (``patch_embed``, ``cls_token``, ``pos_embed``) the lowest, ``lr * layer_decay ** (depth +
    1)``; the final norm and the head the full ``lr``. The pretrained early layers thus change
    least. Weight decay only on matrices, as :func:`vfm_course.train.param_groups`. Each group
    carries its ``lr`` (already scaled: :func:`fit` reads it as the base rate), ``lr_scale`` and
    ``layer``. Frozen parameters are left out.

    The scales equal timm's ``param_groups_layer_decay`` except for the final ``norm`` of a
    class-token ViT, which timm groups with the last block; here it gets the full lr, as in
    BEiT's and MAE's code (it normalises what the new head reads).
    """
    if not isinstance(getattr(model, "blocks", None), nn.Module):
        raise TypeError("layer-wise lr decay needs a ViT, with its transformer blocks in `blocks`")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not _is_number(layer_decay):
        raise ValueError(f"layer_decay must be a number in (0, 1], got {layer_decay!r}")
    if not 0 < layer_decay <= 1:
        raise ValueError(
            f"layer_decay must be in (0, 1] (1 = one lr for all layers; MAE uses 0.65-0.75), "
            f"got {layer_decay}"
        )
    depth = len(model.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        # No decay on vectors (biases, norm gains) and the CLS / position embeddings.
        decay = not (p.ndim <= 1 or name.endswith((".bias", *_EMBEDDINGS[1:])))
        scale = layer_decay ** (depth + 1 - layer)
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
                "layer": layer,
            },
        )
        group["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters (are they all frozen?)")
    return list(groups.values())


def layer_decay_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> torch.optim.AdamW:
    """AdamW over :func:`layer_decay_param_groups`; pass it as ``fit(..., optimizer=...)``
    (fit then ignores ``TrainConfig.lr`` and applies its warmup and cosine to each group)."""
    return torch.optim.AdamW(layer_decay_param_groups(model, lr, weight_decay, layer_decay))


# ----------------------------------------------------------------------------- distillation


def _check_labels(labels: object, n: int) -> torch.Tensor:
    labels = check_tensor(labels, "labels", ndim=1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class ids (int64), got {labels.dtype}")
    if len(labels) != n:
        raise ValueError(f"there are {n} images/logits but {len(labels)} labels")
    return labels


def _check_kd(temperature: object, alpha: object) -> None:
    if not _is_number(temperature) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not _is_number(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the weight of the teacher term) must be in [0, 1], got {alpha!r}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015), a scalar:
    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE``.

    A temperature ``T > 1`` softens both distributions, so the teacher's "dark knowledge" (which
    wrong classes it finds plausible) shows in the targets. Soft-target gradients shrink as
    ``1 / T^2``; multiplying by ``T^2`` keeps their weight against the label term independent of
    ``T``. The KL is summed over classes and averaged over the batch ("batchmean"). The teacher
    is a fixed target: no gradient flows into ``teacher_logits``. Logits (B, K), labels (B,).
    """
    check_tensor(student_logits, "student_logits", ndim=2, floating=True)
    check_tensor(teacher_logits, "teacher_logits", ndim=2, floating=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape (B, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    labels = _check_labels(labels, len(student_logits))
    _check_kd(temperature, alpha)
    T = float(temperature)
    log_p_student = F.log_softmax(student_logits / T, dim=-1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / T, dim=-1)  # (B, K), a fixed target
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    ce = F.cross_entropy(student_logits, labels)
    return alpha * T**2 * kl + (1 - alpha) * ce


def distillation_loss_fn(
    teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn`` for :func:`fit` that trains the student on :func:`distillation_loss`.

    The teacher runs frozen, in eval mode, without gradients, on the batch's device.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    _check_kd(temperature, alpha)
    teacher.eval().requires_grad_(False)

    def loss_fn(student: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        with torch.no_grad():
            teacher_logits = teacher.to(x.device)(x)  # (B, K)
        logits = student(x)  # (B, K)
        loss = distillation_loss(logits, teacher_logits, y, temperature, alpha)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn


# ----------------------------------------------------------------------------- adversarial


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block and restore its mode (train or eval) after.

    Attacks use it so that dropout cannot randomise the gradient and BatchNorm neither uses
    batch statistics nor updates its running averages while the attack probes the model.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_epsilon(epsilon: object) -> None:
    if not _is_number(epsilon) or not epsilon >= 0:
        raise ValueError(f"epsilon (the largest change per pixel) must be >= 0, got {epsilon!r}")


def _check_attack(
    model: object, images: object, labels: object, epsilon: object, bounds: object
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    images = check_tensor(images, "images", ndim=4, floating=True)
    labels = _check_labels(labels, len(images))
    _check_epsilon(epsilon)
    if bounds is not None:
        lo, hi = bounds
        if not lo < hi:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        if images.numel() and (images.min() < lo - 1e-6 or images.max() > hi + 1e-6):
            raise ValueError(
                f"images range over [{images.min().item():.3g}, {images.max().item():.3g}], "
                f"outside the valid range bounds={bounds}; for normalised inputs pass the "
                f"normalised range, or bounds=None to skip clamping"
            )
    return images, labels


def _clamp(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def _input_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(summed cross-entropy) / d(x). Only the input's gradient is computed: the model's
    parameters get no ``.grad`` (autograd.grad, not backward)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():  # also when called under no_grad (e.g. in an eval_fn)
        # Summed, not averaged: each image's gradient is its own loss's, whatever B is.
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``epsilon`` along
    the sign of the loss gradient, ``clamp(x + epsilon * sign(grad_x loss), *bounds)``.

    The sign is the steepest ascent direction under an L-infinity budget: every pixel moves by
    exactly ``epsilon``. The model runs in eval mode (its mode is restored after) and its
    parameters get no gradients. images (B, C, H, W) in ``bounds``, labels (B,) -> (B, C, H, W).
    """
    images, labels = _check_attack(model, images, labels, epsilon, bounds)
    if epsilon == 0:
        return images.detach().clone()
    with eval_mode(model):
        grad = _input_gradient(model, images, labels)  # (B, C, H, W)
    return _clamp(images.detach() + epsilon * grad.sign(), bounds)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the loss, L-infinity ball (Madry et al. 2018).

    Start at a uniformly random point of the ``epsilon``-ball around ``x`` (``random_start``),
    then ``steps`` times: step ``step_size`` along the gradient's sign, project back into the
    ball (clip to ``[x - epsilon, x + epsilon]``) and into the valid range ``bounds``. The
    default step size ``2.5 * epsilon / steps`` (the robustness library of Madry's group) lets a
    walk cross the ball even after projections. Random starts (from ``generator``) avoid the
    flat, gradient-masked point at ``x`` itself. Model in eval mode (restored after), no
    parameter gradients. images (B, C, H, W) in ``bounds``, labels (B,) -> (B, C, H, W).
    """
    images, labels = _check_attack(model, images, labels, epsilon, bounds)
    check_positive_int(steps, "steps")
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not _is_number(step_size) or not step_size > 0:
        raise ValueError(f"step_size must be > 0 (None: 2.5 * epsilon / steps), got {step_size!r}")
    x = images.detach()
    if epsilon == 0:
        return x.clone()
    x_adv = x
    if random_start:
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        x_adv = _clamp(x + epsilon * (2 * noise.to(x.device) - 1), bounds)  # uniform in the ball
    with eval_mode(model):
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, labels)  # (B, C, H, W)
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - epsilon), x + epsilon)  # project onto the ball
            x_adv = _clamp(x_adv, bounds)
    return x_adv.detach()


ATTACKS = ("fgsm", "pgd")


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float],
    attack: str = "pgd",
    steps: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> dict[float, float]:
    """Accuracy on attacked ``images`` for each budget in ``epsilons`` (``{epsilon: acc}``;
    epsilon 0 is the clean accuracy). Batches go to the model's device; PGD's random starts
    come from ``seed``, so a call repeats exactly."""
    check_choice(attack, "attack", ATTACKS)
    check_positive_int(batch_size, "batch_size")
    if isinstance(epsilons, (int, float)) or len(epsilons) == 0:
        raise ValueError(f"epsilons must be a non-empty list of budgets, got {epsilons!r}")
    images, labels = _check_attack(model, images, labels, 0.0, bounds)
    device = next(model.parameters()).device
    results = {}
    for eps in epsilons:
        _check_epsilon(eps)
        generator = torch.Generator(device).manual_seed(seed)
        correct = 0
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            y = labels[i : i + batch_size].to(device)
            if attack == "fgsm":
                x_adv = fgsm(model, x, y, eps, bounds)
            else:
                x_adv = pgd(model, x, y, eps, steps, bounds=bounds, generator=generator)
            with torch.no_grad(), eval_mode(model):
                correct += (model(x_adv).argmax(1) == y).sum().item()
        results[float(eps)] = correct / len(images)
    return results


def adversarial_loss_fn(
    epsilon: float,
    steps: int = 3,
    step_size: float | None = None,
    clean_weight: float = 0.0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn`` for :func:`fit`: adversarial training (Madry et al. 2018).

    Each batch is replaced by its PGD examples (the inner maximisation), and the model learns
    on those (the outer minimisation). ``clean_weight`` mixes in the clean loss,
    ``(1 - w) * CE(adv) + w * CE(clean)``; Goodfellow et al. 2015 used ``w = 0.5``. The attack
    runs the model in eval mode; the training step then runs in the mode ``fit`` set (train).
    """
    _check_epsilon(epsilon)
    check_positive_int(steps, "steps")
    if not _is_number(clean_weight) or not 0 <= clean_weight <= 1:
        raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight!r}")

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        x_adv = pgd(model, x, y, epsilon, steps, step_size, bounds=bounds)
        logits = model(x_adv)  # (B, K)
        loss = F.cross_entropy(logits, y)
        if clean_weight > 0:
            loss = (1 - clean_weight) * loss + clean_weight * F.cross_entropy(model(x), y)
        return loss, {"adv_acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn
