"""Evaluating frozen features: how much does an encoder know without being fine-tuned?

Self-supervised encoders are judged by what a *simple* classifier can read off their frozen
features. Two standard readers, both cheap and deterministic:

- a linear probe: multinomial logistic regression on the standardised features, fitted by
  full-batch L-BFGS in float64 (SimCLR, Chen et al. 2020; the protocol of Kolesnikov et al. 2019);
- k-nearest neighbours by cosine similarity, with a majority or a similarity-weighted vote
  (Wu et al. 2018; DINO, Caron et al. 2021), which needs no training at all.

Shapes: features (n, D), labels (n,) integer class ids 0..K-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.inference import predict
from ..core.validate import check_positive_int, check_tensor

_KNN_CHUNK = 1024  # test rows per similarity block: memory stays (chunk, n_train)


# ----------------------------------------------------------------------------- features


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run a frozen ``encoder`` mapping (B, C, H, W) -> (B, D) over ``images`` in batches.

    Runs in eval mode (dropout off, BatchNorm on its running statistics) without gradients and
    puts the encoder back in the train/eval mode it was in. ``device`` is where the batches go,
    by default the encoder's own device. Returns (n, D) float32 features on the CPU.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    images = check_tensor(images, "images", ndim=4, floating=True)
    check_positive_int(batch_size, "batch_size")
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to extract features from")
    features = predict(encoder, images, batch_size, device)  # eval mode, no grad, CPU float32
    if features.ndim != 2:
        raise ValueError(
            f"the encoder must map images (B, C, H, W) to features (B, D), but it returned "
            f"{tuple(features.shape[1:])} per image; for a VisionTransformer build it with "
            f"num_classes=0"
        )
    return features  # (n, D)


# ----------------------------------------------------------------------------- input checks


def _features(x: object, name: str) -> torch.Tensor:
    x = check_tensor(x, name, ndim=2, floating=True)
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    return x


def _labels(y: object, name: str, n: int, features: str) -> torch.Tensor:
    y = check_tensor(y, name, ndim=1)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class ids (int64), got {y.dtype}; convert with .long()"
        )
    if len(y) != n:
        raise ValueError(
            f"{features} has {n} rows but {name} has {len(y)} labels; they must match one to one"
        )
    if (y < 0).any():
        raise ValueError(f"{name} must be class ids 0..K-1, got {y.min().item()}")
    return y.long()


def _same_width(train_x: torch.Tensor, test_x: torch.Tensor) -> None:
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train and test features must have the same width D, got "
            f"{train_x.shape[1]} and {test_x.shape[1]}"
        )


# ----------------------------------------------------------------------------- linear probe


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """A fitted linear probe: float64 ``weight`` (K, D) and ``bias`` (K,) acting on features
    standardised with the training set's ``mean`` (D,) and ``std`` (D,)."""

    train_acc: float
    test_acc: float
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) features -> (n,) int64 predicted classes (on the CPU)."""
        x = _features(x, "features")
        if x.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"features must have width D = {self.weight.shape[1]} (the probe's),"
                f" got {x.shape[1]}"
            )
        z = (x.detach().cpu().double() - self.mean) / self.std  # (n, D)
        return (z @ self.weight.T + self.bias).argmax(dim=1)  # (n,)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> ProbeResult:
    """Fit multinomial logistic regression on frozen features; report train and test accuracy.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not decayed) on
    features standardised with statistics of the *training* features only (the test set must
    not leak into the model). This is scikit-learn's ``LogisticRegression`` with
    ``C = 1 / (n_train * weight_decay)``. Full-batch L-BFGS in float64 on the CPU, from zero:
    no learning rate to tune, no batch order, the same answer every run.
    """
    train_x, test_x = _features(train_x, "train_x"), _features(test_x, "test_x")
    _same_width(train_x, test_x)
    train_y = _labels(train_y, "train_y", len(train_x), "train_x")
    test_y = _labels(test_y, "test_y", len(test_x), "test_x")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    check_positive_int(max_iter, "max_iter")

    x = train_x.detach().cpu().double()
    y = train_y.cpu()
    mean = x.mean(dim=0)
    # Population std (as StandardScaler); a constant feature keeps scale 1 instead of 1/0.
    std = x.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z = (x - mean) / std  # (n, D)
    K, D = int(y.max()) + 1, x.shape[1]
    weight = torch.zeros(K, D, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",  # step sizes chosen by a line search, no lr to tune
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    result = ProbeResult(0.0, 0.0, weight, bias, mean, std)
    train_acc = (result.predict(train_x) == y).double().mean().item()
    test_acc = (result.predict(test_x) == test_y.cpu()).double().mean().item()
    return ProbeResult(train_acc, test_acc, weight, bias, mean, std)


# ----------------------------------------------------------------------------- k-NN


def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int = 20,
    temperature: float | None = None,
) -> torch.Tensor:
    """Classify each test row by its ``k`` most cosine-similar training rows.

    ``temperature=None``: majority vote, ties going to the smallest label (as scikit-learn's
    ``KNeighborsClassifier``). Otherwise each neighbour votes with weight
    ``exp(similarity / temperature)`` (Wu et al. 2018; DINO uses k=20, temperature=0.07), so
    closer neighbours count more. Test rows are processed in blocks, so memory stays
    (block, n_train) however large the test set.

    Returns:
        (n_test,) int64 predicted labels, on the features' device.
    """
    train_x, test_x = _features(train_x, "train_x"), _features(test_x, "test_x")
    _same_width(train_x, test_x)
    train_y = _labels(train_y, "train_y", len(train_x), "train_x").to(train_x.device)
    check_positive_int(k, "k")
    if k > len(train_x):
        raise ValueError(
            f"k = {k} neighbours asked for, but there are only {len(train_x)} training rows"
        )
    if temperature is not None and not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 (or None for a majority vote), got {temperature!r}"
        )
    dtype = torch.promote_types(train_x.dtype, torch.float32)  # float64 stays float64
    train = F.normalize(train_x.detach().to(dtype), dim=1)  # (n_train, D), unit rows
    test = F.normalize(test_x.detach().to(train.device, dtype), dim=1)  # (n_test, D)
    K = int(train_y.max()) + 1
    preds = []
    for start in range(0, len(test), _KNN_CHUNK):
        sim = test[start : start + _KNN_CHUNK] @ train.T  # (chunk, n_train) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (chunk, k)
        votes = torch.ones_like(top_sim) if temperature is None else (top_sim / temperature).exp()
        scores = torch.zeros(len(sim), K, dtype=dtype, device=sim.device)
        scores.scatter_add_(1, train_y[top_idx], votes)  # (chunk, K) votes per class
        preds.append(scores.argmax(dim=1))  # argmax returns the first maximum: smallest label
    return torch.cat(preds)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float | None = None,
) -> float:
    """Fraction of test rows that :func:`knn_predict` classifies correctly."""
    preds = knn_predict(train_x, train_y, test_x, k, temperature)
    test_y = _labels(test_y, "test_y", len(preds), "test_x").to(preds.device)
    return (preds == test_y).double().mean().item()


def probe_encoder(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    k: int = 20,
) -> dict[str, float]:
    """Frozen-feature evaluation of an encoder (B, C, H, W) -> (B, D): the test accuracy of a
    linear probe (``"probe_acc"``) and of a ``k``-NN classifier (``"knn_acc"``), both fit on
    the features of ``train`` = (images, labels) and scored on ``test``."""
    f_train = extract_features(encoder, train[0])
    f_test = extract_features(encoder, test[0])
    return probe_features((f_train, train[1]), (f_test, test[1]), k=k)


def probe_features(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    k: int = 20,
) -> dict[str, float]:
    """:func:`probe_encoder` on features already extracted, ``train`` = (features (N, D),
    labels (N,)): for a lesson that reads the same frozen features more than once."""
    probe = linear_probe(train[0], train[1], test[0], test[1])
    return {
        "probe_acc": probe.test_acc,
        "knn_acc": knn_accuracy(train[0], train[1], test[0], test[1], k=k),
    }
