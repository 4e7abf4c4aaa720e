"""What an exercise is: where it lives, how it is checked, what stands in for it, and how the
grader tests it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HiddenCase:
    """One graded call: ``call`` is a Python expression using the learner's function names,
        ``_torch`` (torch), ``_g`` (a ``torch.Generator`` seeded per exercise) and
    ``_AugmentConfig``."""

    label: str
    call: str


@dataclass(frozen=True)
class Exercise:
    name: str
    notebook: str  # the lesson notebook's file name without ".ipynb"
    functions: tuple[str, ...]  # the learner's function names, in the checker's order
    cells: tuple[str, ...]  # ids of the answer cells (the ones holding BEGIN/END SOLUTION)
    checker: Callable[..., Any]  # raises AssertionError with a hint when the answer is wrong
    references: tuple[Callable[..., Any], ...]  # same order and signatures as ``functions``
    hidden: tuple[HiddenCase, ...]
    seed: int  # seeds the hidden cases' generator
    # Library implementations of the same idea, which a graded answer may not call (beside the
    # reference functions themselves; see vfm_course.course.grading.policy).
    forbidden: tuple[str, ...] = ()
