# genlab: every target installs what it needs first (a .venv with genlab in editable mode).
# Pass Hydra overrides with ARGS, e.g.  make train ARGS="model=vae_cnn data=mnist data.data_dir=/data"

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train eval sample score sweep report test test-fast lint format bench gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'
	@echo '  extra Hydra overrides: make train ARGS="model=vae_cnn data=mnist"'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install genlab (editable) with its dev tools

train: $(STAMP) ## train (default: vae_mlp on the bundled 8x8 digits)
	$(BIN)/python -m genlab.train $(ARGS)

eval: $(STAMP) ## test a checkpoint: make eval ARGS="ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt"
	$(BIN)/python -m genlab.eval $(ARGS)

sample: $(STAMP) ## sample a checkpoint: make sample ARGS="ckpt_path=... num_samples=64"
	$(BIN)/python -m genlab.sample $(ARGS)

score: $(STAMP) ## how likely is this x: make score ARGS="ckpt_path=... input=digit.png" (or text="...")
	$(BIN)/python -m genlab.score $(ARGS)

sweep: $(STAMP) ## Hydra multirun: make sweep ARGS="model.latent_dim=2,8,32 model=vae_mlp,vae_cnn", or EXP=<experiment>
	$(BIN)/python -m genlab.train -m $(if $(EXP),experiment=$(EXP)) $(ARGS)

report: $(STAMP) ## a sweep or run as a table, plots and a verdict: make report RUN=outputs/train/multiruns/<time>
	$(BIN)/python -m genlab.report $(RUN) $(ARGS)

test: $(STAMP) ## run the whole test suite (unit + integration, heavy ones included)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP) ## unit tests and light integration tests only
	$(BIN)/python -m pytest -m "not heavy" $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP) ## ruff format and autofix
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: $(STAMP) ## benchmarks, side by side; writes outputs/bench/<timestamp>.json
	$(BIN)/python -m genlab.bench $(ARGS)

gpu-check: $(STAMP) ## tiny models of each family on the GPU (fp32, bf16, DDP) against CPU runs; skips without a GPU
	$(BIN)/python -m genlab.gpu_check $(ARGS)

clean: ## remove run outputs and caches (keeps .venv and downloaded data)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './.venv/*' -exec rm -rf {} +
