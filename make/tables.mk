# Paper tables: one target per table declared in roloraexp/tables/ (`make rolora-table1` ...
# `make weightlora-table6`); `make tables-help` prints the declarations (grid, rows, columns, CSV).
# A target runs the cells of its grid that have not completed (roloraexp.tables.sweep: Hydra multiruns,
# one fixed folder per cell under $(RUNS)/<table>/), then writes the table with roloraexp.report.
# Run it again to finish a table: completed cells are skipped, failed or changed ones run again.
# `make -n TABLE` prints the multiruns it would launch (the sweep line runs as a dry run); `make TABLE-cost`
# its runs, optimizer steps and, with GPU_JSON=..., estimated GPU-hours (`make tables-help`: every table's).
#
# Scale a target down for a quick try, e.g.
#   make rolora-table3 MODEL=tiny_roberta SEEDS=1 TASKS="rte mrpc" SAMPLES=64 STEPS=10 RUNS=runs-smoke
RUNS     ?= runs#          root of the run folders
OUT      ?= results#       where the tables (.md .tex .csv) and figures go
SEEDS    ?= 1 2 3 4 5#     the papers average 5 seeds
MODEL    ?=#               replace the table's model (tiny_roberta, minilm, ...)
TASKS    ?=#               only these tasks of the grid
METHODS  ?=#               only these rows (run keys or methods: lora adalora_as_run rolora_sora weightlora ...)
SAMPLES  ?=#               task.max_train_samples = task.max_eval_samples
STEPS    ?=#               trainer.max_steps (per phase)
LAUNCHER ?=#               a Hydra launcher, e.g. submitit_slurm (pip install hydra-submitit-launcher)
JOBS     ?= 1#             multiruns launched at once (one per method and folder; raise it on a cluster)
LAYOUT   ?=#               run folder below $(RUNS)/<table>, default {model}/{task}/{method}{rank}{k}/seed{seed}
EXTRA    ?=#               more Hydra overrides for every run, e.g. EXTRA="logger=disabled trainer.lr=1e-3"
GPU_JSON ?=#               the GPU check's JSON: TABLE-cost and tables-help add estimated GPU-hours on its device

# The declared tables (an import of the declarations only: no torch, instant).
TABLES := $(shell $(PYTHON) -m roloraexp.tables --names)
ifeq ($(TABLES),)
$(warning no paper-table targets: `$(PYTHON) -m roloraexp.tables --names` printed nothing)
endif
# The run folders a table's report reads: its own, then those of the tables whose runs it reuses
# (ROLoRA Tables 4 and 5 and WeightLoRA Table 6 read Table 1's; the sweep fills that folder).
READS = $(shell $(PYTHON) -m roloraexp.tables --folders $@)

DRY_RUN = $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run)
SWEEP = $(PYTHON) -m roloraexp.tables.sweep $@ --runs $(RUNS) --seeds $(SEEDS) --python $(PYTHON) \
	$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(MODEL),--model $(MODEL)) $(if $(TASKS),--tasks $(TASKS)) \
	$(if $(METHODS),--methods $(METHODS)) $(if $(SAMPLES),--samples $(SAMPLES)) $(if $(STEPS),--steps $(STEPS)) \
	$(if $(LAUNCHER),--launcher $(LAUNCHER)) --jobs $(JOBS) $(if $(LAYOUT),--layout '$(LAYOUT)') $(DRY_RUN) $(if $(EXTRA),-- $(EXTRA))
# What the tables named in $(1) (all when empty) cost, with the same variables as SWEEP.
COST = $(PYTHON) -m roloraexp.tables --cost $(1) --seeds $(SEEDS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(MODEL),--model $(MODEL)) $(if $(TASKS),--tasks $(TASKS)) $(if $(METHODS),--methods $(METHODS)) \
	$(if $(SAMPLES),--samples $(SAMPLES)) $(if $(STEPS),--steps $(STEPS)) $(if $(GPU_JSON),--gpu-json $(GPU_JSON)) \
	$(if $(EXTRA),-- $(EXTRA))
REPORT = $(PYTHON) -m roloraexp.report $@ $(addprefix $(RUNS)/,$(READS)) --out $(OUT) \
	--seeds $(words $(SEEDS)) $(if $(MODEL),--model $(MODEL))

.PHONY: $(TABLES) $(addsuffix -cost,$(TABLES)) tables-help

# The `+` runs the sweep line under `make -n` too, where DRY_RUN makes it print instead of launch.
# A sweep whose cells failed exits non-zero: the report is still written for the cells that completed,
# then the target fails with the sweep's status.
$(TABLES): $(STAMP)
	+@rm -f .make/$@.status; $(strip $(SWEEP)) $(if $(DRY_RUN),,|| echo $$? > .make/$@.status)
	$(strip $(REPORT))
	@status=$$(cat .make/$@.status 2>/dev/null || echo 0); rm -f .make/$@.status; exit $$status

tables-help:
	@echo "make TABLE [SEEDS=...] [MODEL=...] [TASKS=...] [METHODS=...] [SAMPLES=N] [STEPS=N] [RUNS=dir] [OUT=dir]"
	@echo "           [LAUNCHER=submitit_slurm JOBS=N] [LAYOUT=fmt] [EXTRA=\"hydra overrides\"]; make -n TABLE: what would run"
	@echo "make TABLE-cost [same variables] [GPU_JSON=gpu_check.json]: its runs, optimizer steps, est. GPU-hours"
	@echo
	@$(PYTHON) -m roloraexp.tables --describe
	@echo
	@$(strip $(call COST))

$(addsuffix -cost,$(TABLES)): %-cost:
	@$(strip $(call COST,$*))
