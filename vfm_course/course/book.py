"""The course website (Jupyter Book 1.x) and the measured runtime of every lesson.

``make notebooks`` executes every lesson in place with :func:`execute` and records its wall time
and the kernel's peak memory in ``book/runtimes.json``; ``make book`` turns that record into the
appendix page ``book/runtimes.md`` (:func:`write_runtime_page`) and builds the site offline from
the executed notebooks, without training anything again::

    python -m vfm_course.course.book execute notebooks/0*.ipynb  # run in place, record runtimes
    python -m vfm_course.course.book runtimes                     # write book/runtimes.md

An executed notebook is stored with its progress bars as their final text
(:mod:`vfm_course.course.frozen_progress`); ``freeze`` does that alone to stored notebooks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil

from .frozen_progress import freeze_progress_bars

RUNTIMES_JSON = Path("book") / "runtimes.json"
RUNTIMES_PAGE = Path("book") / "runtimes.md"
_SAMPLE_S = 0.2  # how often the kernel's memory is sampled


class _PeakMemory:
    """Samples the resident memory of this process's children (the kernel) in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # the kernel may exit between listing and reading
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(_SAMPLE_S)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def execute_notebook(path: Path, timeout: int = 900) -> dict[str, object]:
    """Execute ``path`` in place (tiny profile unless VFM_PROFILE says otherwise); return its
    wall time in seconds and the kernel's peak resident memory in MB."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no per-cell timestamps in the committed notebooks
        resources={"metadata": {"path": path.parent}},
    )
    t0 = time.perf_counter()
    with _PeakMemory() as memory:
        client.execute()
    seconds = time.perf_counter() - t0
    freeze_progress_bars(nb)
    nbformat.write(nb, path)
    return {"seconds": round(seconds, 1), "peak_mb": round(memory.peak / 2**20)}


def execute(paths: list[Path], record: Path = RUNTIMES_JSON) -> dict[str, dict]:
    """Execute each notebook in place and merge the measurements into ``record``."""
    runtimes = json.loads(record.read_text()) if record.exists() else {}
    runtimes.setdefault("notebooks", {})
    for path in paths:
        print(f"executing {path} ...", flush=True)
        result = execute_notebook(path)
        runtimes["notebooks"][path.name] = result
        print(f"  {result['seconds']:.0f} s, peak {result['peak_mb']} MB", flush=True)
    runtimes["machine"] = {
        "cpu_cores": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "profile": os.environ.get("VFM_PROFILE", "tiny"),
        "python": platform.python_version(),
        "measured": time.strftime("%Y-%m-%d"),
    }
    record.write_text(json.dumps(runtimes, indent=2) + "\n")
    return runtimes


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def runtime_table(runtimes: dict) -> str:
    """The Markdown table of the recorded runtimes, one row per notebook, in lesson order."""
    rows = sorted(runtimes.get("notebooks", {}).items())
    if not rows:
        raise ValueError("no notebook runtimes recorded yet: run `make notebooks` first")
    lines = ["| lesson | wall time | peak memory of the kernel |", "|---|---|---|"]
    for name, r in rows:
        minutes, seconds = divmod(round(r["seconds"]), 60)
        wall = f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
        lines.append(f"| `{name}` | {wall} | {r['peak_mb']:,} MB |")
    total = sum(r["seconds"] for _, r in rows)
    lines.append(f"| **all lessons** | **{total / 60:.1f} min** | |")
    return "\n".join(lines)


def write_runtime_page(record: Path = RUNTIMES_JSON, page: Path = RUNTIMES_PAGE) -> Path:
    """Write the appendix page with the runtime table generated from ``record``."""
    if not record.exists():
        raise FileNotFoundError(f"{record} not found: run `make notebooks` to measure the lessons")
    runtimes = json.loads(record.read_text())
    m = runtimes.get("machine", {})
    text = f"""# Runtime of every lesson

Measured by `make notebooks`, which executes every lesson top to bottom in the
{m.get("profile", "tiny")} profile and records its wall time and the kernel's peak resident
memory (sampled every {_SAMPLE_S} s) in `book/runtimes.json`; this page is generated from that
file when the book is built. Machine: {m.get("cpu_cores", "?")} CPU cores, PyTorch with
{m.get("torch_threads", "?")} threads, Python {m.get("python", "?")}, measured on
{m.get("measured", "?")}. Times on another machine differ; the ratios between lessons less so.

{runtime_table(runtimes)}
"""
    page.write_text(text)
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vfm_course.course.book", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute notebooks in place and record their runtimes")
    run.add_argument("notebooks", nargs="+", type=Path)
    sub.add_parser("runtimes", help="write book/runtimes.md from book/runtimes.json")
    freeze = sub.add_parser("freeze", help="store executed notebooks' progress bars as text")
    freeze.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command in ("execute", "freeze"):
            missing = [str(p) for p in args.notebooks if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"no such notebook: {', '.join(missing)}")
        if args.command == "execute":
            execute(args.notebooks)
        elif args.command == "freeze":
            for path in args.notebooks:
                nb = nbformat.read(path, as_version=4)
                n = freeze_progress_bars(nb)
                if n:
                    nbformat.write(nb, path)
                print(f"{path}: {n} progress bars stored as text")
        else:
            print(f"wrote {write_runtime_page()}")
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
