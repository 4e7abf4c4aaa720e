"""Run by tests/test_wheel_install.py inside the fresh environment it installs the wheel into,
as ``python -I installed_check.py checkpoints|missing|NOTEBOOK`` from a folder outside the
repository.

``-I`` keeps the repository off ``sys.path`` (no script folder, no ``PYTHONPATH``), so what
imports is the installed wheel. Prints one JSON line on stdout: where ``vfm_course`` and its
data were found (in this process, and for a notebook also inside its kernel) and what ran. Any
failure (a checkpoint that does not load, a cell that raises) exits non-zero with its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The first cell of the executed lesson: the kernel reports its own interpreter and package,
# which is the one that matters (a kernel could start from another environment's python).
PROBE = """\
import json, sys
import vfm_course
from vfm_course.core.files import data_location
_where = data_location()
print(json.dumps({"python": sys.executable, "package": vfm_course.__file__,
                  "data": str(_where.data), "work": str(_where.work), "source": _where.source}))
"""


def where() -> dict[str, str]:
    """This process's interpreter, imported package and data folders."""
    import vfm_course
    from vfm_course.core.files import data_location

    found = data_location()
    return {
        "python": sys.executable,
        "package": vfm_course.__file__,
        "data": str(found.data),
        "work": str(found.work),
        "source": found.source,
    }


def load_every_checkpoint() -> dict[str, str]:
    """Each manifest entry loaded (sha256-verified) the way a lesson loads it: name -> class."""
    import vfm_course
    from vfm_course.models import read_manifest

    loaded = {}
    for name in sorted(read_manifest()["checkpoints"]):
        model, _ = vfm_course.load_course_model(name)
        loaded[name] = type(model).__name__
    return loaded


def cache_one_dataset() -> list[str]:
    """Generate a small shapes split through the default cache; the cache's files afterwards."""
    from vfm_course.core.files import cache_dir
    from vfm_course.data import load_shapes

    load_shapes("test", 8)
    return sorted(str(p) for p in cache_dir().iterdir())


def execute(notebook: Path) -> dict[str, object]:
    """Execute ``notebook`` top to bottom in a fresh kernel, working folder = the current one."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(Path.cwd())}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    probe = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    return {"kernel": json.loads(probe), "cells": len(nb.cells) - 1}


def main(argv: list[str]) -> None:
    (what,) = argv
    report: dict[str, object] = {"process": where()}
    if what == "missing":  # the shipped data was taken away: the error a learner would read
        from vfm_course.core.files import CheckpointError

        try:
            load_every_checkpoint()
        except CheckpointError as error:
            report["error"] = str(error)
    elif what == "checkpoints":
        report["loaded"] = load_every_checkpoint()
        report["cached"] = cache_one_dataset()
    else:
        report.update(execute(Path(what)))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
