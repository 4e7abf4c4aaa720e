"""A Sphinx extension for the course book: each page's scripts, once.

sphinx-thebe and sphinx-togglebutton (loaded by Jupyter Book) each add an inline script
twice (once through Sphinx's registry, once again at build start), so every page declared
``const THEBE_JS_URL`` twice and the browser logged a SyntaxError on every page. Keeping the
first of identical scripts is what the page meant.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple[str, str]:
    # What a script *is*: its file and its inline code. An inline script's file is None or ""
    # depending on who added it (the two copies differ just there).
    filename = getattr(script, "filename", script) or ""
    return str(filename), getattr(script, "attributes", {}).get("body", "")


def unique_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    kept = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", unique_scripts, priority=900)  # after other extensions
    return {"parallel_read_safe": True, "parallel_write_safe": True}
