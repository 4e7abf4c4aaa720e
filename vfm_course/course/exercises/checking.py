"""Exercise checkers: instant, learner-worded feedback for the notebooks' exercises.

Every ``check_<exercise>(fn, ...)`` follows the same contract, shared by notebooks and tests:

* it calls the learner's ``fn`` on hidden inputs it draws itself (several shapes, masks where
  they matter) from a private seeded generator, so it neither reads nor disturbs the notebook's
  variables or random stream;
* it compares the result with the package's reference implementation within float tolerance;
* on success it prints one line starting with "✓" and returns ``True``;
* on failure it raises ``AssertionError`` with what went wrong and a hint. Common mistakes are
  recognised by comparing the answer with known-wrong variants (missing 1/sqrt(d) scale,
  softmax over the wrong dimension, mask ignored, ...);
* errors raised inside ``fn`` are caught and explained (with the learner's line that raised),
  never shown as a bare stack trace; ``NotImplementedError`` means "exercise not finished yet".

New checkers reuse the private helpers below (``_run``, ``_expect_tensor``, ``_diagnose``,
``_fail``, ``_passed``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch

ATOL, RTOL = 1e-5, 1e-4

# Substrings of common torch errors -> what they usually mean in an exercise.
ERROR_HINTS = {
    "view size is not compatible": "after a transpose/permute the tensor is not contiguous: "
    "use .reshape(...) (or .contiguous().view(...)) instead of .view(...)",
    "cannot be multiplied": "the shapes of a matmul do not line up: print the shapes of both "
    "operands; to multiply q by k's rows use k.transpose(-2, -1)",
    "must match the size of tensor": "two tensors' shapes do not broadcast: print their shapes",
    "not defined": "a name is missing: did you run the cells above (imports, helpers) first?",
}


# --- reporting helpers -------------------------------------------------------------------------


def fail(exercise: str, problem: str, hint: str | None = None) -> NoReturn:
    """Raise the learner-facing AssertionError (without chaining the internal traceback)."""
    message = f"{exercise}: {problem}"
    if hint:
        message += f"\nHint: {hint}"
    raise AssertionError(message) from None


def passed(message: str) -> bool:
    print(f"✓ {message}")
    return True


def learner_line(exc: BaseException, fn: Callable[..., Any]) -> str:
    """'line 7: scores = q @ k.T' for the innermost frame inside the learner's function."""
    code = getattr(fn, "__code__", None)
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if code is not None and f.filename == code.co_filename]
    if not mine:
        return ""
    frame = mine[-1]
    source = (frame.line or "").strip()
    return f" (at line {frame.lineno}: {source})" if source else f" (at line {frame.lineno})"


def call_learner(exercise: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call the learner's ``fn(*args)``; turn any exception into a learner-facing failure.

    Tensors are passed as copies, so an answer that edits its inputs in place (``q /= ...``)
    cannot change the inputs the reference is computed on.
    """
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__}")
    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    try:
        return fn(*args)
    except NotImplementedError:
        fail(
            exercise,
            "exercise not finished yet",
            "replace `raise NotImplementedError` with your code, run that cell, then this one",
        )
    except Exception as exc:  # the learner's code can raise anything: explain it, don't crash
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        hint = next((h for key, h in ERROR_HINTS.items() if key in str(exc)), None)
        fail(
            exercise,
            f"your function raised {type(exc).__name__}: {exc}{learner_line(exc, fn)}"
            f"\n(called with tensors of shape {shapes})",
            hint,
        )


def expect_tensor(
    exercise: str, out: object, shape: tuple[int, ...], hint: str | None = None
) -> torch.Tensor:
    """Check the answer is one tensor of ``shape``; return it."""
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        fail(exercise, f"your function returned a tuple of {len(out)}; return one tensor")
    if not isinstance(out, torch.Tensor):
        fail(exercise, f"your function returned {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != tuple(shape):
        fail(exercise, f"output has shape {tuple(out.shape)}, expected {tuple(shape)}", hint)
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a = a.detach().to(device=b.device, dtype=b.dtype)  # a float64 answer is fine too
    return torch.allclose(a, b, atol=ATOL, rtol=RTOL, equal_nan=True)


def diagnose(
    exercise: str,
    out: torch.Tensor,
    expected: torch.Tensor,
    wrong_variants: Mapping[str, torch.Tensor],
    case: str,
) -> None:
    """Pass if ``out`` matches ``expected``; else fail with the hint of a matching wrong variant."""
    if close(out, expected):
        return
    for hint, wrong in wrong_variants.items():
        if close(out, wrong):
            fail(exercise, f"wrong values {case}", hint)
    if not torch.isfinite(out).all():
        fail(
            exercise,
            f"output contains NaN or inf {case}",
            "a softmax over a row of only -inf gives NaN; exp of large scores overflows "
            "(subtract the row max first)",
        )
    err = (out.detach().to(expected.dtype) - expected).abs().max().item()
    fail(
        exercise,
        f"wrong values {case}: max |yours - reference| = {err:.3g}",
        "compare your intermediate shapes and values with the step-by-step cells above",
    )


def randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)
