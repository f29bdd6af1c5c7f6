"""W&B sweep files, proven without a server: schema, the controller's draws, the agent's command line, the CLI.

Every `experiments/sweeps/*.yaml` is checked against W&B's sweep schema and drawn from by W&B's own
controller logic (the `sweeps` package: `next_run`, the code behind `wandb sweep --controller`), with
earlier draws fed back as finished runs so the Bayesian model is exercised too. Each draw is rendered as
the agent renders it (`wandb.sdk.launch.sweeps.utils`, the macro loop of `wandb agent`), then run through
the real CLI for a couple of steps on a tiny corpus: in-process, and once as a 2-process DDP job
(gloo, a clean subprocess) in which every rank reports what it was built with (`tests/sweep_probe.py`).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wandb
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils

from videobert.cli import lightning_main

from .conftest import tiny_data_args
from .test_ddp import clean_env

try:
    import sweeps  # W&B's sweep schema and controller logic; it pins numpy<2, so it is installed with --no-deps
except ImportError:
    sweeps = None

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "experiments/sweeps").glob("*.yaml"))
VOCAB_KEYS = ("cache_dir", "vocab_levels", "vocab_k")  # the sweep decides these; the tiny corpus the rest
TRAINER = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
           "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
           "--trainer.enable_model_summary=false", "--model.num_layers=1", "--model.warmup_steps=1"]


@pytest.fixture(autouse=True)
def _needs_sweeps():
    if sweeps is None:  # a failure, not a skip: without W&B's controller code nothing here is proven
        pytest.fail("tests/test_sweeps.py needs W&B's `sweeps` package: pip install scipy scikit-learn jsonschema "
                    "jsonref && pip install --no-deps sweeps==0.3.0 (it pins numpy<2 but runs on numpy 2)")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def draw(cfg: dict, n: int, seed: int = 0) -> list[dict]:
    """n parameter sets as the controller proposes them; each earlier one is fed back as a finished run."""
    random.seed(seed)
    np.random.seed(seed)  # (the sweeps package draws from both global generators)
    runs, drawn = [], []
    metric = cfg["metric"]["name"]
    for i in range(n):
        run = sweeps.next_run(cfg, runs, validate=True)
        params = json.loads(json.dumps({k: v["value"] for k, v in run.config.items()}, default=float))  # as sent
        drawn.append(params)
        runs.append(sweeps.SweepRun(name=f"run{i}", state=sweeps.RunState.finished, config=run.config,
                                    summary_metrics={metric: 0.1 * (i + 1)}, history=[{metric: 0.1 * (i + 1)}]))
    return drawn


def render(cfg: dict, params: dict) -> list[str]:
    """The command line `wandb agent` starts for these parameters (wandb_agent.Agent._command_run)."""
    command = sweep_utils.create_sweep_command(list(cfg["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars.update(interpreter=["python"], program=[cfg.get("program")], env=["/usr/bin/env"])
    argv = []
    for c in map(str, command):
        argv += (sweep_vars.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    return argv


def expected(params: dict) -> dict:
    """{'model.lr': v, 'data.vocab_k': v, ...}: each drawn value under its section, `init_args` dicts unfolded."""
    flat = {}
    for key, value in params.items():
        section, *rest = key.replace(".init_args", "").split(".")
        if rest:
            flat[f"{section}.{'.'.join(rest)}"] = value
        else:
            assert isinstance(value, dict), f"{key}: a whole section must be drawn as a mapping"
            flat.update({f"{section}.{k}": v for k, v in value.items()})
    return flat


def check_run(record: dict, params: dict) -> None:
    """The drawn values are the run's hparams and the values in effect (optimizer, encoder, vocabulary, masks)."""
    for key, value in expected(params).items():
        section, name = key.split(".", 1)
        assert record[section][name] == value, (key, record[section][name], value)
        if key in record["effective"]:
            assert record["effective"][key] == value, (key, record["effective"][key], value)
    if "data.vocab_k" in expected(params):
        want = expected(params)
        assert record["effective"]["model.visual_vocab_size"] == want["data.vocab_k"] ** want["data.vocab_levels"]


