"""The course website: it builds offline from the executed notebooks, every lesson page carries
its figures, math renders without a CDN, and headless Chromium renders the pages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from matplotlib.image import imread

from vfm_course.course.book import runtime_table, write_runtime_page

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
MATHJAX = ROOT / "book" / ".mathjax" / "site" / "mathjax" / "tex-chtml.js"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_runtime_table_is_generated_from_the_record():
    record = {
        "notebooks": {
            "02_b.ipynb": {"seconds": 95.4, "peak_mb": 2100},
            "01_a.ipynb": {"seconds": 9.6, "peak_mb": 640},
        }
    }
    table = runtime_table(record).splitlines()
    assert table[2] == "| `01_a.ipynb` | 10 s | 640 MB |"
    assert table[3] == "| `02_b.ipynb` | 1 min 35 s | 2,100 MB |"
    assert table[4] == "| **all lessons** | **1.8 min** | |"
    with pytest.raises(ValueError, match="make notebooks"):
        runtime_table({"notebooks": {}})


def test_runtime_page_needs_a_record(tmp_path):
    with pytest.raises(FileNotFoundError, match="make notebooks"):
        write_runtime_page(tmp_path / "none.json", tmp_path / "page.md")


def test_every_lesson_has_a_measured_runtime():
    record = json.loads((ROOT / "book" / "runtimes.json").read_text())
    assert sorted(record["notebooks"]) == sorted(f"{n}.ipynb" for n in LESSONS)
    for r in record["notebooks"].values():
        assert r["seconds"] > 0 and r["peak_mb"] > 0


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the book once (the same command as `make book`) into a temporary folder."""
    if not MATHJAX.exists():
        pytest.fail("MathJax is not installed: run `make test-deps` (make test does)")
    write_runtime_page(ROOT / "book" / "runtimes.json", ROOT / "book" / "runtimes.md")
    out = tmp_path_factory.mktemp("book")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", "."]
    cmd += ["--config", "book/_config.yml", "--toc", "book/_toc.yml", "--path-output", str(out)]
    cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "_build" / "html"


def _png_outputs(notebook: str) -> int:
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_page_shows_its_executed_figures(site, lesson):
    page = site / "notebooks" / f"{lesson}.html"
    assert page.exists()
    html = page.read_text()
    images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.png)"', html)
    assert len(images) >= _png_outputs(lesson) > 0
    assert all((site / src).exists() for src in images)


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_page_shows_its_finished_progress_bars(site, lesson):
    html = (site / "notebooks" / f"{lesson}.html").read_text()
    assert "100%|██████████|" in html  # the final text, not an empty widget or "0%|"
    assert "0%|          |" not in html


@pytest.mark.parametrize("page", ["book/intro.html", f"notebooks/{LESSONS[0]}.html"])
def test_pages_have_the_logo(site, page):
    html = (site / page).read_text()
    assert re.search(r'<img[^>]+src="[^"]*_static/logo\.svg"', html), "no logo"
    assert (site / "_static" / "logo.svg").exists()


def test_appendix_pages_exist_and_the_runtime_table_is_in_the_book(site):
    for page in ["intro", "setup", "profiles", "instructor_guide", "runtimes"]:
        assert (site / "book" / f"{page}.html").exists(), page
    runtimes = (site / "book" / "runtimes.html").read_text()
    for lesson in LESSONS:
        assert f"{lesson}.ipynb" in runtimes


def test_math_is_served_by_the_site_not_a_cdn(site):
    pages = list(site.rglob("*.html"))
    for page in pages:
        assert "cdn.jsdelivr.net" not in page.read_text(), page
    html = (site / "notebooks" / f"{LESSONS[0]}.html").read_text()
    assert 'src="../_static/../mathjax/tex-chtml.js' in html
    assert (site / "mathjax" / "tex-chtml.js").exists()


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run `make test-deps` (make test does)")
    return exe


@pytest.mark.parametrize("page", ["book/intro.html", f"notebooks/{LESSONS[0]}.html"])
def test_headless_chromium_renders_the_page(site, page, tmp_path):
    shot = tmp_path / "page.png"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--window-size=1280,1600", f"--screenshot={shot}", (site / page).as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1280)
    # A rendered page, not a blank or error screen: many distinct colours (text, figures).
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50


# Runs in the page once laid out: how many code cells' lines are wider than their box.
_OVERFLOW_PROBE = """<script>
window.addEventListener("load", () => {
  const pres = [...document.querySelectorAll("div.cell_input div.highlight pre")];
  const cut = pres.filter((p) => p.scrollWidth > p.clientWidth + 1).length;
  document.body.setAttribute("data-cut-code", `${cut}/${pres.length}`);
});
</script></body>"""


def _run_probe(page: Path, script: str, attribute: str, tmp_path: Path) -> re.Match:
    """Open ``page`` with ``script`` added in headless Chromium (laptop window) and read the
    ``attribute`` the script set on the body once the page was laid out."""
    probe = page.with_name(f"_probe_{page.name}")  # beside it, so its relative links resolve
    probe.write_text(page.read_text().replace("</body>", script, 1))
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    probe.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(attribute + r'="([^"]*)"', proc.stdout)
    assert found, "the probe did not run"
    return found


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_code_cell_is_cut_off_on_a_laptop_screen(site, lesson, tmp_path):
    page = site / "notebooks" / f"{lesson}.html"
    counts = _run_probe(page, _OVERFLOW_PROBE, "data-cut-code", tmp_path).group(1)
    cut, total = map(int, counts.split("/"))
    assert total > 0 and cut == 0, f"{cut} of {total} code cells are wider than the page"


# Runs in the page once laid out: how many search controls a reader sees.
_SEARCH_PROBE = """<script>
window.addEventListener("load", () => {
  const shown = [...document.querySelectorAll(".search-button__button")].filter(
    (b) => b.offsetParent !== null && b.getClientRects().length > 0);
  document.body.setAttribute("data-search-controls", `${shown.length}`);
});
</script></body>"""


@pytest.mark.parametrize("page", ["book/intro.html", f"notebooks/{LESSONS[0]}.html"])
def test_each_page_shows_one_search_control(site, page, tmp_path):
    found = _run_probe(site / page, _SEARCH_PROBE, "data-search-controls", tmp_path)
    assert found.group(1) == "1"


@pytest.mark.parametrize("page", ["book/intro.html", f"notebooks/{LESSONS[0]}.html"])
def test_pages_log_no_script_errors_in_chromium(site, page, tmp_path):
    html = (site / page).read_text()
    assert html.count("const THEBE_JS_URL") == 1  # sphinx-thebe's script, once (book/_ext)
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom"]
    proc = subprocess.run(
        [*cmd, (site / page).as_uri()], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "Uncaught" in line]
    assert not errors, "\n".join(errors)


def test_mathjax_typesets_offline_in_chromium(site, tmp_path):
    page = site / "notebooks" / f"{LESSONS[0]}.html"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<mjx-container" in proc.stdout  # MathJax ran and replaced the TeX


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_book_is_built_from_notebooks_without_errors(lesson):
    """The book shows the stored outputs (it never executes), so a stored error would be
    published silently: there must be none, and every code cell must have run."""
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "re-run `make notebooks`"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
