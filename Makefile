# Every target sets up the environment itself (a venv in .venv, pinned by requirements-lock.txt)
# when it is missing or out of date, so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
          --nbval-cell-timeout=1200 -p tests.nbval_patience
# Two workers: one notebook per worker (loadfile keeps a notebook's cells together). One torch
# thread each, so two workers never ask for more threads than the two cores CI has.
XDIST  ?= -n 2 --dist loadfile
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest
# The student notebooks are stored without outputs: nbval checks that every cell runs, which the
# smoke profile (the tiny one with a tenth of the live steps) checks in a fraction of the time.
SMOKE_NOTEBOOKS = VFM_PROFILE=smoke $(PYTEST) $(XDIST) notebooks/student $(NBVAL)
LINTED := vfm_course tests bench notebooks setup.py book/_ext

.PHONY: setup lab test lint unit notebooks-test notebooks student grade grade-deps book test-deps \
        bench lock clean test-latest

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements-lock.txt -e ".[dev]"
	@touch $(STAMP)

## The main job: the lessons in JupyterLab (tiny profile, offline data, CPU is fine).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

## The whole test suite: lint + format check, unit/parity tests, nbval over every notebook
## (solution and student versions), the book build and its headless-Chromium render, and lesson
## 01 plus one explorer driven in JupyterLab (headless Chromium through Selenium).
test: setup lint test-deps
	$(PYTEST) $(XDIST) tests notebooks/[0-9]*.ipynb $(NBVAL)
	$(SMOKE_NOTEBOOKS)

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

unit: setup
	$(PYTEST) $(XDIST) tests

notebooks-test: setup
	$(PYTEST) $(XDIST) notebooks/[0-9]*.ipynb $(NBVAL)
	$(SMOKE_NOTEBOOKS)

## Drift check, not part of `make test` (run it on a schedule): a fresh venv with the newest
## releases pyproject.toml's ranges allow (no requirements-lock.txt, as on Colab), then the unit
## tests (which include the wheel-install test) and one notebook under nbval. The versions it ran
## with are written to $(LATEST)/versions.txt.
LATEST          ?= .venv-latest
LATEST_NOTEBOOK ?= notebooks/02_vision_transformer.ipynb
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade -e ".[dev]"
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	@grep -iE '^(torch|torchvision|timm|numpy|torchmetrics|scikit-learn|safetensors)==' \
	  $(LATEST)/versions.txt
	OMP_NUM_THREADS=1 $(LATEST)/bin/python -m pytest $(XDIST) tests
	OMP_NUM_THREADS=1 $(LATEST)/bin/python -m pytest $(LATEST_NOTEBOOK) $(NBVAL)

## Re-execute every notebook in place (tiny profile, seeded) so stored outputs are current;
## records each lesson's wall time and peak memory in book/runtimes.json (the book's table).
notebooks: setup
	VFM_PROFILE=tiny VFM_WIDGETS=static $(BIN)/python -m vfm_course.course.book execute notebooks/[0-9]*.ipynb
	$(BIN)/python -m vfm_course.course.student

## The course website, offline, from the executed notebooks (nothing is retrained); any Sphinx
## warning fails the build. MathJax comes from the npm registry and is served by the site.
MATHJAX := book/.mathjax/site/mathjax/tex-chtml.js
$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix book/.mathjax mathjax@3.2.2
	rm -rf book/.mathjax/site && mkdir -p book/.mathjax/site
	cp -r book/.mathjax/node_modules/mathjax/es5 book/.mathjax/site/mathjax

## Debian packages, installed only when missing, and said before apt runs: $(1) = the commands
## to look for, $(2) = the packages that bring them.
define apt_install
	@missing=""; for c in $(1); do command -v $$c >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages $(2) (apt-get; sudo when not root)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2); fi
endef

## What the tests need besides Python: Debian's Chromium (the book and JupyterLab tests) and
## bubblewrap (the grader's sandbox), MathJax (npm).
test-deps: $(MATHJAX)
	$(call apt_install,chromium chromedriver bwrap,chromium chromium-driver bubblewrap)

## The grader's sandbox (bubblewrap).
grade-deps:
	$(call apt_install,bwrap,bubblewrap)

book: setup $(MATHJAX)
	$(BIN)/python -m vfm_course.course.book runtimes
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml \
	  --path-output book -W -n --keep-going

## Regenerate the student notebooks (notebooks/student/) from the solution notebooks.
student: setup
	$(BIN)/python -m vfm_course.course.student

## Grade submissions: make grade LESSON=01_attention_from_scratch SUBMISSIONS=folder [OUT=grades]
OUT ?= grades
grade: setup grade-deps
	$(BIN)/python -m vfm_course.course.grading $(LESSON) $(SUBMISSIONS) --out $(OUT)

## Benchmarks: ratios against the production implementations (never part of the tests).
bench: setup
	$(BIN)/python bench/bench_attention.py
	$(BIN)/python bench/bench_vit.py
	$(BIN)/python bench/bench_flops.py

## Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: setup
	@{ sed -n '1,3p' requirements-lock.txt; \
	   $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e'; } > requirements-lock.new
	mv requirements-lock.new requirements-lock.txt

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .ruff_cache book/_build book/.mathjax book/runtimes.md data/cache
