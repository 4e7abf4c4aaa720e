"""The grader's hidden check cells: the fingerprint they print and the seeds of their inputs."""

from __future__ import annotations

import functools
import math
import secrets
from typing import Any

import torch

from ...data.augment import AugmentConfig
from ..exercises.exercise import Exercise, HiddenCase
from ..exercises.registry import EXERCISES

# ----------------------------------------------------------------------------- grading output

# The grader pastes this source into every hidden check cell, so the printed fingerprint is made
# by code in that cell, not by a function the learner's code could have replaced beforehand.
# (A replaced print gains nothing either: the right fingerprint needs the right answer.)
FINGERPRINT_SOURCE = '''\
def _fingerprint(value, digits=3):
    """A line of rounded numbers summarising a result; compared as text outside the kernel."""
    def fmt(v):
        return f"{round(float(v), digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"
    if isinstance(value, (tuple, list)):
        return " || ".join(_fingerprint(v, digits) for v in value)
    if not isinstance(value, _torch.Tensor):
        return f"{type(value).__name__} {fmt(value)}"
    t = value.detach().cpu()
    head = f"{tuple(t.shape)}"
    if t.dtype == _torch.bool or not t.is_floating_point():
        flat = t.long().reshape(-1)
        return f"{head} int sum {int(flat.sum())} values {flat[:12].tolist()}"
    flat = t.double().reshape(-1)
    picks = flat[:: max(1, flat.numel() // 8)][:8]
    return (
        f"{head} float sum {fmt(flat.sum())} abs {fmt(flat.abs().sum())} "
        f"values {[fmt(v) for v in picks]}"
    )
'''


def fingerprint(value: Any, digits: int = 3) -> str:
    """The line a hidden check cell prints for ``value`` (tensor, number, or tuple of them)."""
    namespace: dict[str, Any] = {"_torch": torch}
    exec(FINGERPRINT_SOURCE, namespace)  # the very code the hidden cells run
    return namespace["_fingerprint"](value, digits)


def _printed_floats(value: Any) -> list[float]:
    """The float values the fingerprint prints at 3 decimals (same picks as its source)."""
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _printed_floats(v)]
    if not isinstance(value, torch.Tensor):
        return [float(value)]
    if not value.is_floating_point():
        return []
    flat = value.detach().cpu().double().reshape(-1)
    picks = flat[:: max(1, flat.numel() // 8)][:8]
    return [float(flat.sum()), float(flat.abs().sum()), *picks.tolist()]


def hidden_namespace(seed: int) -> dict[str, Any]:
    """What a hidden case's expression may use besides the learner's functions: ``_torch``,
    ``_g`` (seeded) and ``_AugmentConfig`` (lesson 03's augmentation settings)."""
    return {
        "_torch": torch,
        "_g": torch.Generator().manual_seed(seed),
        "_AugmentConfig": AugmentConfig,
    }


def run_case(ex: Exercise, case: HiddenCase, functions: tuple[Any, ...], seed: int) -> Any:
    namespace = hidden_namespace(seed)
    namespace.update(zip(ex.functions, functions, strict=True))
    return eval(case.call, namespace)


BOUNDARY_MARGIN = 0.02  # in units of the last printed digit: 2e-5 at 3 decimals


def boundary_margin(value: Any) -> float:
    """How far (in units of 1e-3) the closest printed value is from a rounding boundary."""
    margins = [abs(x * 1000 - math.floor(x * 1000) - 0.5) for x in _printed_floats(value)]
    return min(margins, default=0.5)


@functools.cache
def hidden_seed(name: str, start: int | None = None) -> int:
    """The seed of exercise ``name``'s hidden inputs: the first from ``start`` (default
    ``Exercise.seed``) on for which every value the reference prints is at least
    ``BOUNDARY_MARGIN`` from a rounding boundary. Text comparison at 3 decimals would otherwise
    fail an equally correct answer whose float error (about 1e-6 here) crossed the boundary.
    The grader starts from a secret number drawn for each run (:func:`draw_hidden_seeds`)."""
    ex = EXERCISES[name]
    start = ex.seed if start is None else start
    for seed in range(start, start + 1000):
        if all(
            boundary_margin(run_case(ex, case, ex.references, seed)) > BOUNDARY_MARGIN
            for case in ex.hidden
        ):
            return seed
    raise RuntimeError(f"no boundary-safe seed for exercise {name!r} in 1000 tries")


def draw_hidden_seeds(names: list[str]) -> dict[str, int]:
    """A fresh, secret hidden seed for each exercise in ``names``, for one grading run. The
    inputs of the hidden cells are then known to nobody before the run (the package ships
    only the lesson's own seeds), so answers cannot be precomputed into a lookup table."""
    return {name: hidden_seed(name, secrets.randbelow(2**62)) for name in names}


def hidden_cell_source(ex: Exercise, case: HiddenCase, seed: int | None = None) -> str:
    """Source of the grader's hidden cell for one case: draws the inputs and prints the
    fingerprint of the learner's result (the grader compares it with the reference's).

    The learner's function runs with its own printing and warnings silenced: nbval compares
    everything the cell shows, so a correct answer with a debug ``print`` or one that triggers
    a library warning would otherwise read as a wrong result. A name the answer cell bound to
    the checker's reference stand-in (``my_f = check_exercise(...)`` pasted into it) is graded
    on the learner's own function inside it, as the checker itself does. ``seed`` defaults to
    :func:`hidden_seed`'s."""
    seed = hidden_seed(ex.name) if seed is None else seed
    return (
        f"# hidden check {ex.name}: {case.label} (added by the grader)\n"
        "import contextlib as _contextlib, io as _io, warnings as _warnings\n"
        "import torch as _torch\n"
        "from vfm_course.data.augment import AugmentConfig as _AugmentConfig\n\n"
        f"{FINGERPRINT_SOURCE}\n"
        f"for _name in {tuple(ex.functions)!r}:\n"
        '    if hasattr(globals().get(_name), "__vfm_learner__"):\n'
        "        globals()[_name] = globals()[_name].__vfm_learner__\n"
        f"_g = _torch.Generator().manual_seed({seed})\n"
        "with _warnings.catch_warnings(), _contextlib.redirect_stdout(_io.StringIO()), "
        "_contextlib.redirect_stderr(_io.StringIO()):\n"
        '    _warnings.simplefilter("ignore")\n'
        f"    _result = {case.call}\n"
        "print(_fingerprint(_result))\n"
    )


def reference_outputs(ex: Exercise, seed: int | None = None) -> list[str]:
    """What each hidden cell prints for the reference implementation (the expected text), for
    inputs drawn from ``seed`` (default :func:`hidden_seed`'s)."""
    seed = hidden_seed(ex.name) if seed is None else seed
    return [fingerprint(run_case(ex, case, ex.references, seed)) + "\n" for case in ex.hidden]
