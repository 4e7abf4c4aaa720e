"""CLIP's zero-shot classification: class names become prompts, prompts become text
embeddings, and each image takes the class whose embedding is closest (Radford et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..core.inference import eval_mode, predict
from ..core.validate import check_positive_int, check_tensor
from ..data.tokenizer import Tokenizer
from ..models.clip import CLIP

# --- zero-shot classification ------------------------------------------------------------------


def zero_shot_weights(
    model: CLIP,
    tokenizer: Tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}",),
) -> torch.Tensor:
    """A (K, E) classifier from text alone: per class, the mean of its prompts' unit-norm
    embeddings, normalised again (CLIP's prompt ensembling)."""
    if isinstance(classnames, str) or not classnames:
        raise ValueError("classnames must be a non-empty list of class names, e.g. SHAPE_CLASSES")
    if isinstance(templates, str) or not templates:
        raise ValueError('templates must be a non-empty list of prompts such as "a photo of a {}"')
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f'the template {t!r} has no "{{}}" where the class name goes')
    K, n_t = len(classnames), len(templates)
    prompts = [t.format(c) for c in classnames for t in templates]  # class-major
    tokens = tokenizer.encode(prompts).to(next(model.parameters()).device)  # (K * n_t, T)
    with eval_mode(model), torch.no_grad():
        emb = model.encode_text(tokens).reshape(K, n_t, -1)  # (K, n_t, E)
    return F.normalize(emb.mean(dim=1), dim=-1)  # (K, E)


def zero_shot_predict(
    model: CLIP, images: torch.Tensor, weights: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Class ids int64 (n,) for images (n, C, H, W): argmax of image embeddings @ weights.T."""
    check_tensor(images, "images", ndim=4, floating=True)
    check_tensor(weights, "weights", ndim=2, floating=True)
    check_positive_int(batch_size, "batch_size")
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to classify")
    device = next(model.parameters()).device

    def classify(batch: torch.Tensor) -> torch.Tensor:
        img = model.encode_image(batch)  # (b, E)
        if img.shape[1] != weights.shape[1]:
            raise ValueError(
                f"weights have width {weights.shape[1]} but the image embeddings have "
                f"{img.shape[1]}: build them with zero_shot_weights on the same model"
            )
        return (img @ weights.to(img).T).argmax(dim=1)  # (b,)

    with eval_mode(model):
        preds = predict(classify, images, batch_size, device)
    return preds.to(images.device)  # (n,)


def zero_shot_accuracy(model: CLIP, images: torch.Tensor, labels: torch.Tensor, words) -> float:
    """Zero-shot accuracy of a CLIP on ``images`` with the prompt "a photo of a {word}"."""
    weights = zero_shot_weights(model, Tokenizer(), list(words))
    return (zero_shot_predict(model, images, weights) == labels).float().mean().item()
