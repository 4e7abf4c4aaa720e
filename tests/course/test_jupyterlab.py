"""The course as a learner meets it in JupyterLab, driven in headless Chromium (Selenium with
Debian's chromium-driver, offline): lesson 01 runs top to bottom with no error output, and an
explorer widget redraws its picture when its slider moves.

The server runs on copies in a temporary folder, so JupyterLab's autosave never touches the
repository's notebooks. ``--expose-app-in-browser`` gives the test JupyterLab's own command
registry and notebook model (``window.jupyterapp``) instead of scraping the page.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from selenium import webdriver  # a dev dependency: `make test` installs it
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
LESSON = "01_attention_from_scratch.ipynb"
EXPLORER = "explorer.ipynb"
EXPLORER_SOURCE = (
    "from vfm_course.course.widgets import pos_embed_explorer\n"
    "from vfm_course.models import VisionTransformer\n"
    'pos_embed_explorer(VisionTransformer("vit_course_tiny"), interactive=True)'
)

# JavaScript run in the page: the open notebook's state, read from JupyterLab's model.
NOTEBOOK_STATE = """
const panel = window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.content.model) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = [];
for (const cell of panel.content.model.cells) {
  if (cell.type !== "code") continue;
  const outputs = cell.outputs.toJSON();
  cells.push({
    count: cell.executionCount,
    errors: outputs.filter((o) => o.output_type === "error").map((o) => o.ename + ": " + o.evalue),
  });
}
return {kernel: kernel ? kernel.status : "none", cells: cells};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium_driver() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("chromium and chromium-driver are not installed: run `make test-deps`")
    return browser, driver


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on copies of lesson 01 and a one-cell explorer notebook."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / LESSON, root / LESSON)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(EXPLORER_SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
    nbformat.write(nb, root / EXPLORER)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    env["JUPYTERLAB_SETTINGS_DIR"] = str(root / ".jupyter" / "lab" / "user-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(root / ".jupyter" / "lab" / "workspaces")
    env.pop("VFM_WIDGETS", None)  # a live front-end: the explorers are widgets
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ip=127.0.0.1"]
    cmd += ["--expose-app-in-browser", "--allow-root"]  # CI containers may run as root
    cmd += ["--LabApp.news_url=", "--LabApp.extension_manager=readonly"]  # offline
    cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not listen within 120 s")
    yield f"http://127.0.0.1:{port}", token
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = _chromium_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    yield driver
    driver.quit()


def _open(browser, lab, name: str, timeout: float = 120) -> None:
    url, token = lab
    browser.get(f"{url}/lab/tree/{name}?token={token}")
    # The notebook itself must be the current widget: JupyterLab may restore an earlier one
    # first, and "run all" acts on whatever is current.
    ready = (
        "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        f"return !!(w && w.context && w.context.path.endsWith({name!r})"
        " && k && k.status === 'idle');"
    )
    _wait(browser, ready, timeout, f"{name} is open with an idle kernel")


def _wait(browser, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}")


def _run_all(browser, timeout: float) -> dict:
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def finished() -> dict | None:
        state = browser.execute_script(NOTEBOOK_STATE)
        done = state and state["kernel"] == "idle" and all(c["count"] for c in state["cells"])
        return state if done else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        state = finished()
        if state:
            return state
    pytest.fail(f"the notebook did not finish within {timeout:.0f} s")


def test_lesson_01_runs_top_to_bottom_in_jupyterlab(lab, browser):
    _open(browser, lab, LESSON)
    state = _run_all(browser, timeout=600)
    assert len(state["cells"]) > 10
    errors = [e for c in state["cells"] for e in c["errors"]]
    assert not errors, errors


def test_an_explorer_redraws_when_its_slider_moves(lab, browser):
    _open(browser, lab, EXPLORER)
    _run_all(browser, timeout=300)
    picture = "return (document.querySelector('.widget-image') || {}).src || ''"
    before = _wait(browser, picture, 60, "the explorer shows its picture")
    handle = browser.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    assert handle, "the explorer has no slider"
    handle[0].click()
    handle[0].send_keys(Keys.ARROW_RIGHT)
    after = _wait(
        browser, f"const s = {picture[7:]}; return s && s !== {before!r} ? s : ''", 60,
        "the picture changed after the slider moved",
    )  # fmt: skip
    assert after != before
