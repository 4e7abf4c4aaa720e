"""The course's exercises: one registry, used by the notebooks, the student versions and the grader.

An exercise is a function the learner writes in a lesson notebook. In the solution notebooks its
body sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION``; the student notebooks replace that
part with ``raise NotImplementedError`` (see :mod:`vfm_course.course.student`). Each lesson's
module here (``attention``, ``vit``, ``contrastive``, ``mae``, ``finetune``, ``detection``,
``self_distillation``) defines its checkers and its :class:`Exercise` entries side by side; a
lesson's larger checkers live in their own module beside it (``augmentation`` for lesson 03,
``robustness`` for 05, ``centernet`` for 06). Each entry ties together:

* where it lives: the notebook and the ids of its answer cells;
* the learner's function names and the ``check_*`` function giving instant feedback;
* the package's reference implementation with the same signature, which the rest of the lesson
  uses while the learner's version is unfinished or wrong, so a lesson always runs top to bottom;
* the hidden cases the grader runs (:mod:`vfm_course.course.grading`): calls on inputs drawn from a
  seeded generator, whose printed :func:`fingerprint` is compared outside the learner's kernel.

In a notebook, the cell after an exercise reads::

    my_attention = check_exercise("attention", my_attention)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import attention, contrastive, detection, finetune, mae, self_distillation, vit
from .exercise import Exercise

# Lesson order.
LESSONS = (attention, vit, contrastive, mae, finetune, detection, self_distillation)
EXERCISES: dict[str, Exercise] = {e.name: e for lesson in LESSONS for e in lesson.EXERCISES}
# The cell up to which the grader runs a lesson's reference notebook before the exercises.
SETUP_CELLS: dict[str, str] = {lesson.NOTEBOOK: lesson.SETUP_CELL for lesson in LESSONS}


def exercises_of(notebook: str) -> list[Exercise]:
    """The exercises of one lesson notebook (its file name, with or without ".ipynb")."""
    stem = notebook.removesuffix(".ipynb")
    return [e for e in EXERCISES.values() if e.notebook == stem]


# ----------------------------------------------------------------------------- checking


def _learner_version(fn: Any) -> Any:
    # A name that already holds the reference stand-in (the check cell ran before) is checked
    # on the learner's own function again, never on the reference.
    return getattr(fn, "__vfm_learner__", fn)


def _stand_in(reference: Callable[..., Any], learner: Any) -> Callable[..., Any]:
    @functools.wraps(reference)
    def reference_stand_in(*args: Any, **kwargs: Any) -> Any:
        return reference(*args, **kwargs)

    reference_stand_in.__vfm_learner__ = learner  # type: ignore[attr-defined]
    return reference_stand_in


def check_exercise(name: str, *fns: Any) -> Any:
    """Check the learner's function(s) for exercise ``name`` and say what the next cells use.

    Prints the checker's verdict: "✓ ..." when right; otherwise "✗" with what is wrong and a
    hint, or that the exercise is not finished yet. Never raises for a wrong or unfinished
    answer: it returns the function(s) the rest of the lesson should use, the learner's when the
    check passes and the package's reference otherwise, so the notebook still runs top to bottom.
    Returns one function, or a tuple when the exercise has several.
    """
    if name not in EXERCISES:
        raise KeyError(f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    ex = EXERCISES[name]
    if len(fns) != len(ex.functions):
        raise TypeError(
            f"exercise {name!r} checks {len(ex.functions)} function(s) "
            f"({', '.join(ex.functions)}), got {len(fns)}"
        )
    learner = tuple(_learner_version(f) for f in fns)
    try:
        ex.checker(*learner)
        use = learner
    except Exception as exc:  # a wrong answer (AssertionError) or a checker tripped by it
        print(f"✗ {exc}")
        where = ", ".join(f"{r.__module__}.{r.__qualname__}" for r in ex.references)
        print(
            f"→ Until this check passes, the cells below use the course's reference ({where}), "
            f"so the rest of the lesson still runs."
        )
        use = tuple(_stand_in(r, f) for r, f in zip(ex.references, learner, strict=True))
    return use[0] if len(use) == 1 else use
