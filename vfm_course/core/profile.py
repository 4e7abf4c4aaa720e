"""One switch between the tiny CPU profile and the full GPU profile.

``VFM_PROFILE=tiny|full`` picks the profile; without it, ``full`` is used when CUDA is present
and ``tiny`` otherwise. ``VFM_DEVICE=cpu|cuda|mps`` overrides the device choice. Notebooks read
every size from the profile, so nothing is written twice for the two profiles.

A third profile, ``smoke``, is for CI alone: the tiny profile's data and models with a tenth of
its live training steps. ``make test`` runs the student notebooks with it. They are stored
without outputs, so nbval only checks that every cell runs (the stand-ins, the checkers'
fallbacks, the cells after them), which a short run checks as well as a long one; the
solution notebooks, whose printed results nbval compares, run in the tiny profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from .validate import check_choice

PROFILE_NAMES = ("tiny", "full", "smoke")


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets for one profile.

    ``live_steps`` is the short, in-notebook training budget (a fixed number of optimizer
    steps, not seconds, so the same run prints the same numbers).
    """

    name: str
    dataset: str  # "shapes" (offline, generated) or "cifar10" (torchvision download)
    image_size: int
    n_train: int
    n_test: int
    batch_size: int
    live_steps: int
    vit_preset: str


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        dataset="shapes",
        image_size=32,
        n_train=20_000,
        n_test=2_000,
        batch_size=128,
        live_steps=300,
        vit_preset="vit_course_tiny",
    ),
    "full": Profile(
        name="full",
        dataset="cifar10",
        image_size=32,
        n_train=50_000,
        n_test=10_000,
        batch_size=256,
        live_steps=3_000,
        vit_preset="vit_course_small",
    ),
}
PROFILES["smoke"] = replace(PROFILES["tiny"], name="smoke", live_steps=30)


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the best device: ``preferred`` or ``$VFM_DEVICE`` if set, else cuda > mps > cpu."""
    name = preferred or os.environ.get("VFM_DEVICE")
    if name:
        check_choice(name, "device", ("cpu", "cuda", "mps"))
        if name == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU here")
        if name == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for, but this machine has no Apple GPU")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_profile(name: str | None = None) -> Profile:
    """Return the profile named ``name``, else ``$VFM_PROFILE``, else full on CUDA / tiny."""
    name = name or os.environ.get("VFM_PROFILE")
    if name is None:
        name = "full" if torch.cuda.is_available() else "tiny"
    check_choice(name, "VFM_PROFILE", PROFILE_NAMES)
    return PROFILES[name]
