"""What a submitted notebook gives the grader: the name it is reported under and the source of
each answer cell, made safe to write into a grading notebook."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from ..exercises.exercise import Exercise


def answer_cells(
    submission: nbformat.NotebookNode, ex: Exercise, file_ids: list[str] | None = None
) -> list[str]:
    """The submission's source for each of the exercise's answer cells (KeyError if missing
    or if ``file_ids``, the cell ids as the file holds them, repeat one)."""
    by_id = {c.get("id"): c for c in submission.cells if c.get("cell_type") == "code"}
    missing = [cell_id for cell_id in ex.cells if cell_id not in by_id]
    if missing:
        raise KeyError(f"answer cell {', '.join(missing)} is missing")
    # Two cells with an answer's id: which one is the answer is not for the grader to guess.
    # nbformat renames the later copies while reading, so the file's own ids are checked: the
    # first copy may be a collapsed cell near the top, not the visible answer.
    ids = file_ids if file_ids is not None else [c.get("id") for c in submission.cells]
    repeated = [cell_id for cell_id in ex.cells if ids.count(cell_id) > 1]
    if repeated:
        raise KeyError(
            f"answer cell {', '.join(repeated)} appears more than once; keep one cell with "
            f"that id (a copied cell keeps its id: delete the copy)"
        )
    # A lone surrogate (valid in a notebook's JSON, not in UTF-8) would stop the grading
    # notebook from being written at all; as "?" the rest of the answer is still graded.
    return [_utf8(str(by_id[cell_id].source)) for cell_id in ex.cells]


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def student_name(path: Path) -> str:
    """The name a submission is reported under: its file name without ``.ipynb``, printable
    and on one line. Bytes that are not UTF-8 and control characters (a newline could forge a
    row of grades.md) are written as escapes, e.g. ``caf\\xe9``."""
    name = os.fsencode(path.name).decode("utf-8", "backslashreplace").removesuffix(".ipynb")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)
