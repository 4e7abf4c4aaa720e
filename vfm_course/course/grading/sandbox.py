"""The throw-away sandbox each submission runs in: bubblewrap, a user of its own, limits.

What a submission's code meets (:func:`sandbox_command`):

* the whole system **read-only** (the course package, the Python environment, everything), with
  the grader's folders — the submissions, the reports, the other submissions' work folders —
  and the home folder hidden under empty ``tmpfs`` mounts; a private, empty ``/tmp`` and
  ``/dev/shm``; its own work folder (the grading notebooks) the only writable place it shares;
* **no network** (only its own loopback, which the kernels use), its own **PID namespace** (no
  other process is visible, and every process it started is killed when it ends: a detached
  ``setsid`` process dies with the sandbox), its own IPC and host name, a new session (no
  terminal injection);
* when the grader runs as root, a **user id of its own** (``setpriv``; no capabilities, no
  new privileges), so nothing it does is done as the instructor or as another submission;
* **limits**: a cgroup per submission with a memory and a process-count limit where this
  machine lets the grader create one, and in any case per-process limits (address space, CPU
  time, file size, processes, no core files) that the runner sets before any kernel starts.

bubblewrap (Debian's ``bubblewrap`` package) does the namespaces and mounts; :func:`detect`
says what this machine allows, and the grader prints it. Nothing secret enters the sandbox: the
expected results are computed and compared by the grader after the sandbox is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
INSIDE = "/tmp/notebooks"  # the work folder, as the submission sees it
TEMPORARY = ("/tmp", "/dev/shm", "/var/tmp", "/run")  # empty and private in every sandbox
# What the runner needs in its environment, sandboxed or not: one torch thread per kernel, and
# no .pyc files written beside the course.
RUNNER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
FIRST_UID = 61000  # sandbox user ids: FIRST_UID + slot, one per submission graded at once


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # resident memory of the whole submission (cgroup)
    processes: int = 256  # processes and threads of the whole submission
    cpu_seconds: int = 900  # CPU time of each process
    file_mb: int = 512  # the largest file it may write
    # Address space per process when no cgroup limits memory: torch alone maps ~3.6 GB.
    address_space_mb: int = 8192


@dataclass(frozen=True)
class Isolation:
    bwrap: str | None  # path of bwrap, None when there is no working sandbox
    as_root: bool  # the grader is root (no user namespace: bubblewrap runs privileged)
    cgroup: str | None  # "v1" or "v2" when the grader can make cgroups, else None
    reason: str = ""  # why there is no sandbox
    # Root only: each submission runs as a user id of its own. False where that user cannot
    # read Python or the course (a clone in a folder only root may enter): then root without
    # any capability, which the read-only mounts and the namespaces still confine.
    own_user: bool = False

    def describe(self, limits: Limits) -> str:
        """What this isolation gives, in one paragraph, for the instructor."""
        if self.bwrap is None:
            return f"NO SANDBOX ({self.reason}): submissions run as you, with your files"
        who = (
            "its own user id"
            if self.own_user
            else "root without capabilities (the course is not readable by another user here)"
            if self.as_root
            else "your user id, in a user namespace"
        )
        mem = (
            f"cgroup {self.cgroup}: memory {limits.memory_mb} MB and {limits.processes} "
            "processes per submission"
            if self.cgroup
            else f"no cgroup (per-process limits only: {limits.address_space_mb} MB address "
            f"space, {limits.processes} processes)"
        )
        return (
            f"sandbox: bubblewrap ({self.bwrap}); read-only system, private /tmp, no network, "
            f"own PID namespace; runs as {who}; {mem}; CPU {limits.cpu_seconds} s per process"
        )


BASE_FLAGS = [
    "--die-with-parent",
    "--new-session",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
]


@functools.cache
def detect() -> Isolation:
    """The strongest isolation this machine gives (bubblewrap tried for real)."""
    as_root = os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation(None, as_root, None, "bubblewrap is not installed: apt install bubblewrap")
    flags = BASE_FLAGS + ([] if as_root else ["--unshare-user"])
    probe = [bwrap, *flags, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return Isolation(None, as_root, None, f"bubblewrap cannot make namespaces here: {why}")
    isolation = Isolation(bwrap, as_root, _cgroup_kind() if as_root else None)
    if as_root:  # can a user of its own start the runner here?
        with tempfile.TemporaryDirectory() as folder:
            own = dataclasses.replace(isolation, own_user=True)
            prepare_workdir(Path(folder), own, 0)
            check = [sys.executable, "-c", "import vfm_course.course.grading.nbval"]
            probe = sandbox_command(check, Path(folder), own, [], 0, [])
            if subprocess.run(probe, capture_output=True, timeout=120).returncode == 0:
                isolation = own
    return isolation


def _cgroup_kind() -> str | None:
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        controllers = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split()
        ok = {"memory", "pids"} <= set(controllers) and os.access(CGROUP_ROOT, os.W_OK)
        return "v2" if ok else None
    dirs = [CGROUP_ROOT / "memory", CGROUP_ROOT / "pids"]
    return "v1" if all(d.is_dir() and os.access(d, os.W_OK) for d in dirs) else None


@contextlib.contextmanager
def cgroup(kind: str | None, name: str, limits: Limits) -> Iterator[list[Path]]:
    """Cgroups for one submission (their ``cgroup.procs`` files), removed afterwards."""
    if kind is None:
        yield []
        return
    if kind == "v2":
        settings = {CGROUP_ROOT / name: {"memory.max": limits.memory_mb << 20}}
        settings[CGROUP_ROOT / name]["pids.max"] = limits.processes
    else:
        settings = {
            CGROUP_ROOT / "memory" / name: {"memory.limit_in_bytes": limits.memory_mb << 20},
            CGROUP_ROOT / "pids" / name: {"pids.max": limits.processes},
        }
    for folder, values in settings.items():
        folder.mkdir()
        for key, value in values.items():
            (folder / key).write_text(str(value))
    try:
        yield [folder / "cgroup.procs" for folder in settings]
    finally:
        for folder in settings:
            _remove_cgroup(folder)


def _remove_cgroup(folder: Path) -> None:
    # The PID namespace is gone, but its processes may take a moment to leave the cgroup.
    for _ in range(100):
        for pid in (folder / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        try:
            folder.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def _emptied_folders() -> list[str]:
    """Folders every sandbox sees empty (tmpfs): the shared temporary folders and the home
    folder. What Python and the course need from inside them (a clone under /tmp, Python under
    the home folder) is bound back, read-only."""
    home = Path.home().resolve()
    flags = []
    for folder in TEMPORARY:
        flags += ["--perms", "1777", "--tmpfs", folder]
    flags += ["--tmpfs", str(home)]
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    needed = {p.resolve() for p in needed}
    needed.add(Path(__file__).resolve().parents[3])  # the course (an editable install)
    for root in [*map(Path, TEMPORARY), home]:
        # The top folder under the emptied one (bubblewrap would make the folders above a
        # deeper path private to root, and the sandbox user could not reach Python at all).
        tops = {root / p.relative_to(root).parts[0] for p in needed if p.is_relative_to(root)}
        for path in sorted(t for t in tops if t != root):
            flags += ["--ro-bind", str(path), str(path)]
    return flags


def sandbox_command(
    command: list[str],
    workdir: Path,
    isolation: Isolation,
    hide: list[Path],
    slot: int,
    procs_files: list[Path],
) -> list[str]:
    """``command`` (run in ``workdir``, seen inside as :data:`INSIDE`) wrapped in the sandbox.

    ``hide``: folders the submission must not see (the submissions, the reports, the grader's
    other work folders); ``procs_files``: the cgroups it joins before bubblewrap starts."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "agg",
        **RUNNER_ENV,
    }
    env |= {k: v for k, v in os.environ.items() if k in ("VFM_DATA_DIR", "VFM_PROFILE")}
    argv = [isolation.bwrap or "bwrap", *BASE_FLAGS]
    if not isolation.as_root:
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += _emptied_folders()
    for folder in hide:
        if folder.exists():
            argv += ["--tmpfs", str(folder.resolve())]
    argv += ["--bind", str(workdir), INSIDE, "--chdir", INSIDE, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if isolation.as_root:
        argv.append("setpriv")
        if isolation.own_user:
            uid = str(FIRST_UID + slot)
            argv += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    argv += command
    if procs_files:  # join the cgroups first, so that every process is counted
        joins = "; ".join(f'echo $$ > "{p}"' for p in procs_files)
        argv = ["/bin/sh", "-c", f'{joins}; exec "$@"', "sh", *argv]
    return argv


def rlimits(limits: Limits, isolation: Isolation) -> dict[str, int]:
    """The per-process limits the runner sets inside the sandbox before any kernel starts (the
    kernels inherit them; a process can lower them, never raise them), by resource name."""
    values = {"CPU": limits.cpu_seconds, "FSIZE": limits.file_mb << 20, "CORE": 0}
    # RLIMIT_NPROC counts every process of the user id: the sandbox's own id starts at none;
    # the instructor's own id (no root) already runs some.
    others = 0 if isolation.own_user else _own_threads()
    values["NPROC"] = limits.processes + others
    if isolation.cgroup is None:
        values["AS"] = limits.address_space_mb << 20
    return values


def _own_threads() -> int:
    import psutil

    uid, n = os.getuid(), 0
    for p in psutil.process_iter(["uids", "num_threads"]):
        if p.info["uids"] is not None and p.info["uids"].real == uid:
            n += p.info["num_threads"] or 1  # the limit counts threads
    return n


def set_rlimits(values: dict[str, int]) -> None:
    import resource

    for name, value in values.items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))


def prepare_workdir(workdir: Path, isolation: Isolation, slot: int) -> None:
    """The work folder belongs to the submission's user (root grader) so it can write there."""
    if isolation.bwrap and isolation.own_user:
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, FIRST_UID + slot, FIRST_UID + slot)
