"""vfm_course: the tested helper package behind the VFM Course notebooks.

Every kernel the lessons build from scratch lives here too, tested equal to the production
implementation it teaches (torch, timm, torchvision, torchmetrics).

Layers, lowest first; a module imports only from its own subpackage or a lower one (a test
reads the imports and fails on one that points up, or on a private name taken from another
module)::

    core/        validation, profiles, config (de)serialisation, file checks, batched inference
    data/        the shapes world, scenes, captions, digits, real datasets, augment, loaders
    train/       the one engine (fit), optimiser rule, distributed, checkpoints
    layers/      attention, patches, position embeddings, blocks, masking, LoRA
    models/      ViT (+ timm twin, dense features), CNN, text tower, CLIP, SimCLR, MAE, registry
    objectives/  supervised, contrastive, CLIP, MAE, distillation, adversarial
    dense/       boxes, matching, CenterNet, segmentation heads
    eval/        classification and dense metrics, probes, zero-shot, profiling
    recipes/     the recipes that make the shipped checkpoints, one runner and CLI
    course/      exercises and checkers, grader, student notebooks, book, pictures, widgets

Conventions, one per kind of thing:

- a model is built from a frozen config dataclass or a preset name: ``Model(cfg)``; its
  ``forward`` returns a tensor (logits or features), except the self-supervised wrappers, whose
  ``forward`` returns their loss first (MAE: ``(loss, pred, mask)``);
- a loss function returns a scalar tensor; a ``loss_fn(model, batch)`` for :func:`fit` returns
  a scalar tensor or ``(loss, logs)`` with ``logs`` a dict of floats to record;
- inference goes through :func:`vfm_course.core.predict` (batched, no gradients, eval mode,
  outputs on the CPU) and :func:`vfm_course.core.eval_mode` (restores the model's mode);
- the image encoder inside any wrapper is found with :func:`vfm_course.models.backbone`;
- inputs are validated once, at the lowest public function or constructor that owns the
  invariant, with the helpers in :mod:`vfm_course.core.validate`.

Shape key (used in every docstring and shape comment in this package)::

    B  batch size                 C  image channels           H, W  image height, width
    P  patch size (pixels/side)   N  number of patches        Gh, Gw  patch grid height, width
    L  sequence length (tokens, N plus any CLS token)         S  key/value sequence length
    D  model width (embed_dim)    h  attention heads          d  head width (D // h)
    F  MLP hidden width           K  number of classes        T  text tokens
    E  shared image-text embedding width (CLIP)               M  kept (visible) tokens (MAE)

The front door (imported lazily, so ``import vfm_course.layers`` stays light)::

    from vfm_course import get_profile, load_course_model, fit, TrainConfig, check_exercise
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FRONT_DOOR = {
    "get_profile": "vfm_course.core.profile",
    "load_course_model": "vfm_course.models.registry",
    "fit": "vfm_course.train.engine",
    "TrainConfig": "vfm_course.train.engine",
    "check_exercise": "vfm_course.course.exercises.registry",
}
__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str) -> Any:
    if name in _FRONT_DOOR:
        return getattr(importlib.import_module(_FRONT_DOOR[name]), name)
    raise AttributeError(f"module 'vfm_course' has no attribute {name!r}")
