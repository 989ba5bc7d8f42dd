# One-command set-up on a machine with only python3:
#   make test   create .venv, install the project and its pinned dependencies, run every test
#   make demo   the same set-up, then build the synthetic data set, train, evaluate, draw the figure
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# An installed torch >= 2.3 (e.g. a CUDA build) is reused; otherwise torch==$(TORCH_VERSION) is installed.
HAVE_TORCH := $(shell $(PYTHON) -c "import torch,sys; v=tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 3))" >/dev/null 2>&1 && echo yes)

.PHONY: setup test lint demo demo-data demo-train demo-test demo-figure clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt requirements-dev.txt
ifeq ($(HAVE_TORCH),yes)
	@echo "Reusing the torch installed for $(PYTHON)"
	$(PYTHON) -m venv --system-site-packages $(VENV)
else
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==$(TORCH_VERSION)
endif
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

test: lint
	$(PY) -m pytest -q -n 2 tests

lint: setup
	$(PY) -m ruff check basicsr scripts tests setup.py
	$(PY) -m ruff format --check basicsr scripts tests setup.py

# ---- demo: synthetic GoPro-like data -> train a small EFNet -> test.py -> figures/demo_comparison.png
DEMO_TRAIN_OPT := options/train/Synthetic/EFNet_demo.yml
DEMO_TEST_OPT := options/test/Synthetic/EFNet_demo.yml

demo: setup
	$(PY) scripts/demo.py --train_opt $(DEMO_TRAIN_OPT) --test_opt $(DEMO_TEST_OPT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
