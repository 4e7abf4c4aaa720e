"""Grading submitted notebooks with nbval, each submission in a sandbox, compared afterwards.

For every exercise of a lesson (:data:`vfm_course.course.exercises.EXERCISES`) and every
submission the grader builds a small notebook from the *reference* notebook, taking only the
answer cells from the submission (by cell id):

1. the lesson's set-up cell (imports), from the reference;
2. a grader cell: ``check_exercise`` hands back what it is given, and the names of the
   library or reference implementations of the exercise are removed from the kernel;
3. the submission's answer cells, nothing else of the submission (edited check cells, redefined
   checkers and any other cell the learner changed are simply not used), after a static check
   that they do not call the library's version or hide what they run (:mod:`.policy`);
4. hidden check cells, one per :class:`~vfm_course.course.exercises.HiddenCase`: each draws
   inputs from a seeded generator, calls the learner's function and prints a rounded
   fingerprint of the result. The seeds are drawn afresh and secretly for every run
   (:func:`~vfm_course.course.grading.hidden.draw_hidden_seeds`), so no answer can be looked
   up from inputs known in advance.

nbval runs the notebooks of one submission, each exercise in a fresh kernel, inside a throw-away
sandbox (:mod:`.sandbox`: read-only system, its own user, PID namespace and limits, no
network). It reports what each hidden cell printed; only after the sandbox is gone does the
grader compute the reference's fingerprints and compare. Nothing secret is inside the sandbox:
no expected output, no token. Cells have a time limit and so does the whole submission. A
crash, an infinite loop, a missing answer cell or a file that is not a notebook costs the
exercises it touches, never the run.

    python -m vfm_course.course.grading 01_attention_from_scratch submissions/ --out grades/

Each hidden case is worth one point; an exercise's score is its points over its cases.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import queue
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
from tqdm.auto import tqdm

from ..exercises.exercise import Exercise
from ..exercises.registry import EXERCISES, SETUP_CELLS, exercises_of
from . import sandbox
from .execution import GradeConfig, GradingRun, kill_tree, run_submission
from .hidden import draw_hidden_seeds, hidden_cell_source, reference_outputs
from .policy import forbidden_names, violations
from .results import ExerciseResult, SubmissionResult, summary, write_reports
from .submission import answer_cells, student_name


class SandboxUnavailable(RuntimeError):
    """There is no sandbox on this machine and grading without one was not asked for."""


# ----------------------------------------------------------------------------- notebooks


def grader_cell_source(ex: Exercise) -> str:
    """Runs after the set-up cell: the checker becomes the identity (no reference stand-in
    exists in a grading kernel) and the library's versions of the exercise are removed."""
    names = tuple(sorted(forbidden_names(ex)))
    return (
        "# added by the grader\n"
        "def check_exercise(name, *fns):\n"
        "    return fns[0] if len(fns) == 1 else fns\n\n\n"
        f"for _name in {names!r}:\n"
        "    globals().pop(_name, None)\n"
    )


def grading_notebook(
    reference: nbformat.NotebookNode, answers: list[str], ex: Exercise, seed: int | None = None
) -> nbformat.NotebookNode:
    """Set-up cell (reference) + grader cell + answer cells (submission) + hidden check cells.
    The notebook holds no expected output: the grader compares after the run."""
    setup_id = SETUP_CELLS[ex.notebook]
    setup = next(c for c in reference.cells if c.get("id") == setup_id)
    nb = nbformat.v4.new_notebook(metadata=reference.metadata)
    nb.cells.append(nbformat.v4.new_code_cell(setup.source, id="setup"))
    nb.cells.append(nbformat.v4.new_code_cell(grader_cell_source(ex), id="grader"))
    for i, source in enumerate(answers):
        nb.cells.append(nbformat.v4.new_code_cell(source, id=f"answer-{i}"))
    for i, case in enumerate(ex.hidden):
        cell = nbformat.v4.new_code_cell(hidden_cell_source(ex, case, seed), id=f"hidden-{i}")
        nb.cells.append(cell)
    return nb


# ----------------------------------------------------------------------------- running nbval


