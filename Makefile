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
LINTED := vfm_course tests bench notebooks

.PHONY: setup lab test lint unit notebooks-test notebooks student grade bench lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements-lock.txt -e ".[dev]"
	@touch $(STAMP)

## The main job: the lessons in JupyterLab (tiny profile, offline data, CPU is fine).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

## The whole test suite: lint + format check, unit/parity tests, nbval over every notebook.
test: setup lint
	@$(PYTEST) $(XDIST) tests notebooks $(NBVAL); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

unit: setup
	$(PYTEST) $(XDIST) tests

notebooks-test: setup
	$(PYTEST) $(XDIST) notebooks $(NBVAL)

## Re-execute every notebook in place (tiny profile, seeded) so stored outputs are current.
notebooks: setup
	for nb in notebooks/[0-9]*.ipynb; do \
	  VFM_PROFILE=tiny $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 "$$nb" || exit 1; done
	$(BIN)/python -m vfm_course.student

## Regenerate the student notebooks (notebooks/student/) from the solution notebooks.
student: setup
	$(BIN)/python -m vfm_course.student

## Grade submissions: make grade LESSON=01_attention_from_scratch SUBMISSIONS=folder [OUT=grades]
OUT ?= grades
grade: setup
	$(BIN)/python -m vfm_course.grading $(LESSON) $(SUBMISSIONS) --out $(OUT)

## Benchmarks: ratios against the production implementations (never part of the tests).
bench: setup
	$(BIN)/python bench/bench_attention.py
	$(BIN)/python bench/bench_vit.py

## Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: setup
	@{ sed -n '1,3p' requirements-lock.txt; \
	   $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e'; } > requirements-lock.new
	mv requirements-lock.new requirements-lock.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache book/_build data/cache
