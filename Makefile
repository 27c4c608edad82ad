# Two commands do all the set-up: `make demo` runs the main job, `make test` the whole test suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The dataset mirror: $PRODKG_DATA_HOME if set, else ../shared/datasets when it exists.
PRODKG_DATA_HOME ?= $(shell test -d ../shared/datasets && cd ../shared/datasets && pwd)
export PRODKG_DATA_HOME
OUT ?= runs/demo

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,encoders]'  # the larger image encoders are tested too
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prodkg run --dataset office-caltech-10 --source amazon --target webcam --method dann --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf runs prodkg-output .pytest_cache
