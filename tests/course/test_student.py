"""Student notebooks: generated from the solutions, current, and safe for learners' work."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from vfm_course.course.student import (
    BEGIN,
    END,
    SolutionMarkerError,
    generate,
    main,
    strip_solution,
    student_notebook,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

SOLUTION = '''def f(x):
    """Double x."""
    # the hint stays
    # BEGIN SOLUTION
    y = 2 * x
    return y
    # END SOLUTION'''


def test_strip_solution_keeps_hints_and_indentation():
    assert strip_solution(SOLUTION) == (
        'def f(x):\n    """Double x."""\n    # the hint stays\n'
        '    raise NotImplementedError("exercise: replace this line with your code")'
    )
    assert strip_solution("x = 1") == "x = 1"


@pytest.mark.parametrize(
    "source, problem",
    [
        (f"{BEGIN}\nx = 1", "never closed"),
        (f"x = 1\n{END}", "without"),
        (f"{BEGIN}\n{BEGIN}\n{END}", "inside another"),
    ],
)
def test_unpaired_markers_are_reported(source, problem):
    with pytest.raises(SolutionMarkerError, match=problem):
        strip_solution(source, "lesson.ipynb, cell 3")


def test_committed_student_notebooks_are_current():
    assert generate(NOTEBOOKS, check=True) == [], "run `make student` and commit the result"


def test_student_notebooks_hold_no_solutions_and_no_outputs():
    paths = sorted((NOTEBOOKS / "student").glob("*.ipynb"))
    assert [p.name for p in paths] == sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        solution = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        assert [c.get("id") for c in nb.cells] == [c.get("id") for c in solution.cells]
        for cell in nb.cells:
            assert BEGIN not in cell.source and END not in cell.source
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                assert "# NBVAL_CHECK_OUTPUT" not in cell.source


def _lesson(tmp_path: Path) -> Path:
    src = tmp_path / "notebooks"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lesson"),
        nbformat.v4.new_code_cell(SOLUTION),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(f(2))"),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="4\n")]
    nbformat.write(nb, src / "01_lesson.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), src / "02_no_exercises.ipynb")
    return src


def test_generate_writes_only_lessons_with_exercises(tmp_path):
    src = _lesson(tmp_path)
    assert generate(src) == [src / "student" / "01_lesson.ipynb"]
    assert generate(src) == []  # idempotent
    nb = nbformat.read(src / "student" / "01_lesson.ipynb", as_version=4)
    assert "NotImplementedError" in nb.cells[1].source
    assert nb.cells[2].source == "print(f(2))" and nb.cells[2].outputs == []


def test_an_edited_student_notebook_is_never_overwritten(tmp_path, capsys):
    src = _lesson(tmp_path)
    generate(src)
    target = src / "student" / "01_lesson.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[1].source = "def f(x):\n    return x + x  # my answer"
    nbformat.write(nb, target)
    # The solution changes, so the student version is out of date...
    solution = nbformat.read(src / "01_lesson.ipynb", as_version=4)
    solution.cells[0].source = "# Lesson, revised"
    nbformat.write(solution, src / "01_lesson.ipynb")
    assert generate(src, check=True) == [target]
    # ...but the learner's answer is not thrown away without --force.
    with pytest.raises(FileExistsError, match="edited"):
        generate(src)
    assert "my answer" in target.read_text()
    with pytest.raises(SystemExit, match="edited"):
        main(["--notebooks", str(src)])
    assert generate(src, force=True) == [target]
    assert "my answer" not in target.read_text()


def test_check_mode_exits_nonzero_when_out_of_date(tmp_path, capsys):
    src = _lesson(tmp_path)
    with pytest.raises(SystemExit, match="out of date"):
        main(["--notebooks", str(src), "--check"])
    main(["--notebooks", str(src)])
    main(["--notebooks", str(src), "--check"])
    assert "up to date" in capsys.readouterr().out


def test_student_version_of_a_real_lesson_keeps_the_checks(tmp_path):
    path = NOTEBOOKS / "01_attention_from_scratch.ipynb"
    shutil.copy(path, tmp_path / path.name)
    nb = student_notebook(nbformat.read(tmp_path / path.name, as_version=4), path.name)
    sources = "\n".join(c.source for c in nb.cells)
    assert 'check_exercise("attention", my_attention)' in sources
    assert sources.count("raise NotImplementedError") >= 4


def test_student_colab_badges_open_the_student_notebook():
    for path in sorted((NOTEBOOKS / "student").glob("*.ipynb")):
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        links = re.findall(r"colab\.research\.google\.com/github/\S*?\.ipynb", text)
        assert links, f"{path.name} has no Colab badge"
        assert all(link.endswith(f"/notebooks/student/{path.name}") for link in links), links
