# mmfree-hls: every job a user runs, from a fresh clone.
# `make demo` and `make test` set themselves up (.venv) on first use.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
MMFREE  := $(VENV)/bin/mmfree
STAMP   := $(VENV)/.installed

MODEL   ?= demo
BOARD   ?= pynq-z2
CKPT    ?= python/mmfree_hls/data/demo_model
SWEEP   ?= design/configs/sweep_demo.yaml

.PHONY: help setup test demo train convert hls overlay package sweep perf bench clean

help:                ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[design,dev]"
	touch $(STAMP)

setup: $(STAMP)      ## create .venv and install the package with the design and dev extras

test: $(STAMP)       ## run the test suite (C-simulation included), then the notebooks top to bottom
	$(VENV)/bin/pytest -n 2 tests
	$(VENV)/bin/pytest --nbmake --nbmake-timeout=1200 -p no:cacheprovider notebooks

demo: $(STAMP)       ## convert the shipped model, compile the C-sim, stream generated text
	$(MMFREE) demo

train: $(STAMP)      ## retrain the shipped demo model (seeded, resumable)
	$(MMFREE) train --out $(CKPT)

convert: $(STAMP)    ## hls4ml project for CKPT under hls_project/$(MODEL)
	$(MMFREE) convert $(CKPT) --out hls_project/$(MODEL)

hls: $(STAMP)        ## Vitis HLS csynth + IP export (needs vitis_hls)
	$(MMFREE) synth hls hls_project/$(MODEL) --board $(BOARD)

overlay: $(STAMP)    ## Vivado block design -> bitstream -> overlay package (needs vivado)
	$(MMFREE) synth overlay hls_project/$(MODEL) --board $(BOARD)

package: $(STAMP)    ## overlay package from an hls project (C-sim only when no bitstream)
	$(MMFREE) package hls_project/$(MODEL) --board $(BOARD)

sweep: $(STAMP)      ## accuracy-vs-resource sweep from SWEEP
	$(MMFREE) sweep $(SWEEP)

perf: $(STAMP)       ## performance model: tokens/s vs memory-bandwidth bound per board
	$(MMFREE) perf

bench: $(STAMP)      ## run the benchmarks under bench/ (tables + JSON in bench/results)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:               ## remove generated projects and caches (keeps .venv)
	rm -rf hls_project/*/ overlays/*/ .pytest_cache bench/results
