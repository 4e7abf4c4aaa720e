"""Lesson 06's CenterNet exercises: the checkers for the heatmap's focal loss and for peak
decoding (the registry entries are in :mod:`.detection`, beside the lesson's other exercises)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...dense.centernet import centernet_focal_loss, heatmap_peaks
from .checking import call_learner, diagnose, expect_tensor, fail, passed


def _centre_heatmap(g: torch.Generator, B: int, K: int, gh: int, gw: int) -> torch.Tensor:
    """(B, K, Gh, Gw) CenterNet targets: a few Gaussian bumps per image, exactly 1 at each
    centre (as encode_centernet_targets makes them), a class's bumps merged by their max."""
    ys = torch.arange(gh, dtype=torch.float32)[:, None]
    xs = torch.arange(gw, dtype=torch.float32)[None, :]
    heat = torch.zeros(B, K, gh, gw)
    for b in range(B):
        for _ in range(1 + int(torch.randint(3, (1,), generator=g))):
            c = int(torch.randint(K, (1,), generator=g))
            cy, cx = (
                int(torch.randint(gh, (1,), generator=g)),
                int(torch.randint(gw, (1,), generator=g)),
            )
            sigma = 0.4 + 0.8 * float(torch.rand(1, generator=g))
            bump = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
            heat[b, c] = torch.maximum(heat[b, c], bump)
    return heat


def _focal_variant(logits: torch.Tensor, heat: torch.Tensor, bug: str) -> torch.Tensor:
    """The penalty-reduced focal loss (alpha 2, beta 4) with one known mistake."""
    p = logits.sigmoid()
    pos = heat > 0.5 if bug == "pos_threshold" else heat == 1
    a = 0.0 if bug == "no_focus" else 2.0
    pos_loss = ((1 - p) ** a * F.logsigmoid(logits))[pos].sum()
    reduce = 1.0 if bug == "no_reduction" else (1 - heat) ** 4
    neg_loss = (reduce * p**a * F.logsigmoid(-logits))[~pos].sum()
    total = -(pos_loss + neg_loss)
    if bug == "mean_over_cells":
        return total / logits.numel()
    if bug == "no_normalisation":
        return total
    return total / (heat == 1).sum().clamp(min=1)


