"""Progress bars stored as their final text, so that a reader of an executed notebook sees
``MAE, live: 100%|██████████| 300/300 [00:56<00:00, loss=0.473]`` instead of nothing.

In a live front-end ``tqdm.auto`` draws a widget: a display output that names a model in the
notebook's widget state, with a ``text/plain`` fallback frozen at the bar's *first* draw
("0%|"). The book renders widget outputs only with the widget manager's JavaScript (which the
offline site does not load) and GitHub shows the stale fallback, so neither shows what the run
did. :func:`freeze_progress_bars` rewrites each progress-bar output of an executed notebook as
plain text rebuilt from the widget state (tqdm's own layout: description, percentage, bar,
counts, times, postfix) and drops the state those outputs used. Other widgets are kept.
"""

from __future__ import annotations

import html
from typing import Any

from nbformat.v4 import new_output

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10  # tqdm's bar width when it cannot measure the screen
_MODEL = "IPY_MODEL_"
_EIGHTHS = " ▏▎▍▌▋▊▉"  # tqdm's partial blocks, 0/8 to 7/8


def _text(value: Any) -> str:
    # tqdm.notebook writes HTML-escaped text with figure spaces (U+2007) for alignment.
    return html.unescape(str(value)).replace("\u2007", " ")


def _bar(value: float, total: float) -> str:
    # tqdm's Unicode bar: whole blocks, then one partial block in eighths, then spaces.
    frac = 1.0 if total <= 0 else min(max(value / total, 0.0), 1.0)
    full, eighths = divmod(int(frac * BAR_WIDTH * 8), 8)
    if full >= BAR_WIDTH:
        return "█" * BAR_WIDTH
    return "█" * full + _EIGHTHS[eighths] + " " * (BAR_WIDTH - full - 1)


def progress_text(model_id: str, state: dict[str, dict]) -> str | None:
    """The final text of the tqdm bar whose container widget is ``model_id``, or None when
    that widget is not a tqdm bar (an HBox of HTML, FloatProgress, HTML) or its state is
    incomplete."""
    box = state.get(model_id)
    if not box or box.get("model_name") != "HBoxModel":
        return None
    children = [
        state.get(str(c).removeprefix(_MODEL), {}) for c in box["state"].get("children", [])
    ]
    names = [c.get("model_name") for c in children]
    if names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c.get("state", {}) for c in children)
    done, total = float(bar.get("value", 0.0)), float(bar.get("max", 0.0))
    return f"{_text(left.get('value', ''))}|{_bar(done, total)}|{_text(right.get('value', ''))}"


def _referenced_models(model_id: str, state: dict[str, dict]) -> set[str]:
    """``model_id`` and every model it refers to (children, layouts, styles), transitively."""
    seen, todo = set(), [model_id]
    while todo:
        mid = todo.pop()
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        stack = [state[mid].get("state", {})]
        while stack:  # model references can sit in lists and nested dicts
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, str) and item.startswith(_MODEL):
                todo.append(item.removeprefix(_MODEL))
    return seen


def freeze_progress_bars(nb: Any) -> int:
    """Rewrite every tqdm widget output of ``nb`` (an nbformat notebook, changed in place) as
    a ``stream`` output with the bar's final text; return how many were rewritten. The widget
    state those bars used is removed, and the whole widget-state metadata when nothing else
    needed it."""
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    state = widgets.get("state", {})
    frozen, dropped = 0, set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            view = out.get("data", {}).get(WIDGET_VIEW)
            text = progress_text(view.get("model_id", ""), state) if view else None
            if text is None:
                outputs.append(out)
                continue
            dropped |= _referenced_models(view["model_id"], state)
            # stderr, where tqdm writes outside a notebook: the same text a terminal shows.
            outputs.append(new_output("stream", name="stderr", text=text + "\n"))
            frozen += 1
        cell.outputs = outputs
    if frozen:
        for mid in dropped:
            state.pop(mid, None)
        if not state:
            nb.metadata.pop("widgets", None)
    return frozen
