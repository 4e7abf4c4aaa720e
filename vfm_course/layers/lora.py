"""LoRA (Hu et al. 2021): freeze ``W`` and learn a low-rank update ``W + (alpha / r) B A``.

:class:`LoRALinear` wraps one ``nn.Linear``; :func:`apply_lora` swaps it into every linear
layer of a model whose name ends in one of the targets (the attention's ``qkv`` and ``proj`` in
the course ViT) and freezes the rest; :func:`merge_lora` folds the update into the base weight
for inference, so a merged model costs exactly what the original did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..core.validate import is_int, is_number

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
        if not is_int(r) or r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
        if not is_number(alpha) or not alpha > 0:
            raise ValueError(
                f"LoRA alpha must be > 0 (the update is scaled by alpha / r), got {alpha!r}"
            )
        if not is_number(dropout) or not 0 <= dropout < 1:
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
