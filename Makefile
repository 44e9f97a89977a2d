# roloraexp — the two set-up commands are `make demo` and `make test`; the paper tables are
# `make rolora-table1` ... `make weightlora-table6` (see make/tables.mk, `make help`).
PYTHON   ?= python
STAMP    := .make/installed

.PHONY: help install demo test test-full bench gpu-check
.DEFAULT_GOAL := help

help:
	@echo "make demo    install if needed, then ROLoRA on MiniLM / SST-2 offline on CPU (< 2 min)"
	@echo "make test    install if needed, then the test suite on the shipped data/ (no ../shared, offline)"
	@echo "make test-full  the tests that need the full data (../shared/data or ROLORAEXP_DATA=/path)"
	@echo "make bench   step time, samples/s, MFU, memory: floor, ours and PEFT's LoRA / AdaLoRA, ours ROLoRA"
	@echo "make gpu-check  CUDA: issue 21's speed targets in one table + results/gpu_check/DATE-DEVICE.json (< 6 min)"
	@echo "make TABLE   a paper table (declared in roloraexp/tables/): $(TABLES)"
	@echo "make tables-help  the variables that scale a table down, and every table's grid, rows, columns"

# Without a torch, install the CPU wheel first: a bare `torch` requirement would pull several GB
# of CUDA wheels onto a CPU machine. GPU users install their CUDA torch before `make` (README).
$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)

# The demo reads the small real slices shipped in data/ (data/PROVENANCE.md); `make demo DATA_DIR=...`
# points elsewhere. Only the demo: the paper-table targets keep the hub (an empty DATA_DIR) as their default.
demo: DATA_DIR ?= data
demo: $(STAMP)
	$(PYTHON) -m roloraexp.run experiment=demo data_dir=$(DATA_DIR) hydra.run.dir=outputs/demo
	$(PYTHON) -m roloraexp.figures summary outputs/demo

# One worker per core (pytest-xdist), one torch thread each; a test file stays on one worker, so
# its module-scoped fixtures (a trained model shared by its tests) are built once.
test: $(STAMP)
	$(PYTHON) -m pytest -q -n auto --dist loadfile -m "not full"

# Whole files, official leaderboard scores: the `full` tests fail (never skip) without the data.
test-full: $(STAMP)
	$(PYTHON) -m pytest -q -n auto --dist loadfile -m full

bench: $(STAMP)
	$(PYTHON) scripts/bench.py

# scripts/gpu_check.py --dry-run prints what it runs; it refuses to run without CUDA (--allow-cpu: scaled down).
gpu-check: $(STAMP)
	$(PYTHON) scripts/gpu_check.py

-include make/tables.mk
