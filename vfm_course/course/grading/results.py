"""What a grade is (points per exercise, with the reasons points were lost) and the reports an
instructor reads: grades.csv, grades.md and a printed summary."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..exercises.exercise import Exercise


@dataclass
class ExerciseResult:
    points: int
    out_of: int
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.points / self.out_of


@dataclass
class SubmissionResult:
    student: str
    exercises: dict[str, ExerciseResult]
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(r.score for r in self.exercises.values())


def write_reports(
    results: list[SubmissionResult], exercises: list[Exercise], out: Path, pending: int = 0
) -> None:
    """``grades.csv`` and ``grades.md``: one row per student, one column per exercise; while
    ``pending`` submissions are still being graded, grades.md ends with a line saying so."""
    names = [e.name for e in exercises]
    with (out / "grades.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *names, "total", "out_of", "notes"])
        for r in results:
            scores = [f"{r.exercises[n].score:.2f}" for n in names]
            w.writerow([r.student, *scores, f"{r.total:.2f}", len(names), _notes(r)])
    lines = [
        "| student | " + " | ".join(names) + " | total | notes |",
        "|---" * (len(names) + 3) + "|",
    ]
    for r in results:
        scores = " | ".join(f"{r.exercises[n].score:.2f}" for n in names)
        notes, student = (_cell(text) for text in (_notes(r), r.student))
        lines.append(f"| {student} | {scores} | {r.total:.2f} / {len(names)} | {notes} |")
    if pending:
        lines.append(f"\n_Grading in progress: {pending} more submission(s) to come._")
    (out / "grades.md").write_text("\n".join(lines) + "\n")


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: no column break, no line break."""
    return " ".join(text.replace("|", "\\|").splitlines())


def _notes(r: SubmissionResult) -> str:
    return "; ".join(f"{n}: {note}" for n, e in r.exercises.items() for note in e.notes)


def summary(results: list[SubmissionResult], exercises: list[Exercise]) -> str:
    width = max(len("student"), *(len(r.student) for r in results))
    names = [e.name for e in exercises]
    head = f"{'student':<{width}}  " + "  ".join(f"{n[:12]:>12}" for n in names) + "   total"
    rows = [head]
    for r in results:
        cells = "  ".join(f"{r.exercises[n].score:>12.2f}" for n in names)
        rows.append(f"{r.student:<{width}}  {cells}  {r.total:>4.2f}/{len(names)}")
    return "\n".join(rows)