def grade_submission(path: Path, reference: nbformat.NotebookNode, lesson: str, run: GradingRun):
    """Grade one submitted file against the lesson's exercises (inputs from the run's seeds)."""
    exercises = exercises_of(lesson)
    result = SubmissionResult(
        student_name(path), {e.name: ExerciseResult(0, len(e.hidden)) for e in exercises}
    )
    t0 = time.perf_counter()
    try:
        raw = path.read_bytes()
        submission = nbformat.reads(raw.decode("utf-8", "replace"), as_version=4)
        if not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
        file_ids = [c.get("id") for c in json.loads(raw).get("cells", []) if isinstance(c, dict)]
    except Exception as exc:  # anything unreadable: every exercise is missing
        for r in result.exercises.values():
            r.notes.append(f"not a readable notebook ({type(exc).__name__}: {str(exc)[:80]})")
        return result
    workdir = Path(tempfile.mkdtemp(prefix="submission-", dir=run.root))
    try:
        cases: dict[str, tuple[str, int]] = {}  # nodeid -> (exercise, case index)
        notebooks = []
        for ex in exercises:
            try:
                answers = answer_cells(submission, ex, file_ids)
            except KeyError as exc:
                result.exercises[ex.name].notes.append(str(exc.args[0]))
                continue
            refused = violations(answers, ex) if run.config.check_source else []
            if refused:
                result.exercises[ex.name].notes.append(f"not graded: the answer {refused[0]}")
                continue
            seed = run.seeds.get(ex.name)
            nb = grading_notebook(reference, answers, ex, seed)
            name = f"{ex.name}.ipynb"
            nbformat.write(nb, workdir / name)
            notebooks.append(name)
            first_hidden = len(nb.cells) - len(ex.hidden)
            for i in range(len(ex.hidden)):
                cases[f"{name}::Cell {first_hidden + i}"] = (ex.name, i)
        if notebooks:
            run_submission(workdir, notebooks, cases, result, run)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- reports


def grade(
    lesson: str,
    submissions: str | Path,
    out: str | Path,
    notebooks: str | Path = "notebooks",
    config: GradeConfig | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[SubmissionResult]:
    """Grade every file in ``submissions`` against ``lesson``; write the reports into ``out``."""
    config = config or GradeConfig()
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
    isolation = sandbox.detect()
    if config.sandboxed and isolation.bwrap is None:
        raise SandboxUnavailable(
            f"no sandbox on this machine ({isolation.reason}). Submissions are code: grading "
            "them without one lets each read your files and change other students' grades. "
            "Install bubblewrap (make grade does, as root), or pass --no-sandbox to grade "
            "submissions you trust."
        )
    seeds = draw_hidden_seeds([e.name for e in exercises])  # secret, new for every run
    expected = {e.name: reference_outputs(e, seeds[e.name]) for e in exercises}
    slots: queue.Queue = queue.Queue()
    for slot in range(config.jobs):
        slots.put(slot)
    root = Path(tempfile.mkdtemp(prefix="vfm-grade-"))
    # Measured before any submission runs: with no user of its own, the process limit counts
    # the grader's user's threads, and those of a concurrent submission must not raise it.
    rlimits = sandbox.rlimits(config.limits, isolation) if config.sandboxed else {}
    hide = [sub_dir, out, root]
    run = GradingRun(config, isolation, root, hide, slots, seeds, expected, rlimits)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs) as pool:
            futures = [pool.submit(grade_submission, p, reference, lesson, run) for p in files]
            bar = tqdm(
                total=len(files), desc=f"grading {lesson}", unit="submission", disable=not progress
            )
            done: dict[int, SubmissionResult] = {}
            try:
                for future in concurrent.futures.as_completed(futures):
                    i = futures.index(future)
                    done[i] = _result_or_failure(future, files[i], exercises)
                    # Each row as its submission finishes: a grader stopped midway leaves them.
                    rows = [done[k] for k in sorted(done)]
                    write_reports(rows, exercises, out, pending=len(files) - len(done))
                    bar.update(1)
            except BaseException:  # stopped (SIGTERM, Ctrl-C): start no further submission
                for future in futures:
                    future.cancel()
                raise
            bar.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [done[i] for i in range(len(files))]


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


def _stop(*_) -> None:
    """SIGTERM (kill, a scheduler): end every sandbox now, then leave through the normal path,
    which removes the work folders and keeps the rows written so far."""
    for child in psutil.Process().children():
        kill_tree(child.pid)
    sys.exit("grading stopped (SIGTERM); the rows written so far are in the reports")


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
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run submissions without the sandbox, as you (only for work you trust)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.cell_timeout < 1 or args.timeout < 1:
        sys.exit("error: --jobs, --cell-timeout and --timeout must be positive")
    config = GradeConfig(args.cell_timeout, args.timeout, args.jobs, not args.no_sandbox)
    signal.signal(signal.SIGTERM, _stop)
    isolation = sandbox.detect()
    if config.sandboxed:
        print(isolation.describe(config.limits))
    else:
        print("NO SANDBOX (--no-sandbox): submissions run as you, with your files")
    try:
        results = grade(
            args.lesson, args.submissions, args.out, args.notebooks, config, force=args.force
        )
    except (ValueError, FileNotFoundError, FileExistsError, SandboxUnavailable) as exc:
        sys.exit(f"error: {exc}")
    exercises = exercises_of(Path(args.lesson).name.removesuffix(".ipynb"))
    print(summary(results, exercises))
    print(f"wrote {Path(args.out) / 'grades.csv'} and {Path(args.out) / 'grades.md'}")


if __name__ == "__main__":
    main()
