"""Label efficiency: how a frozen encoder's linear probe fares when only a share of the
labels exists, with the same class-balanced label subsets for every encoder compared."""

from __future__ import annotations

import torch
from torch import nn

from ..core.validate import check_tensor
from .probe import extract_features, linear_probe


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-balanced random ``fraction`` of ``labels`` (n,): the same share of
    every class (at least one image each), drawn with ``seed``, sorted. ``fraction=1`` is all."""
    labels = check_tensor(labels, "labels", ndim=1)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction is a share of the labels, in (0, 1]; got {fraction!r}")
    if fraction == 1:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for k in labels.unique():
        members = (labels == k).nonzero().flatten()  # (n_k,)
        n_k = max(1, round(fraction * len(members)))
        picked.append(members[torch.randperm(len(members), generator=g)[:n_k]])
    return torch.cat(picked).sort().values


def label_efficiency(
    encoders: dict[str, nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict[str, dict[float, tuple[float, float]]]:
    """Linear-probe test accuracy of frozen encoders when only a share of the labels exists.

    For every fraction below 1, one class-balanced subset of the training labels per seed
    (:func:`labelled_subset`), the *same* subsets for every encoder, so the rows differ only in
    the encoder; fraction 1 uses every label once. Features are extracted once per encoder.

    Returns:
        ``{encoder name: {fraction: (mean, std) test accuracy over the subsets}}``; the std is
        0 where only one subset was fitted.
    """
    if not encoders:
        raise ValueError("encoders is empty: pass {name: encoder}")
    features = {
        name: (extract_features(encoder, train[0]), extract_features(encoder, test[0]))
        for name, encoder in encoders.items()
    }
    return label_efficiency_features(features, train[1], test[1], fractions, seeds)


def label_efficiency_features(
    features: dict[str, tuple[torch.Tensor, torch.Tensor]],
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict[str, dict[float, tuple[float, float]]]:
    """:func:`label_efficiency` on features already extracted: ``features`` maps a name to
    (train features (N, D), test features (M, D)), for a lesson that reads the same frozen
    features more than once. Same subsets, same return value."""
    if not features:
        raise ValueError("features is empty: pass {name: (train features, test features)}")
    if not seeds:
        raise ValueError("seeds is empty: each fraction below 1 needs at least one subset")
    train_y, test_y = train_labels, test_labels
    subsets = {
        f: [labelled_subset(train_y, f, s) for s in (seeds if f < 1 else seeds[:1])]
        for f in fractions
    }
    table: dict[str, dict[float, tuple[float, float]]] = {}
    for name, (f_train, f_test) in features.items():
        table[name] = {}
        for fraction, idx_list in subsets.items():
            accs = torch.tensor(
                [
                    linear_probe(f_train[idx], train_y[idx], f_test, test_y).test_acc
                    for idx in idx_list
                ],
                dtype=torch.float64,
            )
            std = accs.std().item() if len(accs) > 1 else 0.0
            table[name][fraction] = (accs.mean().item(), std)
    return table
