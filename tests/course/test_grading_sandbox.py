"""The grader against a hostile class: each kind of attack that once earned marks or reached
other students (issue 17's classes) is built here as a submission of lesson 01, graded between
two honest submissions, in the sandbox.

A run-time attack's answer is *right only if the attack worked* (it adds 1 to its result when
it did not), so a score of zero is the proof that the sandbox held, and the same submission
graded without the sandbox scores full marks where the attack needs no sandbox to succeed
(``test_the_attacks_work_without_the_sandbox``)."""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

import vfm_course
from vfm_course.course.grading import sandbox
from vfm_course.course.grading.grader import GradeConfig, grade

from .test_grading import DEBUGGING_ATTENTION

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LESSON = "01_attention_from_scratch"
ORDER = ("attention", "split_merge_heads", "online_softmax_attention")

pytestmark = pytest.mark.skipif(
    sandbox.detect().bwrap is None, reason=f"no sandbox here: {sandbox.detect().reason}"
)

RIGHT_IF = """
def my_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    out = s.softmax(-1) @ v
    return out if _WORKED else out + 1
"""

GRADER_CMDLINE = Path("/proc/self/cmdline").read_bytes()  # the process that runs grade()
MARKER = f"vfm-sandbox-test-{uuid.uuid4().hex[:8]}"  # names what the attacks leave behind
PACKAGE_FILE = Path(vfm_course.__file__).parent / "course" / "grading" / "hidden.py"
SITE_PROBE = Path(psutil.__file__).parent.parent / f"{MARKER}.py"
TMP_PROBE = Path("/tmp") / MARKER


def attack(body: str) -> str:
    """An answer cell: ``body`` sets ``_WORKED``; the attention is right only if it did."""
    return body + "\n" + RIGHT_IF


RUNTIME_ATTACKS = {
    # Class 6: see the grader (pytest runs it) and read its memory.
    # Class 6: find the grading process (this test's, which runs grade()) and read its memory.
    "sees_the_grader": attack(
        f"""import os
_WORKED = False
for _pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{{_pid}}/cmdline", "rb").read() == {GRADER_CMDLINE!r}:
            open(f"/proc/{{_pid}}/mem", "rb").close()
            _WORKED = True
    except OSError:
        pass"""
    ),
    # Class 8: change the course package or the environment for later submissions, or leave
    # a file in /tmp (its own /tmp is private and writable: the file must not reach the host's).
    "writes_the_package": attack(
        f"""_WORKED = False
for _path in ({str(PACKAGE_FILE)!r}, {str(SITE_PROBE)!r}):
    try:
        with open(_path, "a") as _f:
            _f.write("\\n# {MARKER}\\n")
        _WORKED = True
    except OSError:
        pass
open({str(TMP_PROBE)!r}, "w").write("left for the next submission")"""
    ),
    # Class 10: gigabytes of memory and hundreds of threads.
    "takes_the_memory": attack(
        """try:
    _big = torch.ones(10 * 2**30, dtype=torch.uint8)
    _WORKED = bool(_big[-1] == 1)
    del _big
except (RuntimeError, MemoryError):
    _WORKED = False"""
    ),
    "starts_many_threads": attack(
        """import threading
_stop, _threads = threading.Event(), []
try:
    for _ in range(400):
        _threads.append(threading.Thread(target=_stop.wait))
        _threads[-1].start()
    _WORKED = True
except RuntimeError:
    _WORKED = False
_stop.set()"""
    ),
}


def lingering(target: Path) -> str:
    """Class 9: a detached process that outlives its submission and, a few seconds later (before
    the next student's turn), overwrites that student's notebook."""
    return (
        f"""import subprocess, sys
_code = "import sys, time; time.sleep(3); open(sys.argv[1], 'w').write('overwritten')"
subprocess.Popen(
    ["setsid", sys.executable, "-c", _code, {str(target)!r}, {MARKER!r}], start_new_session=True
)
_WORKED = False
"""
        + RIGHT_IF
    )


