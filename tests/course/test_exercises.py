"""The exercise registry, the notebook check that falls back to the reference, the fingerprint."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch

from vfm_course.course.exercises.registry import EXERCISES, check_exercise, exercises_of
from vfm_course.course.grading.hidden import (
    BOUNDARY_MARGIN,
    boundary_margin,
    draw_hidden_seeds,
    fingerprint,
    hidden_cell_source,
    hidden_namespace,
    hidden_seed,
    reference_outputs,
    run_case,
)
from vfm_course.course.student import BEGIN

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _cells(notebook: str) -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    return {c.get("id"): c for c in nb.cells}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_registry_points_at_the_notebooks_answer_cells(name):
    ex = EXERCISES[name]
    cells = _cells(ex.notebook)
    for cell_id in ex.cells:
        assert cell_id in cells, f"{ex.notebook} has no cell with id {cell_id}"
        assert BEGIN in cells[cell_id].source
    defined = "".join(cells[i].source for i in ex.cells)
    for fn in ex.functions:
        assert f"def {fn}(" in defined
    # The notebook checks this exercise by name with the same functions.
    lhs = ", ".join(ex.functions)
    call = f'{lhs} = check_exercise("{name}", {lhs})'
    assert any(call in c.source for c in cells.values())


def test_every_answer_cell_belongs_to_an_exercise():
    registered = {(e.notebook, c) for e in EXERCISES.values() for c in e.cells}
    for path in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and BEGIN in cell.source:
                assert (path.stem, cell.get("id")) in registered, (path.name, cell.get("id"))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_references_pass_their_own_checker(name, capsys):
    ex = EXERCISES[name]
    assert ex.checker(*ex.references)
    used = check_exercise(name, *ex.references)
    used = used if isinstance(used, tuple) else (used,)
    assert used == ex.references  # a passing answer is used as it is
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hidden_outputs_are_far_from_rounding_boundaries(name):
    """The grader compares 3-decimal text, so a printed value within float error of a rounding
    boundary could print differently for an equally correct answer; the hidden seed avoids it."""
    ex = EXERCISES[name]
    seed = hidden_seed(name)
    assert ex.seed <= seed < ex.seed + 1000
    for case in ex.hidden:
        namespace = hidden_namespace(seed)
        namespace.update(zip(ex.functions, ex.references, strict=True))
        value = eval(case.call, namespace)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v.is_floating_point():
                flat = v.double().reshape(-1)
                picks = flat[:: max(1, flat.numel() // 8)][:8]
                for x in [flat.sum(), flat.abs().sum(), *picks]:
                    scaled = float(x) * 1000
                    assert abs(scaled - math.floor(scaled) - 0.5) > BOUNDARY_MARGIN


def test_each_grading_run_draws_new_secret_hidden_seeds():
    names = ["attention", "split_merge_heads"]
    first, second = draw_hidden_seeds(names), draw_hidden_seeds(names)
    assert set(first) == set(names)
    assert all(first[n] != second[n] for n in names)  # 2**62 possible starts: never equal
    assert all(first[n] != hidden_seed(n) for n in names)  # not the seeds the package ships
    ex = EXERCISES["attention"]
    seed = first["attention"]
    assert boundary_margin(run_case(ex, ex.hidden[0], ex.references, seed)) > BOUNDARY_MARGIN
    assert f"manual_seed({seed})" in hidden_cell_source(ex, ex.hidden[0], seed)
    assert reference_outputs(ex, seed) != reference_outputs(ex)


def test_boundary_margin_measures_distance_to_the_rounding_boundary():
    assert boundary_margin(torch.tensor([0.0]).double()) == pytest.approx(0.5)
    assert boundary_margin(torch.tensor(0.0125, dtype=torch.float64)) < 0.01
    assert boundary_margin(torch.tensor([1, 2])) == 0.5  # integers print exactly


def test_hidden_cell_prints_the_reference_fingerprint(capsys):
    ex = EXERCISES["attention"]
    expected = reference_outputs(ex)
    for case, text in zip(ex.hidden, expected, strict=True):
        source = hidden_cell_source(ex, case)
        assert source.startswith("# hidden check attention")  # compared by the grader, not nbval
        exec(source, {"my_attention": ex.references[0]})
        assert capsys.readouterr().out == text


def test_unfinished_exercise_falls_back_to_the_reference(capsys):
    def my_attention(q, k, v, mask=None):
        raise NotImplementedError

    used = check_exercise("attention", my_attention)
    out = capsys.readouterr().out
    assert "✗" in out and "not finished" in out and "reference" in out
    q = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(used(q, q, q), EXERCISES["attention"].references[0](q, q, q))
    # Running the check cell again checks the learner's function, not the stand-in.
    again = check_exercise("attention", used)
    assert "not finished" in capsys.readouterr().out
    assert again.__vfm_learner__ is my_attention


def test_wrong_answer_gets_the_hint_and_then_the_fixed_answer_is_used(capsys):
    def unscaled(q, k, v, mask=None):  # the classic mistake: no 1/sqrt(d)
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    check_exercise("attention", unscaled)
    assert "sqrt" in capsys.readouterr().out
    fixed = EXERCISES["attention"].references[0]
    assert check_exercise("attention", fixed) is fixed


def test_check_exercise_rejects_unknown_names_and_wrong_arity():
    with pytest.raises(KeyError, match="unknown exercise"):
        check_exercise("atention", print)
    with pytest.raises(TypeError, match="2 function"):
        check_exercise("split_merge_heads", print)


def test_fingerprint_format():
    assert fingerprint(torch.tensor([-1e-5, 0.25])).endswith("values ['0.000', '0.250']")
    assert fingerprint(torch.tensor([True, False])) == "(2,) int sum 1 values [1, 0]"
    assert fingerprint((torch.tensor(2.0), 3)) == (
        "() float sum 2.000 abs 2.000 values ['2.000'] || int 3.000"
    )
    a, b = torch.zeros(3), torch.zeros(3)
    b[1] = 2e-3
    assert fingerprint(a) != fingerprint(b)


def test_exercises_of_lesson():
    assert [e.name for e in exercises_of("01_attention_from_scratch.ipynb")] == [
        "attention",
        "split_merge_heads",
        "online_softmax_attention",
    ]
