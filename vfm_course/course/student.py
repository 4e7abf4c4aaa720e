"""Student versions of the lesson notebooks: the same lessons with the exercise bodies removed.

The solution notebooks in ``notebooks/`` mark each exercise's answer::

    def my_attention(q, k, v, mask=None):
        \"\"\"softmax(q k^T / sqrt(d), masked) v ...\"\"\"   <- kept: the hint
        # BEGIN SOLUTION
        ...                                               <- removed
        # END SOLUTION

The student version keeps everything outside the markers (docstrings, comments, prose, checks)
and replaces the marked lines by ``raise NotImplementedError(...)``. The check cell after each
exercise (:func:`vfm_course.course.exercises.check_exercise`) reports an unfinished exercise and
hands the package's reference to the cells below, so a student notebook runs top to bottom. Student
notebooks are stored without outputs: learners run them themselves.

    python -m vfm_course.course.student            # (re)generate notebooks/student/
    python -m vfm_course.course.student --check    # exit 1 if a student notebook is out of date

A student notebook someone has edited is never overwritten (``--force`` does it anyway).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUDENT_DIRNAME = "student"  # inside the notebooks folder
_CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
_META_KEY = "vfm_course"
# A lesson's Colab badge links to .../blob/BRANCH/notebooks/NAME.ipynb; the student copy's to
# .../blob/BRANCH/notebooks/student/NAME.ipynb.
_COLAB_LINK = re.compile(r"(colab\.research\.google\.com/github/[^)\s]*/notebooks/)(?=\d)")


class SolutionMarkerError(ValueError):
    """The BEGIN/END SOLUTION markers of a cell do not pair up."""


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block (markers included) by a
    ``raise NotImplementedError`` at the BEGIN marker's indentation."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise SolutionMarkerError(f"{where}, line {number}: {BEGIN} inside another one")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(
                f'{indent}raise NotImplementedError("exercise: replace this line with your code")'
            )
        elif stripped == END:
            if not inside:
                raise SolutionMarkerError(f"{where}, line {number}: {END} without a {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def _sources_digest(nb: nbformat.NotebookNode) -> str:
    """sha256 of the cells' types and sources: what a learner's edits would change."""
    cells = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def student_notebook(solution: nbformat.NotebookNode, name: str = "notebook"):
    """The student version of one solution notebook (a new notebook; the input is unchanged).
    Its "Open in Colab" links point at the student notebook, not at the solution."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = _COLAB_LINK.sub(rf"\g<1>{STUDENT_DIRNAME}/", cell.source)
        if cell.cell_type != "code":
            continue
        cell.source = strip_solution(cell.source, f"{name}, cell {index} (id {cell.get('id')})")
        # Stored outputs are gone, so nbval must not compare this cell's output with them.
        lines = cell.source.split("\n")
        cell.source = "\n".join(line for line in lines if line.strip() != _CHECK_MARK)
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("widgets", None)  # widget state belongs to outputs that are not there
    nb.metadata[_META_KEY] = {"student_version_of": name, "sources_sha256": _sources_digest(nb)}
    return nb


def _edited_by_someone(path: Path) -> bool:
    """True if ``path`` holds a student notebook whose cells changed since it was generated
    (or a file this module did not write)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return True
    recorded = nb.metadata.get(_META_KEY, {}).get("sources_sha256")
    return recorded != _sources_digest(nb)


def _serialise(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def generate(
    notebooks_dir: str | Path = "notebooks", check: bool = False, force: bool = False
) -> list[Path]:
    """Write the student version of every lesson notebook with exercises into
    ``notebooks_dir/student/``. Returns the paths that were (``check``: would be) written.

    Raises ``FileExistsError`` rather than overwrite a student notebook someone edited, unless
    ``force``.
    """
    src = Path(notebooks_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {src}")
    out_dir = src / STUDENT_DIRNAME
    changed = []
    for path in sorted(src.glob("[0-9]*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        if not any(c.cell_type == "code" and has_solution(c.source) for c in solution.cells):
            continue
        text = _serialise(student_notebook(solution, path.name))
        target = out_dir / path.name
        if target.exists() and target.read_text() == text:
            continue
        changed.append(target)
        if check:
            continue
        if target.exists() and not force and _edited_by_someone(target):
            raise FileExistsError(
                f"{target} was edited after it was generated; move your work elsewhere, or pass "
                f"--force to overwrite it with a fresh student version"
            )
        out_dir.mkdir(exist_ok=True)
        target.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vfm-course-student", description="Generate the student versions of the lessons."
    )
    parser.add_argument("--notebooks", default="notebooks", help="the solution notebooks' folder")
    parser.add_argument(
        "--check", action="store_true", help="only report out-of-date student notebooks"
    )
    parser.add_argument("--force", action="store_true", help="overwrite edited student notebooks")
    args = parser.parse_args(argv)
    try:
        changed = generate(args.notebooks, check=args.check, force=args.force)
    except (FileExistsError, FileNotFoundError, SolutionMarkerError) as exc:
        sys.exit(f"error: {exc}")
    if args.check:
        if changed:
            names = ", ".join(str(p) for p in changed)
            sys.exit(
                f"out of date: {names}; run `make student` (python -m vfm_course.course.student)"
            )
        print("student notebooks are up to date")
        return
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("student notebooks are up to date")


if __name__ == "__main__":
    main()
