"""Hidden inputs of the graded cases, as Python expressions the grader's cells
evaluate with ``_torch`` (torch), ``_g`` (a ``torch.Generator`` seeded per exercise) and
``_AugmentConfig``.
"""

from __future__ import annotations


def randn_expr(*shape: int) -> str:
    return f"_torch.randn({', '.join(map(str, shape))}, generator=_g)"


def rand_expr(*shape: int) -> str:
    return f"_torch.rand({', '.join(map(str, shape))}, generator=_g)"


def boxes_expr(n: int) -> str:
    """n valid "xyxy" boxes, drawn from ``_g``, that often overlap (corners within 16 pixels)."""
    corner, size = f"16 * {rand_expr(n, 2)}", f"8 + 16 * {rand_expr(n, 2)}"
    return f"(lambda xy, wh: _torch.cat([xy, xy + wh], 1))({corner}, {size})"


def sized_expr(n: int) -> str:
    """n boxes as (a, b, w, h) with w, h >= 1: valid in "xywh" and "cxcywh"."""
    return f"_torch.cat([48 * {rand_expr(n, 2)}, 1 + 16 * {rand_expr(n, 2)}], 1)"


def clustered_expr(n: int) -> str:
    """n "xyxy" boxes around 4 centres, many near-duplicates: NMS has work to do."""
    return (
        f"(lambda xy: _torch.cat([xy, xy + 10 + 4 * {rand_expr(n, 2)}], 1))"
        f"(20.0 * _torch.randint(0, 2, ({n}, 2), generator=_g) + 2 * {randn_expr(n, 2)})"
    )


# A small classifier of 3x4x4 images into 3 classes whose weights come from ``_g`` alone (not
# from torch's global random stream), so the grader's hidden FGSM cases are deterministic.
SEEDED_MLP_EXPR = (
    "_torch.nn.Sequential(_torch.nn.Flatten(), _torch.nn.Linear(48, 8), _torch.nn.Tanh(), "
    "_torch.nn.Linear(8, 3)).apply(lambda m: [p.data.normal_(generator=_g) "
    "for p in m.parameters(recurse=False)])"
)