def check_centernet_focal_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(logits, heatmap)`` -> CenterNet's penalty-reduced focal loss (alpha 2, beta
    4), a scalar: summed over every cell and divided by the number of centres."""
    ex = "check_centernet_focal_loss"
    g = torch.Generator().manual_seed(602)
    cases = [(2, 3, 6, 7, 2.0), (1, 2, 5, 5, 3.0), (3, 4, 8, 6, 2.0)]
    wrong = {
        "only the exact centres (Y = 1) are positives; the cells around them, however close "
        "to 1, are negatives with a reduced penalty": "pos_threshold",
        "the focusing factors are missing: (1 - p)^alpha at the centres and p^alpha elsewhere "
        "turn the loss of easy, already-right cells down": "no_focus",
        "the negatives' reduced penalty (1 - Y)^beta is missing: a guess next to a true "
        "centre must cost less than one far from any object": "no_reduction",
        "divide by the number of objects (cells with Y = 1), not by the number of cells: a "
        "mean over thousands of empty cells makes the loss tiny": "mean_over_cells",
        "divide the sum by the number of objects (cells with Y = 1)": "no_normalisation",
    }
    for B, K, gh, gw, scale in cases:
        heat = _centre_heatmap(g, B, K, gh, gw)
        logits = scale * torch.randn(B, K, gh, gw, generator=g)
        out = expect_tensor(
            ex, call_learner(ex, fn, logits, heat), (), "return one number (a 0-d tensor)"
        )
        expected = centernet_focal_loss(logits, heat)
        variants = {hint: _focal_variant(logits, heat, bug) for hint, bug in wrong.items()}
        variants["the loss must be positive: -(sum of the log terms) / N"] = -expected
        case = f"for logits {tuple(logits.shape)} with {int((heat == 1).sum())} centres"
        diagnose(ex, out, expected, variants, case)
    # A confident head: logits of +-30, where sigmoid rounds to exactly 0 or 1 in float32.
    heat = _centre_heatmap(g, 2, 3, 6, 6)
    logits = 30 * torch.randn(2, 3, 6, 6, generator=g).sign()
    out = call_learner(ex, fn, logits, heat)
    expected = centernet_focal_loss(logits, heat)
    value = float(torch.as_tensor(out).detach().double().reshape(-1)[0])
    if not abs(value - float(expected)) <= 1e-3 * (1 + abs(float(expected))):  # NaN fails too
        fail(
            ex,
            f"with logits of +-30 your loss is {value:.4g}, the reference's "
            f"{float(expected):.4g}: log(sigmoid(x)) breaks where sigmoid rounds to 0 or 1",
            "use F.logsigmoid(logits) for log p and F.logsigmoid(-logits) for log(1 - p): "
            "exact for any logit, never log(0) (CenterNet's own code clamps p to [1e-4, "
            "1 - 1e-4] instead, which keeps the loss finite but caps what a confident "
            "mistake costs)",
        )
    return passed(
        f"the focal loss matches the reference on {len(cases)} heatmaps and on saturated logits"
    )


def _peak_heat(g: torch.Generator, B: int, K: int, gh: int, gw: int) -> torch.Tensor:
    """(B, K, Gh, Gw) smooth random heatmaps in (0, 1): a few bumps per class, distinct values."""
    noise = torch.rand(B, K, gh, gw, generator=g)
    smooth = F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
    return (0.6 * smooth + 0.4 * noise).clamp(1e-3, 1 - 1e-3)


def check_heatmap_peaks(fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, ...]]) -> bool:
    """Check ``fn(heat, k)`` -> ``(scores, labels, ys, xs)``, each (B, k): the k highest 3x3
    local maxima over all classes and cells of heat (B, K, Gh, Gw), best first."""
    ex = "check_heatmap_peaks"
    g = torch.Generator().manual_seed(603)
    cases = [(2, 3, 5, 7, 6), (1, 2, 6, 4, 4), (3, 4, 4, 9, 8)]
    for B, K, gh, gw, k in cases:
        heat = _peak_heat(g, B, K, gh, gw)
        out = call_learner(ex, fn, heat, k)
        if not (isinstance(out, tuple) and len(out) == 4):
            fail(ex, "return four tensors: (scores, labels, ys, xs)", "each of shape (B, k)")
        out = [expect_tensor(ex, t, (B, k), "one row of k peaks per image: (B, k)") for t in out]
        expected = heatmap_peaks(heat, k)
        case = f"for heat {tuple(heat.shape)}, k={k}"
        scores, labels, ys, xs = out
        topk = heat.flatten(1).topk(k, dim=1)  # (B, k): no peak test at all
        diagnose(
            ex,
            scores,
            expected[0],
            {
                "those are the k highest cells, not the k highest *peaks*: keep a cell only "
                "where it equals the 3x3 max-pool of its class map (the others score 0)": (
                    topk.values
                ),
            },
            f"of the scores {case}",
        )
        idx = (expected[1] * gh + expected[2]) * gw + expected[3]  # (B, k) into heat.flatten(1)
        wrong_labels = {
            "the labels are off: heat.flatten(1) is class-major, index = (c * Gh + y) * Gw + x, "
            "so the class is index // (Gh * Gw) and the cell index % (Gh * Gw)": idx % K,
        }
        diagnose(ex, labels, expected[1], wrong_labels, f"of the labels {case}")
        cell = expected[2] * gw + expected[3]  # (B, k), the position within one class map
        wrong_rows = {
            "x and y are swapped: y (the row) is cell // Gw and x (the column) is cell % Gw": (
                expected[3]
            ),
            "a row of the map has Gw cells, so y = cell // Gw (not // Gh)": cell // gh,
        }
        diagnose(ex, ys, expected[2], wrong_rows, f"of the rows ys {case}")
        diagnose(ex, xs, expected[3], {}, f"of the columns xs {case}")
    return passed(
        f"the peaks match the reference on {len(cases)} heatmap shapes (scores, classes, rows, "
        "columns)"
    )
