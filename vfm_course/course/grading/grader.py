"""Grading submitted notebooks with nbval, comparing results outside the learners' kernels.

For every exercise of a lesson (:data:`vfm_course.course.exercises.EXERCISES`) and every
submission the grader builds a small notebook from the *reference* notebook, taking only the
answer cells from the submission (by cell id):

1. the lesson's set-up cell (imports), from the reference;
2. the submission's answer cells, nothing else of the submission (edited check cells, redefined
   checkers and any other cell the learner changed are simply not used);
3. hidden check cells, one per :class:`~vfm_course.course.exercises.HiddenCase`: each draws
   inputs from a seeded generator, calls the learner's function and prints a rounded
   fingerprint of the result, and is marked ``# NBVAL_CHECK_OUTPUT``. The expected text is the
   reference implementation's fingerprint. The seeds are drawn afresh and secretly for every
   run (:func:`~vfm_course.course.grading.hidden.draw_hidden_seeds`), so no answer can be
   looked up from inputs known in advance.

nbval then runs each notebook in a fresh kernel and compares the printed text with the stored
one *in the pytest process*, so nothing the learner's code does inside its kernel (patching
``torch.allclose``, replacing a checker, printing) can change the comparison. The expected text
never touches the disk: it is piped to the nbval process and put into the hidden cells after
collection. Each submission runs in its own temporary directory and each exercise gets its own
kernel.
Cells have a time limit and so does the whole submission. A crash, an infinite loop, a missing
answer cell or a file that is not a notebook costs the exercises it touches, never the run.

    python -m vfm_course.course.grading 01_attention_from_scratch submissions/ --out grades/

Each hidden case is worth one point; an exercise's score is its points over its cases.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
from tqdm.auto import tqdm

from ..exercises.exercise import Exercise
from ..exercises.registry import EXERCISES, SETUP_CELLS, exercises_of
from .hidden import draw_hidden_seeds, hidden_cell_source, reference_outputs
from .nbval import RESULT_PREFIX
from .results import ExerciseResult, SubmissionResult, summary, write_reports
from .submission import answer_cells, student_name

# The cell of each lesson that imports what the answers use (the Colab install cell comes first).


@dataclass(frozen=True)
class GradeConfig:
    cell_timeout: int = 60  # seconds per cell (nbval interrupts the kernel)
    total_timeout: int = 600  # seconds per submission, all its exercises together
    jobs: int = 2  # submissions graded at once


# ----------------------------------------------------------------------------- notebooks


def grading_notebook(
    reference: nbformat.NotebookNode, answers: list[str], ex: Exercise, seed: int | None = None
) -> nbformat.NotebookNode:
    """Set-up cell (reference) + answer cells (submission) + hidden check cells.

    The hidden cells are written *without* their expected output: that text never touches the
    disk, where the learner's kernel could read it (see :class:`_GradingPlugin`)."""
    setup_id = SETUP_CELLS[ex.notebook]
    setup = next(c for c in reference.cells if c.get("id") == setup_id)
    nb = nbformat.v4.new_notebook(metadata=reference.metadata)
    nb.cells.append(nbformat.v4.new_code_cell(setup.source, id="setup"))
    for i, source in enumerate(answers):
        nb.cells.append(nbformat.v4.new_code_cell(source, id=f"answer-{i}"))
    for i, case in enumerate(ex.hidden):
        cell = nbformat.v4.new_code_cell(hidden_cell_source(ex, case, seed), id=f"hidden-{i}")
        cell.execution_count = i + 1  # nbval compares only cells that have run
        nb.cells.append(cell)
    return nb


def expected_outputs(ex: Exercise, seed: int | None = None) -> list[list[dict]]:
    """The outputs each hidden cell must produce: the reference's fingerprint on stdout."""
    return [
        [nbformat.v4.new_output("stream", name="stdout", text=text)]
        for text in reference_outputs(ex, seed)
    ]


# ----------------------------------------------------------------------------- running nbval