@pytest.fixture(scope="module")
def workdir(quickstart_cache, tmp_path_factory):
    """A folder to run the agent's command lines in: `experiments/` from the repo and, in the quickstart's cache
    folder (and any other a sweep names), the tiny corpus (corpus, shards, features, tokenizer) without its
    visual vocabulary, so the first run of a setting fits its own vocabulary, as on a user's machine."""
    work = tmp_path_factory.mktemp("sweep")
    (work / "experiments").symlink_to(ROOT / "experiments")
    caches = {v["cache_dir"] for p in SWEEPS for spec in load(p)["parameters"].values() for v in spec.get("values", [])
              if isinstance(v, dict) and "cache_dir" in v}
    for cache in caches | {"data/quickstart"}:
        for part in ("corpus", "shards", "features", "tokenizer"):
            shutil.copytree(quickstart_cache / part, work / cache / part)
    return work


def shrink(argv: list[str], n_params: int, probe: Path, extra=()) -> list[str]:
    """The agent's command line with test sizes inserted before the sweep's own arguments (which stay last,
    so they win); the tiny corpus settings, the probe callback and a 2-step trainer."""
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args("unused").items() if k not in VOCAB_KEYS]
    callback = f"--trainer.callbacks+={{'class_path': 'tests.sweep_probe.RecordRun', 'init_args': {{'out': '{probe}'}}}}"
    cut = len(argv) - n_params
    return argv[:cut] + data + TRAINER + [callback, *extra] + argv[cut:]


def test_there_are_sweep_files():
    assert SWEEPS, "experiments/sweeps/ holds no sweep file"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_valid_and_drawn_values_in_range(path):
    cfg = load(path)
    assert sweeps.schema_violations_from_proposed_config(cfg) == []
    assert cfg["method"] == "bayes" and cfg["early_terminate"]["type"] == "hyperband"
    assert cfg["metric"]["name"].startswith("val/")
    argv = render(cfg, {"model.lr": 0.001})
    assert argv[:3] == ["/usr/bin/env", "videobert", "fit"] and argv[-1] == "--model.lr=0.001", argv
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config).is_file(), config
    for params in draw(cfg, 6):
        assert set(params) == set(cfg["parameters"])
        for key, value in params.items():
            spec = cfg["parameters"][key]
            if "values" in spec:
                assert value in spec["values"], (key, value)
            elif "value" in spec:  # a fixed setting (e.g. the validation masking rate)
                assert value == spec["value"], (key, value)
            else:
                assert spec["min"] <= value <= spec["max"], (key, value)
        if "model.hidden_size" in expected(params):  # width choices must give whole attention heads
            assert expected(params)["model.hidden_size"] % expected(params)["model.num_heads"] == 0


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_drawn_runs_through_the_cli(path, workdir, tmp_path, monkeypatch):
    cfg = load(path)
    monkeypatch.chdir(workdir)  # the agent runs the command in the project folder; relative paths as there
    for i, params in enumerate(draw(cfg, 2)):
        argv = render(cfg, params)
        cli = lightning_main(shrink(argv, len(params), tmp_path / f"probe{i}")[2:])  # minus /usr/bin/env videobert
        wandb.finish()  # one W&B run per command, as from the agent
        assert cli.trainer.global_step == 2
        assert cli.trainer.callback_metrics[cfg["metric"]["name"]].isfinite()  # the sweep's metric is logged
        check_run(json.loads((tmp_path / f"probe{i}/rank0.json").read_text()), params)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_drawn_values_reach_every_ddp_rank(path, workdir, tmp_path):
    cfg = load(path)
    params = draw(cfg, 3)[-1]  # a draw the Bayesian model made from two finished runs
    params = dict(reversed(params.items()))  # the other argument order: a section mapping must not undo a key
    argv = shrink(render(cfg, params), len(params), tmp_path / "probe",
                  extra=["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
                         "--trainer.limit_val_batches=0"])  # (1 validation shard: too few for 2 readers)
    env = clean_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `videobert` as the agent finds it
    env["WANDB_RUN_ID"] = "sweeptest"  # what the agent sets for the run it starts
    proc = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [json.loads((tmp_path / f"probe/rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in records] == [(0, 2), (1, 2)]
    assert [Path(r["root_dir"]).name for r in records] == ["sweeptest"] * 2  # one run folder: the agent's run id
    assert Path(records[0]["root_dir"]).parent.name == "quickstart_sweep"  # runs/quickstart/latest untouched
    for record in records:
        check_run(record, params)
