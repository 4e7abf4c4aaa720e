"""The grader: right, wrong, unfinished, timing-out, crashing, malformed and tampered submissions
of lesson 01 score exactly what they should. Everything runs in real kernels through nbval."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from vfm_course.course.exercises.registry import EXERCISES
from vfm_course.course.grading import sandbox
from vfm_course.course.grading.grader import SETUP_CELLS, GradeConfig, grade, grading_notebook, main

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# These tests are about scoring; they grade in the sandbox where the machine has one (make
# test-deps installs bubblewrap), and without it elsewhere, where test_grading_sandbox.py skips
# and says why.
SANDBOXED = sandbox.detect().bwrap is not None
LESSON = "01_attention_from_scratch"

RIGHT_ATTENTION = """def my_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v"""

UNSCALED_ATTENTION = """def my_attention(q, k, v, mask=None):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v"""

MASK_IGNORED = """def my_attention(q, k, v, mask=None):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v"""

LOOPING_ATTENTION = """def my_attention(q, k, v, mask=None):
    while True:
        pass"""

RIGHT_SPLIT = """def my_split_heads(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, D // num_heads).transpose(1, 2)"""

RIGHT_MERGE = """def my_merge_heads(x):
    B, h, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, h * d)"""

# Cheats. Each would earn marks if the grader trusted the kernel, or let it read the expected
# outputs; each pairs a wrong answer with the cheat.
PATCH_TORCH = (
    UNSCALED_ATTENTION
    + """
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.equal = lambda *args, **kwargs: True"""
)

REDEFINE_CHECKERS = (
    UNSCALED_ATTENTION
    + """
import vfm_course.course.exercises.attention as _lesson, vfm_course.course.exercises.registry as _r
_lesson.check_attention = lambda fn: True
_r.check_exercise = lambda name, *fns: fns[0]"""
)

# Reads every notebook it can find near its working directory and, if it finds the expected
# outputs of the hidden cells, replays them through print.
READ_EXPECTED = (
    UNSCALED_ATTENTION
    + """
import builtins, glob, json, os
_expected = []
for _path in glob.glob("*.ipynb") + glob.glob("../*/*.ipynb") + glob.glob("../*.ipynb"):
    try:
        for _cell in json.load(open(_path))["cells"]:
            if "_fingerprint(my_attention(" not in "".join(_cell["source"]):
                continue
            for _out in _cell.get("outputs", []):
                _expected.append("".join(_out.get("text", "")))
    except Exception:
        pass
if _expected:
    _print = builtins.print
    def print(*args, **kwargs):
        _print(_expected.pop(0), end="")"""
)

PATCH_PRINT = (
    UNSCALED_ATTENTION
    + """
import builtins
builtins.print = lambda *args, **kwargs: None"""
)

CRASH = """import os
os._exit(1)"""

# An honest, correct answer that prints while it works, triggers a warning and carries a lone
# surrogate in a comment (valid in a notebook's JSON, not in UTF-8); the split cell also writes
# bytes that are not UTF-8 to every pipe the kernel has open, which once stopped the whole run.
DEBUGGING_ATTENTION = """import warnings
def my_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    print("debug: scores", tuple(s.shape))
    warnings.warn("checking my shapes")
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v  # caf\udce9"""

BAD_BYTES_SPLIT = (
    RIGHT_SPLIT
    + """
import os, stat
for _fd in map(int, os.listdir("/proc/self/fd")):
    try:
        if stat.S_ISFIFO(os.fstat(_fd).st_mode):
            os.write(_fd, b"\\n\\xff\\xfe not utf-8\\n")
    except OSError:
        pass"""
)
# A file name that once forged a row of grades.md ("|" and a newline), as the grader names it.
ODD_NAME = "honest | debug\nprints"
ODD_NAME_REPORTED = "honest | debug\\nprints"

# Writes result lines in the grader's format to every pipe the kernel has open, its inherited
# stdout among them, claiming that the attention cases passed (with a made-up fingerprint: the
# right one needs the right answer to inputs from a secret seed).
FORGE_RESULTS = (
    UNSCALED_ATTENTION
    + """
import json, os, stat
for _cell in range(2, 6):
    _line = {"nodeid": f"attention.ipynb::Cell {_cell}", "when": "call", "outcome": "passed"}
    _line["problem"], _line["stdout"] = "", "(2, 3, 5, 4) float sum 0.000\\n"
    for _fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISFIFO(os.fstat(_fd).st_mode):
                os.write(_fd, ("\\nvfm-grade-result " + json.dumps(_line) + "\\n").encode())
        except OSError:
            pass"""
)


def _submission(
    folder: Path, student: str, answers: dict[str, str], ascii_json: bool = False
) -> None:
    nb = nbformat.read(NOTEBOOKS / "student" / f"{LESSON}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.get("id") in answers:
            cell.source = answers.pop(cell.get("id"))
    assert not answers, f"no cells with ids {list(answers)}"
    if ascii_json:  # \u escapes: the way a lone surrogate can sit in a valid notebook file
        (folder / f"{student}.ipynb").write_text(json.dumps(nb, ensure_ascii=True))
    else:
        nbformat.write(nb, folder / f"{student}.ipynb")


EXPECTED = {  # student -> scores of (attention, split_merge_heads, online_softmax_attention)
    "reference": (1.0, 1.0, 1.0),
    "unfinished": (0.0, 0.0, 0.0),
    "unscaled": (0.0, 1.0, 0.0),
    "mask_ignored": (0.5, 1.0, 0.0),
    "loops_forever": (0.0, 1.0, 0.0),
    "crashes_in_split": (1.0, 0.0, 0.0),
    "missing_cell": (0.0, 1.0, 1.0),  # the solution notebook without its first answer cell
    "not_json": (0.0, 0.0, 0.0),
    "truncated": (0.0, 0.0, 0.0),
    "patches_torch": (0.0, 1.0, 0.0),
    "redefines_checkers": (0.0, 1.0, 0.0),
    "reads_expected_files": (0.0, 1.0, 0.0),
    "patches_print": (0.0, 1.0, 0.0),
    "edits_check_cells": (0.0, 1.0, 0.0),
    "forges_result_lines": (0.0, 1.0, 0.0),
    "pastes_check_line": (0.0, 0.0, 0.0),
    "duplicates_answer_cell": (0.0, 0.0, 0.0),
    ODD_NAME_REPORTED: (1.0, 1.0, 0.0),
    "caf\\xe9": (0.0, 0.0, 0.0),  # a file name that is not UTF-8, holding no notebook
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    subs.mkdir()
    shutil.copy(NOTEBOOKS / f"{LESSON}.ipynb", subs / "reference.ipynb")
    _submission(subs, "unfinished", {})
    split = {"ex2-split": RIGHT_SPLIT, "ex2-merge": RIGHT_MERGE}
    _submission(subs, "unscaled", {"ex1-solution": UNSCALED_ATTENTION, **split})
    _submission(subs, "mask_ignored", {"ex1-solution": MASK_IGNORED, **split})
    _submission(subs, "loops_forever", {"ex1-solution": LOOPING_ATTENTION, **split})
    _submission(
        subs,
        "crashes_in_split",
        {"ex1-solution": RIGHT_ATTENTION, "ex2-split": CRASH, "ex2-merge": RIGHT_MERGE},
    )
    _submission(subs, "patches_torch", {"ex1-solution": PATCH_TORCH, **split})
    _submission(subs, "redefines_checkers", {"ex1-solution": REDEFINE_CHECKERS, **split})
    _submission(subs, "reads_expected_files", {"ex1-solution": READ_EXPECTED, **split})
    _submission(subs, "patches_print", {"ex1-solution": PATCH_PRINT, **split})
    _submission(subs, "forges_result_lines", {"ex1-solution": FORGE_RESULTS, **split})
    # Check cells edited to claim success: the grader never runs them.
    _submission(
        subs,
        "edits_check_cells",
        {"ex1-solution": UNSCALED_ATTENTION, "ex1-check": "print('✓ attention matches')", **split},
    )
    nb = nbformat.read(NOTEBOOKS / f"{LESSON}.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.get("id") != "ex1-solution"]
    nbformat.write(nb, subs / "missing_cell.ipynb")
    (subs / "not_json.ipynb").write_text("this is not a notebook")
    # An unfinished answer with the check line pasted below it: the checker hands back the
    # reference stand-in, which once scored full marks.
    student = nbformat.read(NOTEBOOKS / "student" / f"{LESSON}.ipynb", as_version=4)
    stub = next(c.source for c in student.cells if c.get("id") == "ex1-solution")
    pasted = stub + '\nmy_attention = check_exercise("attention", my_attention)'
    _submission(subs, "pastes_check_line", {"ex1-solution": pasted})
    # A collapsed copy of a right answer near the top, with the answer's id, above a wrong one.
    nb = nbformat.read(NOTEBOOKS / "student" / f"{LESSON}.ipynb", as_version=4)
    visible = next(c for c in nb.cells if c.get("id") == "ex1-solution")
    visible.source = UNSCALED_ATTENTION
    nb.cells.insert(1, nbformat.v4.new_code_cell(RIGHT_ATTENTION, id="ex1-solution"))
    (subs / "duplicates_answer_cell.ipynb").write_text(json.dumps(nb))  # as the file holds it
    odd = {"ex1-solution": DEBUGGING_ATTENTION, "ex2-split": BAD_BYTES_SPLIT}
    _submission(subs, ODD_NAME, {**odd, "ex2-merge": RIGHT_MERGE}, ascii_json=True)
    with open(os.fsencode(subs) + b"/caf\xe9.ipynb", "w") as f:
        f.write("not a notebook either")
    text = (NOTEBOOKS / f"{LESSON}.ipynb").read_text()
    (subs / "truncated.ipynb").write_text(text[: len(text) // 2])
    out = root / "out"
    # The static check of answers is off: these cheats test what the run-time defences hold on
    # their own (test_grading_sandbox.py grades with it on).
    config = GradeConfig(15, 300, 2, sandboxed=SANDBOXED, check_source=False)
    results = grade(LESSON, subs, out, NOTEBOOKS, config, progress=False)
    return {r.student: r for r in results}, out


@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_submission_scores_exactly_what_it_should(graded, student):
    results, _ = graded
    r = results[student]
    scores = tuple(r.exercises[n].score for n in EXPECTED_ORDER)
    assert scores == EXPECTED[student], r.exercises


EXPECTED_ORDER = ("attention", "split_merge_heads", "online_softmax_attention")


def test_reasons_are_reported(graded):
    results, _ = graded
    notes = {
        s: " ".join(n for e in r.exercises.values() for n in e.notes) for s, r in results.items()
    }
    assert notes["reference"] == ""
    assert "not finished" in notes["unfinished"]
    assert "time limit" in notes["loops_forever"]
    assert "boolean mask: wrong result" in notes["mask_ignored"]
    assert "ex1-solution is missing" in notes["missing_cell"]
    assert "ex1-solution appears more than once" in notes["duplicates_answer_cell"]
    assert "not a readable notebook" in notes["not_json"]
    assert "not a readable notebook" in notes["truncated"]
    assert "crashed" in notes["crashes_in_split"] or "not run" in notes["crashes_in_split"]


def test_reports_list_every_student_and_exercise(graded):
    results, out = graded
    with (out / "grades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["student"] for r in rows) == sorted(EXPECTED)
    for row in rows:
        expected = EXPECTED[row["student"]]
        assert [float(row[n]) for n in EXPECTED_ORDER] == list(expected)
        assert float(row["total"]) == pytest.approx(sum(expected))
    md = (out / "grades.md").read_text()
    assert md.startswith("| student | attention | split_merge_heads |")
    assert md.count("\n") == len(EXPECTED) + 2


def test_reports_are_not_overwritten(graded, tmp_path):
    _, out = graded
    before = (out / "grades.csv").read_text()
    (tmp_path / "late.ipynb").write_text("{}")
    with pytest.raises(SystemExit, match="exists"):
        main([LESSON, str(tmp_path), "--out", str(out), "--notebooks", str(NOTEBOOKS)])
    assert (out / "grades.csv").read_text() == before


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no exercises"):
        main(["05_nothing", str(tmp_path), "--notebooks", str(NOTEBOOKS)])
    with pytest.raises(SystemExit, match="not found"):
        main([LESSON, str(tmp_path / "nowhere"), "--notebooks", str(NOTEBOOKS)])
    with pytest.raises(SystemExit, match="no submissions"):
        main([LESSON, str(tmp_path), "--notebooks", str(NOTEBOOKS)])
    with pytest.raises(SystemExit, match="positive"):
        main([LESSON, str(tmp_path), "--jobs", "0"])


@pytest.mark.parametrize("lesson", sorted(SETUP_CELLS))
def test_every_lesson_grading_notebook_uses_its_setup_cell(lesson):
    reference = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    ids = {c.get("id") for c in reference.cells}
    assert SETUP_CELLS[lesson] in ids
    for ex in (e for e in EXERCISES.values() if e.notebook == lesson):
        nb = grading_notebook(reference, ["pass"] * len(ex.cells), ex)
        assert len(nb.cells) == 2 + len(ex.cells) + len(ex.hidden)  # set-up, grader cell
        # The expected text is never in the notebook: the grader compares after the run.
        hidden = nb.cells[-len(ex.hidden) :]
        assert all(c.outputs == [] for c in hidden)


@pytest.mark.parametrize("lesson", [s for s in sorted(SETUP_CELLS) if s != LESSON])
def test_the_solution_notebook_scores_full_marks(lesson, tmp_path):
    subs = tmp_path / "submissions"
    subs.mkdir()
    shutil.copy(NOTEBOOKS / f"{lesson}.ipynb", subs / "reference.ipynb")
    shutil.copy(NOTEBOOKS / "student" / f"{lesson}.ipynb", subs / "unfinished.ipynb")
    config = GradeConfig(cell_timeout=120, total_timeout=600, jobs=2, sandboxed=SANDBOXED)
    results = {r.student: r for r in grade(lesson, subs, tmp_path / "out", NOTEBOOKS, config)}
    assert results["reference"].total == len(results["reference"].exercises) > 0
    assert results["unfinished"].total == 0


def test_each_row_is_written_as_its_submission_finishes(tmp_path, monkeypatch):
    from vfm_course.course.grading import grader

    calls = []
    real = grader.write_reports

    def recording(rows, exercises, out, pending=0):
        calls.append(([r.student for r in rows], pending, (out / "grades.md").exists()))
        real(rows, exercises, out, pending)
        if pending:
            assert "Grading in progress: 1 more" in (out / "grades.md").read_text()

    monkeypatch.setattr(grader, "write_reports", recording)
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("a", "b"):  # not notebooks: graded at once, without a kernel
        (subs / f"{name}.ipynb").write_text("not a notebook")
    config = GradeConfig(jobs=1, sandboxed=False)
    grade(LESSON, subs, tmp_path / "out", NOTEBOOKS, config, progress=False)
    assert calls == [(["a"], 1, False), (["a", "b"], 0, True)]
    assert "in progress" not in (tmp_path / "out" / "grades.md").read_text()
