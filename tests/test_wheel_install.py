"""The package as a learner on Colab gets it: built into a wheel, installed (not editable) into a
fresh environment, used from a folder outside the repository with ``VFM_DATA_DIR`` unset. Every
shipped checkpoint loads, lesson 01 runs, and so does lesson 06, the cheapest lesson that loads
a shipped checkpoint (book/runtimes.json).

Offline on purpose: the wheel is built without build isolation (this environment's setuptools),
and the fresh environment borrows this one's third-party packages through a ``.pth`` path line;
pip installs only the wheel (``--no-deps --no-index``). A path line does not run the ``.pth``
files in that folder, so the editable install's import hook stays off; the probes check that
the wheel's ``vfm_course`` is what imports, in the process and in the lesson's kernel. The wheel
is built from an sdist (as ``python -m build`` does), so the sdist's contents are tested too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = Path(__file__).with_name("installed_check.py")
LESSONS = ("01_attention_from_scratch.ipynb", "06_detection_segmentation.ipynb")
# What a build reads: the top-level files, the package and the shipped data (not the 500 MB
# generated cache, downloads or full-profile checkpoints, which the build must not need).
SKIP = shutil.ignore_patterns(
    "__pycache__", "*.egg-info", "_data", "cache", "downloads", "full", ".ipynb_checkpoints"
)


@dataclass(frozen=True)
class Installed:
    """A fresh environment holding the built wheel, and how to run code in it."""

    wheel: Path
    python: Path  # the fresh environment's interpreter
    package: Path  # the installed vfm_course folder, inside its site-packages
    outside: Path  # a working folder outside the repository
    env: dict[str, str]


def run(cmd: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure, fail the test with the command's output tail."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        pytest.fail(
            f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return done


def build(work: Path, env: dict[str, str]) -> Path:
    """The sdist from a copy of the source, then the wheel from the unpacked sdist."""
    copy, unpacked, dist = work / "source", work / "unpacked", work / "dist"
    copy.mkdir()
    for item in REPO.iterdir():
        if item.is_file() and not item.name.startswith("."):  # no .git, .gitignore
            shutil.copy2(item, copy / item.name)
    for folder in ("vfm_course", "data"):
        shutil.copytree(REPO / folder, copy / folder, ignore=SKIP)
    hook = "import sys; from setuptools import build_meta; build_meta.{}(sys.argv[1])"
    run([sys.executable, "-c", hook.format("build_sdist"), dist], cwd=copy, env=env)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(unpacked, **safe)
    (root,) = unpacked.iterdir()
    run([sys.executable, "-c", hook.format("build_wheel"), dist], cwd=root, env=env)
    shutil.rmtree(copy)
    shutil.rmtree(unpacked)
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if importlib.util.find_spec("pip") is None:
        pytest.skip(f"pip is not installed for {sys.executable}, so no wheel can be installed")
    work = tmp_path_factory.mktemp("wheel")
    # The repository must not leak in: no PYTHONPATH, no VFM_DATA_DIR; caches in a temporary
    # XDG folder. The smoke profile (the tiny one with a tenth of the live steps, even where a
    # GPU would pick the full one): what is tested here is that every cell runs from the wheel,
    # with its checkpoints loading; the printed numbers are checked by nbval on the repository.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VFM_DATA_DIR")}
    env.update(XDG_CACHE_HOME=str(work / "xdg"), VFM_PROFILE="smoke")
    env.setdefault("OMP_NUM_THREADS", "1")
    wheel = build(work, env)

    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], env=env)
    python = venv / "bin" / "python"
    site = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env
        ).stdout.strip()
    )
    # Install before borrowing this environment's packages, so pip sees an empty environment
    # (not the editable vfm_course) and never touches this one.
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    run([*pip, "--disable-pip-version-check", "--no-cache-dir", wheel], env=env)
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}  # from sys.prefix
    (site / "_vfm_borrowed_packages.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    outside = work / "outside"
    outside.mkdir()
    assert not outside.resolve().is_relative_to(REPO), "the working folder must be outside"
    return Installed(wheel, python, site / "vfm_course", outside, env)


def check(installed: Installed, what: str) -> dict:
    """Run tests/installed_check.py in the fresh environment from the outside folder."""
    cmd = [installed.python, "-I", CHECK, what]
    done = run(cmd, cwd=installed.outside, env=installed.env, timeout=3600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_is_the_wheel(installed: Installed, where: dict) -> None:
    """``where`` (a probe's report) saw the wheel's package and its shipped data."""
    assert Path(where["package"]).parent == installed.package, where
    assert Path(where["data"]) == installed.package / "_data", where
    assert where["source"] == "installed", where
    assert Path(where["work"]) == Path(installed.env["XDG_CACHE_HOME"]) / "vfm_course", where


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` except bytecode caches (Python writes those on import)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_the_wheel_carries_the_manifest_and_its_checkpoints(installed: Installed) -> None:
    manifest = json.loads((REPO / "data" / "manifest.json").read_text())["checkpoints"]
    wanted = {"manifest.json", *(entry["file"] for entry in manifest.values())}
    prefix = "vfm_course/_data/"
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {n[len(prefix) :] for n in wheel.namelist() if n.startswith(prefix)}
        assert shipped == wanted
        for entry in manifest.values():
            digest = hashlib.sha256(wheel.read(prefix + entry["file"])).hexdigest()
            assert digest == entry["sha256"], entry["file"]
        assert wheel.read(prefix + "manifest.json") == (REPO / "data/manifest.json").read_bytes()
        assert not [n for n in wheel.namelist() if "/cache/" in n or n.startswith("data/")]


def test_the_installed_package_loads_every_checkpoint(installed: Installed) -> None:
    before = files_under(installed.package)
    report = check(installed, "checkpoints")
    assert_is_the_wheel(installed, report["process"])
    manifest = json.loads((REPO / "data" / "manifest.json").read_text())["checkpoints"]
    assert sorted(report["loaded"]) == sorted(manifest)
    # Generated data goes to the user's cache folder, never into site-packages.
    cache = Path(installed.env["XDG_CACHE_HOME"]) / "vfm_course" / "cache"
    assert report["cached"] and all(Path(p).parent == cache for p in report["cached"])
    assert files_under(installed.package) == before


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_runs_from_the_wheel(installed: Installed, lesson: str) -> None:
    before = files_under(installed.package)
    report = check(installed, str(REPO / "notebooks" / lesson))  # raises on any failing cell
    assert_is_the_wheel(installed, report["process"])
    assert_is_the_wheel(installed, report["kernel"])
    assert Path(report["kernel"]["python"]) == installed.python
    assert files_under(installed.package) == before


def test_without_its_data_the_error_says_what_to_do(installed: Installed) -> None:
    shipped, away = installed.package / "_data", installed.outside / "_data_taken_away"
    shipped.rename(away)
    try:
        report = check(installed, "missing")
    finally:
        away.rename(shipped)
    assert "Reinstall it from the course repository" in report["error"]
    assert "VFM_DATA_DIR" in report["error"]
