# Two commands set everything up on a fresh machine:
#   make demo   -> the main job on embedded demo data (creates .venv on first use)
#   make test   -> the test suite (creates .venv on first use)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

# basicsr 1.4.2 ships only an sdist whose setup_requires asks for torch: with pip's build
# isolation that would pull an unpinned torch (GBs). So torch/torchvision are installed
# first, pinned, and the rest is built against them without isolation.
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch torchvision numpy cython setuptools wheel
	$(BIN)/pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tripled_basicsr.demo --workdir demo_run --overwrite

# the suite runs on 2 worker processes (pytest-xdist): 800 tests in 4.5 min on a 2-core machine;
# `make test PYTEST_WORKERS=0` runs it in one process, `pytest -m "not slow"` is the quick loop
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

clean:
	rm -rf $(VENV) demo_run build *.egg-info
