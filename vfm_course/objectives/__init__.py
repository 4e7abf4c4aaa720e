"""What a model is trained to do: each objective is a loss plus a ``loss_fn(model, batch)`` for the
engine.
"""

from .adversarial import ATTACKS, adversarial_loss_fn, fgsm, pgd, robust_accuracy
from .clip import clip_loss, clip_loss_fn
from .contrastive import (
    alignment_loss,
    embedding_std,
    nt_xent_logits,
    nt_xent_loss,
    simclr_loss_fn,
)
from .dino import (
    collapse_stats,
    dino_after_step,
    dino_cross_entropy,
    dino_loss_fn,
    koleo_loss,
    max_entropy,
    teacher_targets,
    update_center,
)
from .distillation import distillation_loss, distillation_loss_fn
from .mae import mae_loss_fn
from .supervised import classification_loss
