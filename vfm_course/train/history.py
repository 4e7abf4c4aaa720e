"""What a training run leaves behind: the loss (and logged extras) per step, the evaluations, the
learning rate and the wall time; it round-trips through a checkpoint as a plain dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """What happened during training: per-step logs, evaluations, and wall time."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    def record(self, step: int, loss: float, lr: float, extra: Mapping[str, float]) -> None:
        self.steps.append(step)
        self.loss.append(loss)
        self.lr.append(lr)
        for k, v in extra.items():
            self.logs.setdefault(k, []).append(float(v))

    def record_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.eval_steps.append(step)
        for k, v in metrics.items():
            self.evals.setdefault(k, []).append(float(v))

    @property
    def final(self) -> dict[str, float]:
        """The last evaluation's metrics (empty if none ran)."""
        return {k: v[-1] for k, v in self.evals.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        return cls(**d)
