# make demo: set up, train on the built-in corpus, evaluate zero-shot.  make test: set up, run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
VB := $(VENV)/bin/videobert
EXP ?= experiments/quickstart.yaml
# Extra pip arguments for torch, e.g. the CPU or a CUDA wheel index of pytorch.org where PyPI's default
# build is not the one you want: make demo TORCH_PIP_ARGS="--index-url <index>"
TORCH_PIP_ARGS ?=

.PHONY: setup demo results test test-full clean
setup: $(VENV)/.installed

# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build
$(VENV)/.installed: setup.py Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps sweeps==0.3.0  # W&B's sweep schema/controller (pins numpy<2; works on 2)
	@# captioning's METEOR (pycocoevalcap) runs Java: install a JRE where it is missing and we may
	@command -v java >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; } || \
	  { echo "no Java: captioning's METEOR metric needs a JRE (e.g. apt install default-jre-headless)"; exit 1; }
	touch $@

demo: setup
	@start=$$(date +%s); \
	$(VB) fit --config $(EXP) && \
	$(VB) test --config $(EXP) --ckpt_path runs/quickstart/latest/checkpoints/last.ckpt && \
	echo "demo wall time: $$(( $$(date +%s) - start )) s"

# every task on the built-in corpus, for VideoBERT and CBT -> docs/results.md (~20 min on 2 cores)
results: setup
	$(VB) fit --config experiments/quickstart.yaml
	$(VB) fit --config experiments/cbt_quickstart.yaml
	$(VB) report --out docs/results.md

test: setup
	$(PY) -m pytest

test-full: setup  # also the slow tests (see pytest.ini)
	$(PY) -m pytest -m ""

clean:
	rm -rf runs lightning_logs wandb
