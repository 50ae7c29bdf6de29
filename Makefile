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

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_run build *.egg-info
