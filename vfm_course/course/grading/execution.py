"""Running one submission's grading notebooks: the runner in the sandbox, then the comparison of
what its hidden cells printed with the reference's, after the sandbox is gone."""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..exercises.registry import EXERCISES
from . import sandbox
from .nbval import RESULT_PREFIX
from .results import SubmissionResult

_CGROUP_NUMBERS = itertools.count()  # a new cgroup name for every submission


@dataclass(frozen=True)
class GradeConfig:
    cell_timeout: int = 60  # seconds per cell (nbval interrupts the kernel)
    total_timeout: int = 600  # seconds per submission, all its exercises together
    jobs: int = 2  # submissions graded at once
    sandboxed: bool = True  # False only for trusted work, on a machine without bubblewrap
    # False turns off the static check of answers (policy), so that tests can show what the
    # run-time defences hold on their own.
    check_source: bool = True
    limits: sandbox.Limits = sandbox.Limits()


@dataclass
class GradingRun:
    """What one grading run shares between its submissions."""

    config: GradeConfig
    isolation: sandbox.Isolation
    root: Path  # the run's work folders, one per submission (hidden from every sandbox)
    hide: list[Path]  # folders no submission may see
    slots: queue.Queue  # sandbox user ids in use: one per submission graded at once
    seeds: dict[str, int]  # exercise -> the secret seed of its hidden inputs
    expected: dict[str, list[str]]  # exercise -> what its hidden cells must print
    rlimits: dict[str, int]  # the runner's per-process limits (sandbox.rlimits), once per run


def kill_tree(pid: int) -> None:
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


def run_submission(
    workdir: Path,
    notebooks: list[str],
    cases: dict[str, tuple[str, int]],
    result: SubmissionResult,
    run: GradingRun,
) -> None:
    """Run the runner on ``notebooks`` (in the sandbox), then compare what it printed."""
    config, isolation = run.config, run.isolation
    code = "import sys, json; from vfm_course.course.grading.nbval import run_nbval; "
    code += "sys.exit(run_nbval(sys.argv[3:], int(sys.argv[2]), json.loads(sys.argv[1])))"
    cmd = [sys.executable, "-c", code, json.dumps(run.rlimits), str(config.cell_timeout)]
    cmd += notebooks
    slot = run.slots.get()
    try:
        name = f"vfm-grade-{os.getpid()}-{next(_CGROUP_NUMBERS)}"
        with sandbox.cgroup(
            isolation.cgroup if config.sandboxed else None, name, config.limits
        ) as procs:
            if config.sandboxed:
                sandbox.prepare_workdir(workdir, isolation, slot)
                cmd = sandbox.sandbox_command(cmd, workdir, isolation, run.hide, slot, procs)
            out, timed_out = _communicate(cmd, workdir, config)
    finally:
        run.slots.put(slot)
    seen: set[str] = set()
    for line in out.splitlines():
        if not line.startswith(RESULT_PREFIX + " "):
            continue  # pytest's own report, or anything a kernel wrote
        try:
            rec = json.loads(line.removeprefix(RESULT_PREFIX + " "))
            nodeid, outcome, printed = rec["nodeid"], rec["outcome"], rec.get("stdout", "")
        except (ValueError, KeyError, TypeError):
            continue
        if nodeid not in cases or nodeid in seen:
            continue
        seen.add(nodeid)
        name, index = cases[nodeid]
        r = result.exercises[name]
        if outcome == "passed" and printed == run.expected[name][index]:
            r.points += 1
        else:
            problem = rec.get("problem") if outcome != "passed" else "wrong result"
            r.notes.append(f"{_case_label(name, index)}: {str(problem)[:160]}")
    for nodeid, (name, index) in cases.items():
        if nodeid not in seen:
            why = "the submission's time limit ran out" if timed_out else "not run"
            result.exercises[name].notes.append(f"{_case_label(name, index)}: {why}")


def _communicate(cmd: list[str], workdir: Path, config: GradeConfig) -> tuple[str, bool]:
    """The runner's stdout (bytes read as UTF-8 with replacement: a kernel may write anything
    to the pipe it inherits) and whether the submission's time limit ran out."""
    env = {**os.environ, **sandbox.RUNNER_ENV}  # the sandbox replaces it with its own
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("VFM_GRADE_DEBUG") else subprocess.DEVNULL,
    )
    try:
        raw, _ = proc.communicate(timeout=config.total_timeout)
        return raw.decode("utf-8", "replace"), False
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        raw, _ = proc.communicate()
        return raw.decode("utf-8", "replace"), True


def _case_label(name: str, index: int) -> str:
    return EXERCISES[name].hidden[index].label