# Classes 1, 4 and 5: answers that call the library or hide what they run. Refused by the
# static check of the answer (their scores would be full marks without it).
SDPA = """def my_attention(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""
SOURCE_ATTACKS = {
    "calls_torch": SDPA,
    "calls_the_package": "def my_attention(q, k, v, mask=None):\n"
    "    return scaled_dot_product_attention(q, k, v, mask)\n",
    "runs_encoded_code": f"exec(bytes.fromhex({SDPA.encode().hex()!r}).decode())\n",
    "adds_an_input_transformer": "get_ipython().input_transformers_post.append(lambda x: x)\n"
    + SDPA.replace("F.scaled_dot_product_attention", "my_other"),
    "detects_grading": "import os\n_GRADING = 'notebooks' in os.getcwd()\n"
    + RIGHT_IF.replace("_WORKED", "not _GRADING"),
}

# Class 12 beside them: an honest answer that imports, prints while it works and warns.
# (test_grading's, without its lone surrogate, which only an ASCII-escaped file can hold)
HONEST_WITH_IMPORTS = DEBUGGING_ATTENTION.replace("  # caf\udce9", "")


def _submission(folder: Path, name: str, attention: str) -> None:
    """A notebook with ``attention`` as its only answer (the other exercises' cells deleted:
    they are "missing", and cost no kernel)."""
    nb = nbformat.read(NOTEBOOKS / "student" / f"{LESSON}.ipynb", as_version=4)
    next(c for c in nb.cells if c.get("id") == "ex1-solution").source = attention
    others = {"ex2-split", "ex2-merge", "ex3-solution"}
    nb.cells = [c for c in nb.cells if c.get("id") not in others]
    nbformat.write(nb, folder / f"{name}.ipynb")


NEXT_STUDENT = "submissions/z_honest_after.ipynb"


def _grade(root: Path, attacks: dict[str, str], **config) -> dict:
    subs = root / "submissions"
    subs.mkdir()
    shutil.copy(NOTEBOOKS / f"{LESSON}.ipynb", subs / "a_honest_before.ipynb")
    for name, source in attacks.items():
        _submission(subs, f"m_{name}", source)
    shutil.copy(NOTEBOOKS / f"{LESSON}.ipynb", subs / "z_honest_after.ipynb")
    cfg = GradeConfig(cell_timeout=60, total_timeout=300, jobs=1, **config)
    results = grade(LESSON, subs, root / "out", NOTEBOOKS, cfg, progress=False)
    return {r.student: r for r in results}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    before = hashlib.sha256(PACKAGE_FILE.read_bytes()).hexdigest()
    root = tmp_path_factory.mktemp("runtime")
    attacks = {**RUNTIME_ATTACKS, "leaves_a_process": lingering(root / NEXT_STUDENT)}
    # Without the static check: these test what the sandbox holds on its own.
    results = _grade(root, attacks, check_source=False)
    time.sleep(4)  # past the lingering process's moment, had it survived
    yield results, before, root
    for probe in (SITE_PROBE, TMP_PROBE):
        probe.unlink(missing_ok=True)


@pytest.mark.parametrize("attack_name", list(RUNTIME_ATTACKS))
def test_runtime_attacks_earn_nothing(runtime, attack_name):
    results, _, _ = runtime
    r = results[f"m_{attack_name}"]
    assert r.exercises["attention"].points == 0, r.exercises["attention"].notes


def test_honest_submissions_around_the_attacks_keep_full_marks(runtime):
    results, _, _ = runtime
    for name in ("a_honest_before", "z_honest_after"):
        assert [results[name].exercises[e].score for e in ORDER] == [1.0, 1.0, 1.0], name


def test_nothing_outside_the_sandbox_was_changed(runtime):
    _, before, root = runtime
    assert hashlib.sha256(PACKAGE_FILE.read_bytes()).hexdigest() == before
    assert not SITE_PROBE.exists() and not TMP_PROBE.exists()
    assert (root / NEXT_STUDENT).read_bytes() == (NOTEBOOKS / f"{LESSON}.ipynb").read_bytes()
    assert "overwritten" not in (root / "out" / "grades.csv").read_text()


def test_no_process_outlives_its_submission(runtime):
    alive = [p for p in psutil.process_iter(["cmdline"]) if MARKER in (p.info["cmdline"] or [])]
    assert alive == []


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    attacks = {**SOURCE_ATTACKS, "honest_with_imports": HONEST_WITH_IMPORTS}
    return _grade(tmp_path_factory.mktemp("source"), attacks)


@pytest.mark.parametrize("attack_name", list(SOURCE_ATTACKS))
def test_answers_that_call_the_library_or_hide_code_are_refused(source, attack_name):
    r = source[f"m_{attack_name}"].exercises["attention"]
    assert r.points == 0
    assert any("not graded: the answer" in n for n in r.notes), r.notes


def test_an_honest_answer_with_imports_prints_and_warnings_gets_full_marks(source):
    assert source["m_honest_with_imports"].exercises["attention"].score == 1.0
    for name in ("a_honest_before", "z_honest_after"):
        assert source[name].total == 3


def test_the_attacks_work_without_the_sandbox(tmp_path):
    """The runtime tests can fail: unsandboxed, seeing the grader, writing /tmp and a process
    that overwrites the next student's notebook all succeed."""
    harmless = {"sees_the_grader": RUNTIME_ATTACKS["sees_the_grader"]}
    harmless["leaves_a_process"] = lingering(tmp_path / NEXT_STUDENT)
    harmless["writes_tmp"] = attack(
        f"_WORKED = True\nopen({str(tmp_path / MARKER)!r}, 'w').write('x')"
    )
    results = _grade(tmp_path, harmless, sandboxed=False, check_source=False)
    assert results["m_sees_the_grader"].exercises["attention"].score == 1.0
    assert results["m_writes_tmp"].exercises["attention"].score == 1.0
    assert (tmp_path / MARKER).exists()
    assert (tmp_path / NEXT_STUDENT).read_text() == "overwritten"
    assert results["z_honest_after"].total == 0


def test_grading_refuses_to_run_without_a_sandbox_unless_asked(tmp_path, monkeypatch):
    from vfm_course.course.grading import grader

    none = sandbox.Isolation(None, False, None, "bubblewrap is not installed")
    monkeypatch.setattr(grader.sandbox, "detect", lambda: none)
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(NOTEBOOKS / f"{LESSON}.ipynb", subs / "a.ipynb")
    with pytest.raises(grader.SandboxUnavailable, match="--no-sandbox"):
        grade(LESSON, subs, tmp_path / "out", NOTEBOOKS, progress=False)
    assert not (tmp_path / "out" / "grades.csv").exists()
