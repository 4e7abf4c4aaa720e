"""The course's exercises: one registry, used by the notebooks, the student versions and the grader.

An exercise is a function the learner writes in a lesson notebook. In the solution notebooks its
body sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION``; the student notebooks replace that
part with ``raise NotImplementedError`` (see :mod:`vfm_course.student`). Each :class:`Exercise`
ties together:

* where it lives: the notebook and the ids of its answer cells;
* the learner's function names and the ``checks.check_*`` function giving instant feedback;
* the package's reference implementation with the same signature, which the rest of the lesson
  uses while the learner's version is unfinished or wrong, so a lesson always runs top to bottom;
* the hidden cases the grader runs (:mod:`vfm_course.grading`): calls on inputs drawn from a
  seeded generator, whose printed :func:`fingerprint` is compared outside the learner's kernel.

In a notebook, the cell after an exercise reads::

    my_attention = check_exercise("attention", my_attention)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import checks
from .attention import chunked_attention, merge_heads, scaled_dot_product_attention, split_heads
from .clip import clip_loss
from .contrastive import nt_xent_loss
from .detection import box_convert, box_iou, nms
from .finetune import distillation_loss, fgsm
from .mae import masked_patch_loss
from .masking import random_masking
from .patches import patchify
from .pos_embed import sincos_pos_embed_2d

# ----------------------------------------------------------------------------- references
# The package's implementations, wrapped to the exact signatures the notebooks ask for.


def attention_reference(q, k, v, mask=None):
    """(B, h, L, d), (B, h, S, d), (B, h, S, dv), bool mask (True = may attend) -> (B, h, L, dv)."""
    return scaled_dot_product_attention(q, k, v, attn_mask=mask)


def online_attention_reference(q, k, v, chunk_size=64):
    """Attention over key/value chunks with an online softmax -> (B, h, L, dv)."""
    return chunked_attention(q, k, v, chunk_size=chunk_size)


def random_masking_reference(x, mask_ratio, noise):
    """(B, N, D) tokens -> kept (B, N_keep, D), mask (B, N), ids_restore (B, N)."""
    kept, mask, ids_restore, _ = random_masking(x, mask_ratio, noise)
    return kept, mask, ids_restore


def lora_forward_reference(x, weight, bias, lora_A, lora_B, scaling):
    """x (..., in) -> (..., out): the frozen layer plus the scaled low-rank update, the formula of
    :meth:`vfm_course.finetune.LoRALinear.forward` with its weights passed in."""
    base = torch.nn.functional.linear(x, weight, bias)  # (..., out)
    return base + (x @ lora_A.T) @ lora_B.T * scaling  # (..., r) -> (..., out)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class HiddenCase:
    """One graded call: ``call`` is a Python expression using the learner's function names,
    ``_torch`` (torch) and ``_g`` (a ``torch.Generator`` seeded per exercise)."""

    label: str
    call: str


@dataclass(frozen=True)
class Exercise:
    name: str
    notebook: str  # the lesson notebook's file name without ".ipynb"
    functions: tuple[str, ...]  # the learner's function names, in the checker's order
    cells: tuple[str, ...]  # ids of the answer cells (the ones holding BEGIN/END SOLUTION)
    checker: str  # name of the function in vfm_course.checks
    references: tuple[Callable[..., Any], ...]  # same order and signatures as ``functions``
    hidden: tuple[HiddenCase, ...]
    seed: int  # seeds the hidden cases' generator


def _randn(*shape: int) -> str:
    return f"_torch.randn({', '.join(map(str, shape))}, generator=_g)"


def _rand(*shape: int) -> str:
    return f"_torch.rand({', '.join(map(str, shape))}, generator=_g)"


_L01, _L02 = "01_attention_from_scratch", "02_vision_transformer"
_L03, _L04 = "03_contrastive_learning", "04_masked_autoencoders"
_L05, _L06 = "05_fine_tuning", "06_detection_segmentation"


def _boxes(n: int) -> str:
    """n valid "xyxy" boxes, drawn from ``_g``, that often overlap (corners within 16 pixels)."""
    corner, size = f"16 * {_rand(n, 2)}", f"8 + 16 * {_rand(n, 2)}"
    return f"(lambda xy, wh: _torch.cat([xy, xy + wh], 1))({corner}, {size})"


def _sized(n: int) -> str:
    """n boxes as (a, b, w, h) with w, h >= 1: valid in "xywh" and "cxcywh"."""
    return f"_torch.cat([48 * {_rand(n, 2)}, 1 + 16 * {_rand(n, 2)}], 1)"


def _clustered(n: int) -> str:
    """n "xyxy" boxes around 4 centres, many near-duplicates: NMS has work to do."""
    return (
        f"(lambda xy: _torch.cat([xy, xy + 10 + 4 * {_rand(n, 2)}], 1))"
        f"(20.0 * _torch.randint(0, 2, ({n}, 2), generator=_g) + 2 * {_randn(n, 2)})"
    )


# A small classifier of 3x4x4 images into 3 classes whose weights come from ``_g`` alone (not
# from torch's global random stream), so the grader's hidden FGSM cases are deterministic.
_SEEDED_MLP = (
    "_torch.nn.Sequential(_torch.nn.Flatten(), _torch.nn.Linear(48, 8), _torch.nn.Tanh(), "
    "_torch.nn.Linear(8, 3)).apply(lambda m: [p.data.normal_(generator=_g) "
    "for p in m.parameters(recurse=False)])"
)

EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        Exercise(
            "attention",
            _L01,
            ("my_attention",),
            ("ex1-solution",),
            "check_attention",
            (attention_reference,),
            (
                HiddenCase(
                    "no mask",
                    f"my_attention({_randn(2, 3, 5, 8)}, {_randn(2, 3, 7, 8)}, "
                    f"{_randn(2, 3, 7, 4)})",
                ),
                HiddenCase(
                    "boolean mask",
                    f"my_attention({_randn(2, 2, 6, 4)}, {_randn(2, 2, 6, 4)}, "
                    f"{_randn(2, 2, 6, 5)}, "
                    f"mask=({_rand(2, 1, 6, 6)} > 0.5) | _torch.eye(6, dtype=_torch.bool))",
                ),
            ),
            seed=7101,
        ),
        Exercise(
            "split_merge_heads",
            _L01,
            ("my_split_heads", "my_merge_heads"),
            ("ex2-split", "ex2-merge"),
            "check_split_merge_heads",
            (split_heads, merge_heads),
            (
                HiddenCase("split", f"my_split_heads({_randn(2, 5, 12)}, 3)"),
                HiddenCase("merge", f"my_merge_heads({_randn(2, 4, 5, 6)})"),
                HiddenCase("round trip", f"my_merge_heads(my_split_heads({_randn(3, 4, 8)}, 2))"),
            ),
            seed=7102,
        ),
        Exercise(
            "online_softmax_attention",
            _L01,
            ("my_online_attention",),
            ("ex3-solution",),
            "check_online_softmax_attention",
            (online_attention_reference,),
            (
                HiddenCase(
                    "chunks that do not divide S",
                    f"my_online_attention(2 * {_randn(2, 2, 6, 8)}, 2 * {_randn(2, 2, 11, 8)}, "
                    f"{_randn(2, 2, 11, 3)}, chunk_size=4)",
                ),
                HiddenCase(
                    "one chunk",
                    f"my_online_attention({_randn(1, 3, 5, 4)}, {_randn(1, 3, 9, 4)}, "
                    f"{_randn(1, 3, 9, 4)}, chunk_size=16)",
                ),
            ),
            seed=7103,
        ),
        Exercise(
            "patchify",
            _L02,
            ("my_patchify",),
            ("0b97bf2f",),
            "check_patchify",
            (patchify,),
            (
                HiddenCase("RGB, P=4", f"my_patchify({_rand(2, 3, 12, 12)}, 4)"),
                HiddenCase("gray, P=2", f"my_patchify({_rand(1, 1, 8, 8)}, 2)"),
            ),
            seed=7201,
        ),
        Exercise(
            "sincos_pos_embed_2d",
            _L02,
            ("my_sincos_2d",),
            ("5df406ee",),
            "check_sincos_pos_embed_2d",
            (sincos_pos_embed_2d,),
            (
                HiddenCase("D=16, G=3", "my_sincos_2d(16, 3)"),
                HiddenCase("D=8, G=5", "my_sincos_2d(8, 5)"),
            ),
            seed=7202,
        ),
        Exercise(
            "nt_xent",
            _L03,
            ("nt_xent",),
            ("fe0b2101",),
            "check_nt_xent",
            (nt_xent_loss,),
            (
                HiddenCase("temperature 0.5", f"nt_xent({_randn(6, 5)}, {_randn(6, 5)}, 0.5)"),
                HiddenCase("temperature 0.1", f"nt_xent({_randn(4, 8)}, {_randn(4, 8)}, 0.1)"),
            ),
            seed=7301,
        ),
        Exercise(
            "clip_loss",
            _L03,
            ("clip_loss",),
            ("362bfd34",),
            "check_clip_loss",
            (clip_loss,),
            (
                HiddenCase("5 pairs", f"clip_loss(3 * {_randn(5, 5)})"),
                HiddenCase("asymmetric logits", f"clip_loss({_randn(4, 4)} + 2 * _torch.eye(4))"),
            ),
            seed=7302,
        ),
        Exercise(
            "random_masking",
            _L04,
            ("my_random_masking",),
            ("9ead90cc",),
            "check_random_masking",
            (random_masking_reference,),
            (
                HiddenCase(
                    "ratio 0.75", f"my_random_masking({_randn(2, 16, 4)}, 0.75, {_rand(2, 16)})"
                ),
                HiddenCase(
                    "ratio 0.5", f"my_random_masking({_randn(3, 10, 2)}, 0.5, {_rand(3, 10)})"
                ),
            ),
            seed=7401,
        ),
        Exercise(
            "mae_loss",
            _L04,
            ("my_mae_loss",),
            ("68a1a05e",),
            "check_mae_loss",
            (masked_patch_loss,),
            (
                HiddenCase(
                    "half masked",
                    f"my_mae_loss({_randn(2, 8, 12)}, {_randn(2, 8, 12)}, "
                    f"(_torch.arange(8) % 2).float().expand(2, 8))",
                ),
                HiddenCase(
                    "random mask",
                    f"my_mae_loss({_randn(3, 6, 4)}, {_randn(3, 6, 4)}, "
                    f"(({_rand(3, 6)} > 0.4) | (_torch.arange(6) == 0)).float())",
                ),
            ),
            seed=7402,
        ),
        Exercise(
            "lora_forward",
            _L05,
            ("my_lora_forward",),
            ("ex1-lora-forward",),
            "check_lora_forward",
            (lora_forward_reference,),
            (
                HiddenCase(
                    "r=2, scaling 2",
                    f"my_lora_forward({_randn(2, 5, 8)}, {_randn(6, 8)}, {_randn(6)}, "
                    f"{_randn(2, 8)}, {_randn(6, 2)}, 2.0)",
                ),
                HiddenCase(
                    "r=1, scaling 0.5",
                    f"my_lora_forward({_randn(3, 4)}, {_randn(7, 4)}, {_randn(7)}, "
                    f"{_randn(1, 4)}, {_randn(7, 1)}, 0.5)",
                ),
            ),
            seed=7501,
        ),
        Exercise(
            "distillation_loss",
            _L05,
            ("my_distillation_loss",),
            ("ex2-distillation-loss",),
            "check_distillation_loss",
            (distillation_loss,),
            (
                HiddenCase(
                    "T=4, alpha 0.5",
                    f"my_distillation_loss(3 * {_randn(4, 6)}, 3 * {_randn(4, 6)}, "
                    f"_torch.randint(6, (4,), generator=_g), 4.0, 0.5)",
                ),
                HiddenCase(
                    "T=2, alpha 0.8",
                    f"my_distillation_loss(2 * {_randn(5, 3)}, 2 * {_randn(5, 3)}, "
                    f"_torch.randint(3, (5,), generator=_g), 2.0, 0.8)",
                ),
            ),
            seed=7502,
        ),
        Exercise(
            "fgsm",
            _L05,
            ("my_fgsm",),
            ("ex3-fgsm",),
            "check_fgsm",
            (fgsm,),
            (
                HiddenCase(
                    "epsilon 0.1",
                    f"my_fgsm({_SEEDED_MLP}, {_rand(3, 3, 4, 4)}, "
                    f"_torch.randint(3, (3,), generator=_g), 0.1)",
                ),
                HiddenCase(
                    "epsilon 0.03",
                    f"my_fgsm({_SEEDED_MLP}, {_rand(2, 3, 4, 4)}, "
                    f"_torch.randint(3, (2,), generator=_g), 0.03)",
                ),
            ),
            seed=7503,
        ),
        Exercise(
            "box_iou",
            _L06,
            ("my_box_iou",),
            ("ex1-box-iou",),
            "check_box_iou",
            (box_iou,),
            (
                HiddenCase("5 boxes against 4", f"my_box_iou({_boxes(5)}, {_boxes(4)})"),
                HiddenCase("3 boxes against 7", f"my_box_iou({_boxes(3)}, {_boxes(7)})"),
            ),
            seed=7601,
        ),
        Exercise(
            "nms",
            _L06,
            ("my_nms",),
            ("ex2-nms",),
            "check_nms",
            (nms,),
            (
                HiddenCase("25 boxes, IoU 0.5", f"my_nms({_clustered(25)}, {_rand(25)}, 0.5)"),
                HiddenCase("40 boxes, IoU 0.3", f"my_nms({_clustered(40)}, {_rand(40)}, 0.3)"),
            ),
            seed=7602,
        ),
        Exercise(
            "box_convert",
            _L06,
            ("my_box_convert",),
            ("ex3-box-convert",),
            "check_box_convert",
            (box_convert,),
            (
                HiddenCase("cxcywh to xyxy", f"my_box_convert({_sized(6)}, 'cxcywh', 'xyxy')"),
                HiddenCase("xyxy to xywh", f"my_box_convert({_boxes(6)}, 'xyxy', 'xywh')"),
                HiddenCase("xywh to cxcywh", f"my_box_convert({_sized(5)}, 'xywh', 'cxcywh')"),
            ),
            seed=7603,
        ),
    ]
}


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
        getattr(checks, ex.checker)(*learner)
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


# ----------------------------------------------------------------------------- grading output

# The grader pastes this source into every hidden check cell, so the printed fingerprint is made
# by code in that cell, not by a function the learner's code could have replaced beforehand.
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


def _run_case(ex: Exercise, case: HiddenCase, functions: tuple[Any, ...], seed: int) -> Any:
    namespace: dict[str, Any] = {"_torch": torch, "_g": torch.Generator().manual_seed(seed)}
    namespace.update(zip(ex.functions, functions, strict=True))
    return eval(case.call, namespace)


BOUNDARY_MARGIN = 0.02  # in units of the last printed digit: 2e-5 at 3 decimals


def boundary_margin(value: Any) -> float:
    """How far (in units of 1e-3) the closest printed value is from a rounding boundary."""
    margins = [abs(x * 1000 - math.floor(x * 1000) - 0.5) for x in _printed_floats(value)]
    return min(margins, default=0.5)


@functools.cache
def hidden_seed(name: str) -> int:
    """The seed of exercise ``name``'s hidden inputs: the first from ``Exercise.seed`` on for
    which every value the reference prints is at least ``BOUNDARY_MARGIN`` from a rounding
    boundary. Text comparison at 3 decimals would otherwise fail an equally correct answer
    whose float error (about 1e-6 here) crossed the boundary."""
    ex = EXERCISES[name]
    for seed in range(ex.seed, ex.seed + 1000):
        if all(
            boundary_margin(_run_case(ex, case, ex.references, seed)) > BOUNDARY_MARGIN
            for case in ex.hidden
        ):
            return seed
    raise RuntimeError(f"no boundary-safe seed for exercise {name!r} in 1000 tries")


def hidden_cell_source(ex: Exercise, case: HiddenCase) -> str:
    """Source of the grader's hidden cell for one case: draws the inputs and prints the
    fingerprint of the learner's result (``# NBVAL_CHECK_OUTPUT``: nbval compares it)."""
    return (
        "# NBVAL_CHECK_OUTPUT\n"
        f"# hidden check {ex.name}: {case.label} (added by the grader)\n"
        "import torch as _torch\n\n"
        f"{FINGERPRINT_SOURCE}\n"
        f"_g = _torch.Generator().manual_seed({hidden_seed(ex.name)})\n"
        f"print(_fingerprint({case.call}))\n"
    )


def reference_outputs(ex: Exercise) -> list[str]:
    """What each hidden cell prints for the reference implementation (the expected text)."""
    seed = hidden_seed(ex.name)
    return [fingerprint(_run_case(ex, case, ex.references, seed)) + "\n" for case in ex.hidden]
