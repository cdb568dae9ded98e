# mmfree-hls: every job a user runs, from a fresh clone.
# `make demo` and `make test` set themselves up (.venv) on first use.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
MMFREE  := $(VENV)/bin/mmfree
STAMP   := $(VENV)/.installed
# The board side: the runtime (numpy only) with the real pynq, as on a PYNQ image. pynq's pins
# clash with TensorFlow 2.14, so it gets its own venv; `make test` runs the real-pynq tests in it.
BOARD_VENV  ?= .venv-board
BOARD_STAMP := $(BOARD_VENV)/.installed
PYNQ_VERSION ?= 4.0.0

MODEL   ?= demo
BOARD   ?= pynq-z2
CKPT    ?= python/mmfree_hls/data/demo_model
SWEEP   ?= design/configs/sweep_demo.yaml
TIER    ?= on-chip
FORCE   ?=
OVERLAY  = overlays/$(BOARD)/$(MODEL)
# `make train` writes a new checkpoint under runs/train/; CKPT=DIR on the command line trains into DIR,
# and replacing a checkpoint already there (the shipped one included) also takes FORCE=1.
TRAIN_OUT = $(if $(filter command line environment,$(origin CKPT)),$(CKPT),runs/train)

.PHONY: help setup board-venv test demo train convert hls overlay package sweep perf bench readme-figures clean

help:                ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo "  variables: MODEL=$(MODEL) BOARD=$(BOARD) CKPT=$(CKPT) SWEEP=$(SWEEP)"
	@echo "  FORCE=1 lets train, convert, package and demo replace output that is already there"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[design,dev]"
	touch $(STAMP)

setup: $(STAMP)      ## create .venv and install the package with the design and dev extras

$(BOARD_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BOARD_VENV)
	$(BOARD_VENV)/bin/pip install --quiet --upgrade pip
	$(BOARD_VENV)/bin/pip install --quiet -e . pynq==$(PYNQ_VERSION) pytest
	touch $(BOARD_STAMP)

board-venv: $(BOARD_STAMP)  ## create .venv-board: the runtime (numpy only) + pynq==PYNQ_VERSION (4.0.0), no TensorFlow

test: $(STAMP) $(BOARD_STAMP)  ## run the test suite (C-simulation included), the board tests with the real pynq, then the notebooks
	$(VENV)/bin/pytest -n 2 tests --ignore-glob='tests/test_*real_pynq*'
	MMFREE_REAL_PYNQ=1 $(BOARD_VENV)/bin/pytest tests/test_*real_pynq*.py
	$(VENV)/bin/pytest --nbmake --nbmake-timeout=1200 -p no:cacheprovider notebooks

demo: $(STAMP)       ## convert the shipped model, compile the C-sim, stream text (FORCE=1: replace another model's hls_project/demo)
	$(MMFREE) demo$(if $(FORCE), --force)

train: $(STAMP)      ## train the demo-sized model into runs/train/ (seeded, resumable); CKPT=DIR FORCE=1 replaces DIR
	$(MMFREE) train --out $(TRAIN_OUT)$(if $(FORCE), --force)

convert: $(STAMP)    ## hls4ml project for CKPT under hls_project/MODEL (cached; FORCE=1 replaces another model's)
	$(MMFREE) convert $(CKPT) --out hls_project/$(MODEL)$(if $(FORCE), --force)

hls: $(STAMP)        ## Vitis HLS csim + csynth (+ cosim with COSIM=1) + IP export, TIER=on-chip|streamed (needs vitis_hls)
	$(MMFREE) synth hls hls_project/$(MODEL) --board $(BOARD) --tier $(TIER) $(if $(filter 1,$(COSIM)),--cosim)

overlay: $(STAMP)    ## Vivado block design -> bitstream (timing-gated) -> overlay package, TIER=..., PART_ONLY=1 (needs vivado)
	$(MMFREE) synth overlay hls_project/$(MODEL) --board $(BOARD) --tier $(TIER) $(if $(filter 1,$(PART_ONLY)),--part-only)

package: $(STAMP)    ## overlays/BOARD/MODEL from hls_project/MODEL: up to date, else (re)built (FORCE=1: rebuild)
	@if [ -z "$(FORCE)" ] && [ -f $(OVERLAY)/manifest.json ] && \
	    [ -z "$$(find hls_project/$(MODEL) -newer $(OVERLAY)/manifest.json -print -quit 2>/dev/null)" ]; then \
	  echo "$(OVERLAY) is up to date with hls_project/$(MODEL) (FORCE=1 rebuilds it)"; \
	else \
	  echo "$(MMFREE) package hls_project/$(MODEL) --board $(BOARD) --out $(OVERLAY) --force"; \
	  $(MMFREE) package hls_project/$(MODEL) --board $(BOARD) --out $(OVERLAY) --force; \
	fi

sweep: $(STAMP)      ## accuracy-vs-resource sweep from SWEEP
	$(MMFREE) sweep $(SWEEP)

perf: $(STAMP)       ## performance model: tokens/s vs memory-bandwidth bound per board
	$(MMFREE) perf

bench: $(STAMP)      ## run the benchmarks under bench/ (tables + JSON in bench/results)
	@failed=; for b in bench/bench_*.py; do echo "== $$b"; \
	  TF_CPP_MIN_LOG_LEVEL=3 $(PY) $$b || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "bench scripts that failed:$$failed"; exit 1; fi

readme-figures:      ## rewrite README.md's measured figures from bench/results/*.json (standard library only)
	$(PYTHON) bench/render_readme.py

clean:               ## remove generated projects and caches (keeps .venv, runs/ and bench/results/*.json)
	rm -rf hls_project/*/ overlays/*/ .pytest_cache bench/results/hls_project
