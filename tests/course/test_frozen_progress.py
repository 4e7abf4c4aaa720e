"""Progress bars stored as text: the text equals what tqdm prints in a terminal for the same
bar, every stored lesson carries it, and other widgets are left alone."""

from __future__ import annotations

from pathlib import Path

import ipywidgets
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from tqdm import tqdm as terminal_tqdm
from tqdm.notebook import tqdm as notebook_tqdm

from vfm_course.course.frozen_progress import (
    WIDGET_STATE,
    WIDGET_VIEW,
    freeze_progress_bars,
    progress_text,
)

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _view(model_id: str) -> dict:
    return new_output(
        "display_data",
        data={WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0}},
    )


@pytest.mark.parametrize("done", [0, 3, 7, 8])
def test_the_text_is_what_tqdm_prints_in_a_terminal(done):
    bar = notebook_tqdm(total=8, desc="fit", display=False, mininterval=0)
    bar.update(done)
    bar.set_postfix_str("loss=0.100", refresh=True)
    expected = terminal_tqdm.format_meter(**{**bar.format_dict, "ncols": None})
    state = ipywidgets.Widget.get_manager_state(drop_defaults=False)["state"]
    assert progress_text(bar.container.model_id, state) == expected
    bar.close()


def test_freezing_rewrites_bars_and_keeps_other_widgets():
    bar = notebook_tqdm(total=4, desc="MAE, live", display=False)
    bar.update(4)
    bar.close()
    slider = ipywidgets.IntSlider(value=3)
    state = ipywidgets.Widget.get_manager_state(drop_defaults=False)["state"]
    nb = new_notebook(
        cells=[new_code_cell("fit(...)", outputs=[_view(bar.container.model_id)])]
        + [new_code_cell("slider", outputs=[_view(slider.model_id)])]
    )
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": dict(state), "version_major": 2}}
    assert freeze_progress_bars(nb) == 1
    (out,) = nb.cells[0].outputs
    assert out.output_type == "stream" and out.text.startswith("MAE, live: 100%|██████████| 4/4")
    assert WIDGET_VIEW in nb.cells[1].outputs[0].data  # the slider is not a progress bar
    kept = nb.metadata["widgets"][WIDGET_STATE]["state"]
    assert slider.model_id in kept and bar.container.model_id not in kept
    assert all(child.model_id not in kept for child in bar.container.children)
    nbformat.validate(nb)
    assert freeze_progress_bars(nb) == 0  # nothing left to freeze


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_stored_lessons_show_their_progress_bars_as_text(path):
    nb = nbformat.read(path, as_version=4)
    views = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if WIDGET_VIEW in o.get("data", {})
    ]
    assert freeze_progress_bars(nb) == 0, f"run `python -m vfm_course.course.book freeze {path}`"
    assert not views or "widgets" in nb.metadata  # any widget left is not a bar, with its state
    finished = [
        o.text
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and "100%|██████████|" in o.text
    ]
    assert finished, "a lesson that trains stores at least one finished progress bar"
