"""What a graded answer may use: a static check of the answer cells' source before they run.

The exercises ask learners to write a piece the library already has (attention, NMS, the
NT-Xent loss, ...). An answer that calls the library's version, or the course's reference, is
not the learner's work, and no output comparison can tell it apart from a correct answer. So the
grader reads the answer's code first (its syntax tree, after IPython's own transforms) and gives
the exercise zero, with the reason, when it

* names the exercise's library or reference implementation (:attr:`Exercise.forbidden` and the
  reference functions' names), as a name or an attribute (``F.scaled_dot_product_attention``);
* imports anything but the building blocks (:data:`ALLOWED_IMPORTS`);
* runs code the grader cannot read (``exec``, ``eval``, ``compile``, ``__import__``, IPython
  magics and shell lines, ...) or reaches objects by computed names (``getattr``, ``globals``,
  ``vars``, dunder and private attributes such as ``__dict__``, ``__globals__``, ``torch._C``).

The answers the solution notebooks hold pass it (tested), so an honest answer written with
torch's tensor operations is never refused. A check of source cannot be complete in Python,
which is why the grading notebook also removes the reference names from the kernel and runs
inside the sandbox (:mod:`.sandbox`), with the expected results never inside it.
"""

from __future__ import annotations

import ast

from IPython.core.inputtransformer2 import TransformerManager

from ..exercises.exercise import Exercise

ALLOWED_IMPORTS = frozenset(
    {"torch", "math", "numpy", "typing", "collections", "itertools", "dataclasses", "warnings"}
)
# torch.ops / torch._C reach every kernel, torch.nn.functional's attention included.
FORBIDDEN_TORCH_ATTRIBUTES = frozenset({"ops", "library", "hub", "jit", "compile", "utils"})
FORBIDDEN_CALLS = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "getattr",
        "setattr",
        "delattr",
        "vars",
        "globals",
        "locals",
        "open",
        "breakpoint",
        "input",
        "get_ipython",
        "exit",
        "quit",
    }
)
ALLOWED_DUNDERS = frozenset({"__init__", "__call__", "__name__"})


def forbidden_names(ex: Exercise) -> frozenset[str]:
    """The names an answer to ``ex`` may not use: its reference functions and the library
    implementations of the same idea."""
    return frozenset(ex.forbidden) | {r.__name__ for r in ex.references}


def violations(sources: list[str], ex: Exercise) -> list[str]:
    """Why the answer cells ``sources`` may not be graded as the learner's own work (empty
    when they may). A cell that is not valid Python is left to run and fail on its own."""
    transform = TransformerManager().transform_cell
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(transform(source)))
        except SyntaxError:
            pass
    # A helper the learner wrote and named like the library's (say their own box_area) is
    # their code; the kernel has the library's names removed before the answers run.
    own = {name for tree in trees for node in ast.walk(tree) for name in _bound(node)}
    forbidden = forbidden_names(ex) - own
    found = [v for tree in trees for node in ast.walk(tree) for v in _check(node, ex, forbidden)]
    return list(dict.fromkeys(found))  # each reason once, in order


def _bound(node: ast.AST) -> list[str]:
    """The names ``node`` binds in the answer's own code."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    return []


def _check(node: ast.AST, ex: Exercise, forbidden: frozenset[str]) -> list[str]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        bad = [m for m in modules if (m or "").split(".")[0] not in ALLOWED_IMPORTS]
        if isinstance(node, ast.ImportFrom) and node.level:
            bad.append("a relative import")
        imported = [a.name for a in node.names]
        out = [f"imports {m}; graded answers may import only {_allowed()}" for m in bad]
        return out + [_library(n, ex) for n in imported if n in forbidden_names(ex)]
    if isinstance(node, ast.Name):
        if node.id == "get_ipython":
            return ["uses IPython magics or shell commands, which graded answers may not use"]
        if node.id in FORBIDDEN_CALLS:
            return [f"uses {node.id}(), which graded answers may not use (it hides what runs)"]
        if node.id in forbidden:
            return [_library(node.id, ex)]
        if node.id.startswith("__") and node.id not in ALLOWED_DUNDERS:
            return [f"uses {node.id}, which graded answers may not use"]
    if isinstance(node, ast.Attribute):
        if node.attr in forbidden:
            return [_library(node.attr, ex)]
        if node.attr.startswith("_") and node.attr not in ALLOWED_DUNDERS:
            return [f"uses the private attribute .{node.attr}, which graded answers may not use"]
        root = node.value
        if isinstance(root, ast.Name) and root.id == "torch":
            if node.attr in FORBIDDEN_TORCH_ATTRIBUTES:
                return [f"uses torch.{node.attr}, which graded answers may not use"]
    return []


def _library(name: str, ex: Exercise) -> str:
    return (
        f"uses {name}, the library's own version of what exercise {ex.name!r} asks you to "
        "write: the answer must compute it with tensor operations"
    )


def _allowed() -> str:
    return ", ".join(sorted(ALLOWED_IMPORTS))