def _kill_tree(pid: int) -> None:
    # The kernels run in sessions of their own (jupyter_client), so killing the process group
    # is not enough: collect the whole tree first, then kill it.
    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def grade_submission(
    path: Path,
    reference: nbformat.NotebookNode,
    lesson: str,
    config: GradeConfig,
    seeds: dict[str, int] | None = None,
) -> SubmissionResult:
    """Grade one submitted file against the lesson's exercises, with hidden inputs drawn from
    ``seeds`` (exercise -> seed; default: each exercise's :func:`hidden_seed`)."""
    exercises = exercises_of(lesson)
    seeds = seeds or {}
    result = SubmissionResult(
        student_name(path), {e.name: ExerciseResult(0, len(e.hidden)) for e in exercises}
    )
    t0 = time.perf_counter()
    try:
        submission = nbformat.read(path, as_version=4)
        if not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
        raw_cells = json.loads(path.read_bytes()).get("cells", [])
        file_ids = [c.get("id") for c in raw_cells if isinstance(c, dict)]
    except Exception as exc:  # anything unreadable: every exercise is missing
        for r in result.exercises.values():
            r.notes.append(f"not a readable notebook ({type(exc).__name__}: {str(exc)[:80]})")
        return result
    workdir = Path(tempfile.mkdtemp(prefix="vfm-grade-"))
    try:
        cases: dict[str, tuple[str, int]] = {}  # nodeid -> (exercise, case index)
        expected: dict[str, list[dict]] = {}  # nodeid -> the outputs nbval must see
        notebooks = []
        for ex in exercises:
            try:
                answers = answer_cells(submission, ex, file_ids)
            except KeyError as exc:
                result.exercises[ex.name].notes.append(str(exc.args[0]))
                continue
            nb = grading_notebook(reference, answers, ex, seeds.get(ex.name))
            name = f"{ex.name}.ipynb"
            nbformat.write(nb, workdir / name)
            notebooks.append(name)
            first_hidden = len(nb.cells) - len(ex.hidden)
            for i, outputs in enumerate(expected_outputs(ex, seeds.get(ex.name))):
                nodeid = f"{name}::Cell {first_hidden + i}"
                cases[nodeid] = (ex.name, i)
                expected[nodeid] = outputs
        if notebooks:
            _run(workdir, notebooks, cases, expected, result, config)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.perf_counter() - t0
    return result


def _run(
    workdir: Path,
    notebooks: list[str],
    cases: dict[str, tuple[str, int]],
    expected: dict[str, list[dict]],
    result: SubmissionResult,
    config: GradeConfig,
) -> None:
    code = "import sys; from vfm_course.course.grading.nbval import run_nbval; "
    code += "sys.exit(run_nbval(sys.argv[2:], int(sys.argv[1])))"
    cmd = [sys.executable, "-c", code, str(config.cell_timeout), *notebooks]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("VFM_GRADE_DEBUG") else subprocess.DEVNULL,
    )  # bytes, not text: a kernel may write anything to the pipe it inherits
    token = secrets.token_hex(16)
    prefix = f"{RESULT_PREFIX} {token} "
    timed_out = False
    try:
        given = json.dumps({"expected": expected, "token": token}).encode()
        raw, _ = proc.communicate(given, timeout=config.total_timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc.pid)
        raw, _ = proc.communicate()
    out = raw.decode("utf-8", "replace")  # result lines are ASCII JSON; the rest may be garbage
    seen: set[str] = set()
    for line in out.splitlines():
        if not line.startswith(prefix):
            continue  # pytest's own report, or a line without the token
        rec = json.loads(line.removeprefix(prefix))
        if rec["nodeid"] not in cases or rec["nodeid"] in seen:
            continue
        seen.add(rec["nodeid"])
        name, index = cases[rec["nodeid"]]
        r = result.exercises[name]
        if rec["outcome"] == "passed":
            r.points += 1
        else:
            r.notes.append(f"{_case_label(name, index)}: {rec['problem']}")
    for nodeid, (name, index) in cases.items():
        if nodeid not in seen:
            why = "the submission's time limit ran out" if timed_out else "not run"
            result.exercises[name].notes.append(f"{_case_label(name, index)}: {why}")


