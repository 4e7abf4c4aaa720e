"""DINO's projection head (Caron et al. 2021): an MLP, an L2 bottleneck, a weight-normalised
last layer.

Shapes: (B, D) features -> (B, K) logits over K "prototypes" (K = ``out_dim``); the softmax of
these logits is the distribution the student and the teacher are made to agree on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_positive_int
from ..layers.blocks import init_linear


class WeightNormLinear(nn.Module):
    """A bias-free Linear whose weight is ``weight_g * weight_v / ||weight_v||`` row by row
    (weight normalisation, Salimans & Kingma 2016), with the parameter names of
    ``torch.nn.utils.weight_norm`` that DINO's checkpoints use (``weight_g``, ``weight_v``).

    With ``weight_g`` fixed at 1 (``norm_last_layer=True``) every output unit is a unit-length
    direction, so a logit is the cosine between the (normalised) input and that direction, at
    most 1 in size: the temperatures alone set how peaked the softmax gets. DINO froze the norm
    because it made training more stable (the repository's ``norm_last_layer`` option).

    Shapes: (B, in) -> (B, out).
    """

    def __init__(self, in_dim: int, out_dim: int, train_norm: bool = False) -> None:
        super().__init__()
        check_positive_int(in_dim, "in_dim")
        check_positive_int(out_dim, "out_dim")
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=train_norm)

    @property
    def weight(self) -> torch.Tensor:
        """(out, in), every row of norm ``weight_g``."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """``mlp`` (``nlayers`` Linear layers with GELU between, ending in a ``bottleneck_dim``
    vector), L2-normalisation, then ``last_layer`` (:class:`WeightNormLinear`) to ``out_dim``.

    Parameter names follow DINO's ``DINOHead``: ``mlp.{0,2,4}`` (the Linear layers; with
    ``use_bn`` a BatchNorm1d follows each hidden Linear, ``mlp.{0,3,6}``) and
    ``last_layer.weight_{g,v}``. BatchNorm is DINO's option for its ResNet runs; it matters when
    the backbone's features start almost alike across images (see ``DINO_PRESETS``): it
    standardises every hidden unit over the batch, so what differs between images is what the
    head passes on. The MLP's Linear weights use
    the course's init (``init_linear``, trunc-normal 0.02 for ``"timm"`` as DINO does).

    Shapes: (B, in_dim) -> (B, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 512,
        bottleneck_dim: int = 64,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        for value, name in (
            (in_dim, "in_dim"),
            (out_dim, "out_dim"),
            (hidden_dim, "hidden_dim"),
            (bottleneck_dim, "bottleneck_dim"),
            (nlayers, "nlayers"),
        ):
            check_positive_int(value, name)
        widths = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < nlayers - 1:  # no normalisation or activation after the bottleneck
                if use_bn:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                init_linear(m, "timm")
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)  # (B, bottleneck_dim)
        # Normalising before the last layer makes every logit a cosine (times weight_g).
        x = F.normalize(x, dim=-1)
        return self.last_layer(x)  # (B, out_dim)
