"""Build hook: the installed package carries the course's shipped checkpoints.

Everything else about the package is declared in pyproject.toml. A non-editable install (the
notebooks' Colab cell: ``pip install "vfm_course @ git+..."``) has no repository ``data/``
folder beside it, so ``build_py`` copies ``data/manifest.json`` and the checkpoint files the
manifest lists into the built package as ``vfm_course/_data/`` (found at run time through
``importlib.resources``, see ``vfm_course/core/files.py``). The repository's ``data/`` stays the
one source of truth: nothing is committed twice. Each file is checked against the manifest's
sha256 first, so a wheel never ships a checkpoint that its loader would refuse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SHIPPED = "_data"  # vfm_course.core.files.SHIPPED


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_files() -> list[str]:
    """``manifest.json`` and every file it lists, relative to ``data/``, each verified."""
    manifest = DATA / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(
            f"{manifest} not found: build vfm_course from a full copy of the course repository "
            f"(its data/ folder carries the shipped checkpoints)."
        )
    entries = json.loads(manifest.read_text()).get("checkpoints", {})
    for name, entry in entries.items():
        path = DATA / entry["file"]
        if not path.is_file():
            raise SystemExit(f"checkpoint {name!r} ({path}) is listed in the manifest but missing")
        # A Git LFS pointer or a half-written file would fail here, not in a learner's lesson.
        if _sha256(path) != entry["sha256"]:
            raise SystemExit(f"checkpoint {name!r} ({path}) does not match its manifest sha256")
    return ["manifest.json", *(entry["file"] for entry in entries.values())]


class BuildPyWithData(build_py):
    """``build_py`` plus the shipped data copied into ``vfm_course/_data/``."""

    def run(self) -> None:
        super().run()
        # An editable install runs from the checkout, which reads data/ itself.
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "vfm_course" / SHIPPED
        for relative in shipped_files():
            self.mkpath(str((target / relative).parent))
            self.copy_file(str(DATA / relative), str(target / relative))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        target = Path(self.build_lib) / "vfm_course" / SHIPPED
        return [*outputs, *(str(target / relative) for relative in shipped_files())]


setup(cmdclass={"build_py": BuildPyWithData})