def _case_label(name: str, index: int) -> str:
    return EXERCISES[name].hidden[index].label


# ----------------------------------------------------------------------------- reports


def grade(
    lesson: str,
    submissions: str | Path,
    out: str | Path,
    notebooks: str | Path = "notebooks",
    config: GradeConfig = GradeConfig(),
    force: bool = False,
    progress: bool = True,
) -> list[SubmissionResult]:
    """Grade every file in ``submissions`` against ``lesson``; write the reports into ``out``."""
    lesson = Path(lesson).name.removesuffix(".ipynb")
    exercises = exercises_of(lesson)
    if not exercises:
        lessons = sorted({e.notebook for e in EXERCISES.values()})
        raise ValueError(f"lesson {lesson!r} has no exercises; lessons with exercises: {lessons}")
    ref_path = Path(notebooks) / f"{lesson}.ipynb"
    if not ref_path.is_file():
        raise FileNotFoundError(f"reference notebook {ref_path} not found (see --notebooks)")
    sub_dir = Path(submissions)
    if not sub_dir.is_dir():
        raise FileNotFoundError(f"submissions folder {sub_dir} not found")
    files = sorted(p for p in sub_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{sub_dir} holds no submissions")
    out = Path(out)
    existing = [p for p in (out / "grades.csv", out / "grades.md") if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; pass --force to replace it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    reference = nbformat.read(ref_path, as_version=4)
    seeds = draw_hidden_seeds([e.name for e in exercises])  # secret, new for every run
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs) as pool:
        futures = [
            pool.submit(grade_submission, p, reference, lesson, config, seeds) for p in files
        ]
        bar = tqdm(
            total=len(files), desc=f"grading {lesson}", unit="submission", disable=not progress
        )
        for _ in concurrent.futures.as_completed(futures):
            bar.update(1)
        bar.close()
    results = [_result_or_failure(f, p, exercises) for f, p in zip(futures, files, strict=True)]
    write_reports(results, exercises, out)
    return results


def _result_or_failure(
    future: concurrent.futures.Future, path: Path, exercises: list[Exercise]
) -> SubmissionResult:
    """The submission's result, or zero marks with the reason when grading it failed: one
    file never costs the other students their report."""
    try:
        return future.result()
    except Exception as exc:  # a grader bug or an input nobody foresaw
        note = f"the grader failed on this file ({type(exc).__name__}: {str(exc)[:80]})"
        return SubmissionResult(
            student_name(path),
            {e.name: ExerciseResult(0, len(e.hidden), [note]) for e in exercises},
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vfm-course-grade",
        description="Grade a folder of submitted notebooks for one lesson against the reference.",
    )
    parser.add_argument("lesson", help="lesson notebook name, e.g. 01_attention_from_scratch")
    parser.add_argument("submissions", help="folder of submitted notebooks (file name = student)")
    parser.add_argument("--out", default="grades", help="folder for grades.csv and grades.md")
    parser.add_argument("--notebooks", default="notebooks", help="the reference notebooks")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once")
    parser.add_argument("--cell-timeout", type=int, default=60, help="seconds per cell")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per submission")
    parser.add_argument("--force", action="store_true", help="replace existing reports")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.cell_timeout < 1 or args.timeout < 1:
        sys.exit("error: --jobs, --cell-timeout and --timeout must be positive")
    config = GradeConfig(args.cell_timeout, args.timeout, args.jobs)
    try:
        results = grade(
            args.lesson, args.submissions, args.out, args.notebooks, config, force=args.force
        )
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        sys.exit(f"error: {exc}")
    exercises = exercises_of(Path(args.lesson).name.removesuffix(".ipynb"))
    print(summary(results, exercises))
    print(f"wrote {Path(args.out) / 'grades.csv'} and {Path(args.out) / 'grades.md'}")


if __name__ == "__main__":
    main()
