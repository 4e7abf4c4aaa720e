"""The grading runner, inside the sandbox: nbval over the grading notebooks, each cell's outcome
and printed text sent back as a line on stdout. The runner knows no expected result: the grader
compares the printed fingerprints after the sandbox is gone."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

RESULT_PREFIX = "vfm-grade-result"


class _GradingPlugin:
    """pytest plugin inside the grading runner.

    It reports each cell's outcome and the text it printed on stdout as soon as it is known, as
    a line on the runner's original stdout (saved before pytest starts capturing), so a run
    killed at the time limit keeps what it finished. A kernel inherits that stdout and could
    write lines of its own to it; they can only claim what the grader recomputes outside (the
    fingerprint of a correct answer to inputs drawn from a secret seed)."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or report.outcome != "passed":
            outputs = getattr(item, "test_outputs", None) or []
            line = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
            line["problem"] = _problem(report.longreprtext, report)
            line["stdout"] = "".join(
                o.get("text", "")
                for o in outputs
                if o.get("output_type") == "stream" and o.get("name") == "stdout"
            )
            line["other_outputs"] = sum(1 for o in outputs if o.get("output_type") != "stream")
            # On a line of its own: pytest's progress dots share this stream.
            self.out.write("\n" + RESULT_PREFIX + " " + json.dumps(line) + "\n")


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
    return "not run" if report.outcome == "skipped" else "failed"


def run_nbval(notebooks: list[str], cell_timeout: int, rlimits: dict[str, int]) -> int:
    """Entry point of the grading runner (``python -c``): the per-process limits first (every
    kernel inherits them), then nbval over ``notebooks``."""
    from .sandbox import set_rlimits

    set_rlimits(rlimits)
    args = ["-q", "-p", "no:cacheprovider", "--color=no", "--nbval-lax", "--nbval-current-env"]
    args += [f"--nbval-cell-timeout={cell_timeout}", "--rootdir", ".", "-c", os.devnull]
    return pytest.main(args + notebooks, plugins=[_GradingPlugin()])
