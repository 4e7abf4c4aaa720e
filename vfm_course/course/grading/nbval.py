"""The grading subprocess: nbval over the grading notebooks, each hidden cell's result sent back
as a token-marked line on stdout (compared outside the student's kernel)."""

from __future__ import annotations

import json
import os
import re
import sys

import nbformat

RESULT_PREFIX = "vfm-grade-result"


class _GradingPlugin:
    """pytest plugin inside the grading subprocess.

    * It puts the expected outputs into the hidden cells after collection. They arrive through
      the subprocess's stdin, never through a file the learner's kernel could read.
    * It reports each cell's outcome as soon as it is known, as a line on the subprocess's
      original stdout (saved before pytest starts capturing), so a run killed at the time limit
      keeps what it finished. Each line carries a random token that also came through stdin: a
      kernel inherits that stdout and could write to it, but cannot know the token, so a
      submission cannot forge a result line.
    """

    def __init__(self, expected: dict[str, list[dict]], token: str) -> None:
        self.expected = expected
        self.prefix = f"{RESULT_PREFIX} {token} "
        self.out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            if item.nodeid in self.expected:
                item.cell.outputs = [nbformat.from_dict(o) for o in self.expected[item.nodeid]]

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            text = report.longreprtext if report.outcome != "passed" else ""
            line = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
            line["problem"] = _problem(text, report)
            # On a line of its own: pytest's progress dots share this stream.
            self.out.write("\n" + self.prefix + json.dumps(line) + "\n")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_EXCEPTION_LINE = re.compile(r"^(\w+(Error|Exception|Interrupt|Exit))\b:?(.*)$")


def _problem(text: str, report) -> str:
    """A short, learner-readable reason for a failed hidden cell."""
    if report.outcome == "passed":
        return ""
    text = _ANSI.sub("", text)
    if "Timeout" in text or "timed out" in text:
        return "time limit exceeded"
    if "Kernel dead" in text or "Kernel died" in text:
        return "the kernel crashed"
    exceptions = [m for line in text.splitlines() if (m := _EXCEPTION_LINE.match(line.strip()))]
    if exceptions:
        name, detail = exceptions[-1].group(1), exceptions[-1].group(3).strip()
        if name == "NotImplementedError":
            return "not finished (NotImplementedError)"
        return f"raised {name}: {detail}"[:160]
    if "differ" in text:
        return "wrong result"
    return "not run" if report.outcome == "skipped" else "failed"


def run_nbval(notebooks: list[str], cell_timeout: int) -> int:
    """Entry point of the grading subprocess (``python -c``): nbval over ``notebooks``, with
    the expected outputs (JSON, by pytest node id) read from stdin."""
    import pytest

    given = json.loads(sys.stdin.read())
    args = ["-q", "-p", "no:cacheprovider", "--color=no", "--nbval-lax", "--nbval-current-env"]
    args += [f"--nbval-cell-timeout={cell_timeout}", "--rootdir", ".", "-c", os.devnull]
    plugin = _GradingPlugin(given["expected"], given["token"])
    return pytest.main(args + notebooks, plugins=[plugin])
