"""Runs as records: run folders, the resolved config + git + versions in W&B, lineage artifacts, resume into
the same run, identical losses from the same seed, atomic checkpoints, and a SIGKILL mid-run."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb
import yaml

from videobert.cli import lightning_main
from videobert.runs import AtomicCheckpointIO, place_run, shared_run_id

from .conftest import tiny_data_args

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model.hidden_size=32", "--model.num_layers=2", "--model.num_heads=2", "--model.intermediate_size=64",
         "--model.warmup_steps=2", "--model.lr=3e-3"]


def _args(cache, root, *extra):
    """The quickstart experiment as written (run folders chosen by the CLI), shrunk, under `root`."""
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(cache).items()]
    trainer = [f"--trainer.default_root_dir={root}", "--trainer.max_steps=6", "--trainer.val_check_interval=3",
               "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"]
    return ["--config", str(ROOT / "experiments/quickstart.yaml"), *MODEL, *data, *trainer, *extra]


def _csv_losses(run_dir: Path) -> dict[int, float]:
    rows = [r for f in sorted(run_dir.glob("csv/*/metrics.csv")) for r in csv.DictReader(open(f))]
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def test_run_folder_record_lineage_and_resume_into_the_same_run(quickstart_cache, tmp_path, monkeypatch, capsys):
    logged, used = [], []
    real_log, real_use = wandb.sdk.wandb_run.Run.log_artifact, wandb.sdk.wandb_run.Run.use_artifact
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log_artifact",
                        lambda self, a, *args, **kw: (logged.append((a.type, a.name)), real_log(self, a, *args, **kw))[1])
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "use_artifact",
                        lambda self, a, *args, **kw: (used.append(a.type), real_use(self, a, *args, **kw))[1])
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)  # (WANDB_MODE=offline from conftest: never sent anywhere)
    root = tmp_path / "runs/quickstart"
    cli = lightning_main(["fit", *_args(quickstart_cache, root, "--trainer.max_steps=4")])
    run_dir = Path(cli.trainer.default_root_dir)
    wandb_id = cli.trainer.loggers[0].experiment.id
    config = cli.trainer.loggers[0].experiment.config
    wandb.finish()
    assert run_dir.parent == root and (root / "latest").resolve() == run_dir.resolve() and wandb_id == run_dir.name
    printed = capsys.readouterr().out.splitlines()[-3:]  # fit ends by saying where its results are
    assert printed[:2] == [f"run folder: {run_dir}", f"checkpoint: {run_dir}/checkpoints/last.ckpt"]
    assert printed[2].startswith(f"W&B run:    {run_dir}/wandb/offline-run-") and "wandb sync" in printed[2]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["init_args"]["lr"] == 3e-3 and saved["trainer"]["max_steps"] == 4  # overrides included
    record = json.loads((run_dir / "run.json").read_text())
    assert record["git"]["commit"] and isinstance(record["git"]["dirty"], bool)
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["lightning"]
    sizes = cli.datamodule.vocab_sizes()
    assert record["derived"] == {"world_size": 1, "accumulate_grad_batches": 1, "steps_per_epoch": 4,
                                 "global_batch_size": 8, "tokens_per_step_max": 8 * cli.datamodule.max_sequence_length(),
                                 "text_vocab_size": sizes[0], "visual_vocab_size": sizes[1], "feature_dim": 0}
    assert (config["derived"]["text_vocab_size"], config["derived"]["visual_vocab_size"]) == sizes  # (not null)
    assert config["experiment"]["model"]["init_args"]["lr"] == 3e-3 and config["derived"]["global_batch_size"] == 8
    assert config["run"]["git"]["commit"] == record["git"]["commit"]
    assert {"dataset", "tokenizer", "visual-vocabulary", "model"} <= {t for t, _ in logged}  # (offline: no inputs)
    names = {t: n for t, n in logged}
    assert wandb_id not in names["visual-vocabulary"] and wandb_id not in names["tokenizer"]  # (stable: versioned)
    assert names["visual-vocabulary"] == f"visual-vocabulary-{quickstart_cache.parent.name}-{quickstart_cache.name}"
    assert (run_dir / "checkpoints/last.ckpt").exists() and list(run_dir.glob("csv/*/metrics.csv"))
    assert (run_dir / "curves.png").exists() and (run_dir / "visual_words.png").exists()  # plots without W&B
    assert not [f for f in run_dir.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]  # key stored nowhere
    header = next(csv.reader(open(next(run_dir.glob("csv/*/metrics.csv")))))
    assert {"perf/samples_per_s", "perf/data_wait_fraction", "train/loss", "data/skipped_samples"} <= set(header)

    again = lightning_main(["fit", *_args(quickstart_cache, root, "--trainer.max_steps=6", "--ckpt_path=last")])
    assert Path(again.trainer.default_root_dir) == run_dir and again.trainer.global_step == 6
    assert again.trainer.loggers[0].experiment.id == wandb_id  # the same W&B run continues
    wandb.finish()
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["videobert_run"]["run_id"] == wandb_id

    test = lightning_main(["test", *_args(quickstart_cache, root), f"--ckpt_path={run_dir}/checkpoints/last.ckpt"])
    wandb.finish()
    test_dir = Path(test.trainer.default_root_dir)
    assert test_dir != run_dir and test_dir.name.endswith("-test") and (test_dir / "config.yaml").exists()


def test_same_seed_same_losses_step_by_step(quickstart_cache, tmp_path):
    csv_only = tmp_path / "csv_only.yaml"
    csv_only.write_text(yaml.safe_dump({"trainer": {"callbacks": [], "enable_checkpointing": False, "logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": ".", "name": "csv"}}]}}))
    losses = []
    for name in ("a", "b"):
        cli = lightning_main(["fit", *_args(quickstart_cache, tmp_path / name), "--config", str(csv_only)])
        losses.append(_csv_losses(Path(cli.trainer.default_root_dir)))
    assert sorted(losses[0]) == list(range(6)) and losses[0] == losses[1]  # every step, bit for bit


def test_run_id_sources(monkeypatch, tmp_path):
    from jsonargparse import Namespace

    for var in ("SLURM_JOB_ID", "SLURM_STEP_ID", "TORCHELASTIC_RUN_ID", "WANDB_RUN_ID", "WANDB_SWEEP_ID",
                "VIDEOBERT_RUN_ID", "VIDEOBERT_RUN_ID_PID"):
        monkeypatch.delenv(var, raising=False)
    assert shared_run_id("mine") == "mine"
    monkeypatch.setenv("WANDB_RUN_ID", "byhand")
    assert shared_run_id(None) == "byhand"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --rdzv-id: not shared, skipped
    assert shared_run_id(None) == "byhand"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    assert shared_run_id(None) == "torchrun-job7"
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # an allocation without srun: not one run
    assert shared_run_id(None) == "torchrun-job7"
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert shared_run_id(None) == "slurm-42.3"
    monkeypatch.setenv("WANDB_SWEEP_ID", "s")  # a sweep agent inside a SLURM job: one folder per agent run
    assert shared_run_id(None) == "byhand"
    monkeypatch.setenv("VIDEOBERT_RUN_ID", "from-launcher")  # exported by the parent to the ranks it starts
    monkeypatch.setenv("VIDEOBERT_RUN_ID_PID", str(os.getppid()))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert shared_run_id(None) == "from-launcher"
    monkeypatch.delenv("LOCAL_RANK")  # a process the exporter started otherwise (a script's subprocess): its own
    assert shared_run_id(None) == "byhand"
    monkeypatch.delenv("VIDEOBERT_RUN_ID")

    def placed(subcommand):
        config = Namespace(trainer=Namespace(default_root_dir=str(tmp_path), logger=None, callbacks=None))
        return Path(place_run(config, subcommand)).name

    # later runs of one process with an id from the environment: their own folders; tests never a fit's
    first, second, test = placed("fit"), placed("fit"), placed("test")
    assert first.startswith("byhand") and len({first, second, test}) == 3 and test.endswith("-test")
    assert os.environ["VIDEOBERT_RUN_ID_PID"] == str(os.getpid())  # this process placed it: not "inherited"


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tmp_path):
    from jsonargparse import Namespace

    config = Namespace(trainer=Namespace(default_root_dir=str(tmp_path), logger=None, callbacks=None),
                       ckpt_path=str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        place_run(config, "fit")


def test_atomic_checkpoint_survives_a_failed_write(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    (tmp_path / ".0123456789ab.partial").write_bytes(b"left by a killed process")
    io.save_checkpoint({"step": 1}, path)
    assert not list(tmp_path.glob(".*.partial"))  # swept at this process's first save here

    def torn(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the torn write removed; `last` finds only this


def test_sigkill_mid_run_then_resume_continues(quickstart_cache, tmp_path):
    """A real `videobert fit`, checkpointing every step, killed with SIGKILL while it trains; `--ckpt_path last`
    resumes the same run from its last complete checkpoint, and the loss carries on where it was."""
    root = tmp_path / "runs"
    override = tmp_path / "every_step.yaml"
    override.write_text(yaml.safe_dump({"trainer": {
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": ".", "name": "csv", "flush_logs_every_n_steps": 1}}],
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                       "init_args": {"every_n_train_steps": 1, "save_last": True}}]}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "VIDEOBERT", "WANDB_RUN", "SLURM"))}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "videobert.cli", "fit", *_args(quickstart_cache, root), "--config", str(override),
           "--data.init_args.batches_per_epoch=400", "--trainer.val_check_interval=400"]
    proc = subprocess.Popen([*cmd, "--trainer.max_steps=400"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    last, deadline = root / "latest/checkpoints/last.ckpt", time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and torch.load(last, weights_only=True)["global_step"] >= 16:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    run_dir = last.parent.parent.resolve()
    killed = torch.load(last, weights_only=True)  # it loads: a kill never leaves a torn checkpoint
    step = killed["global_step"]
    assert 16 <= step < 400  # (a kill during a save leaves a .partial file beside the intact last.ckpt)
    before = _csv_losses(run_dir)
    out = subprocess.run([*cmd, f"--trainer.max_steps={step + 4}", "--ckpt_path=last"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == step + 4 and resumed["videobert_run"]["run_id"] == run_dir.name
    assert not list(last.parent.glob(".*.partial"))  # the next save replaced any half-written one
    after = {s: v for s, v in _csv_losses(run_dir).items() if s >= step}
    assert len(list(run_dir.glob("csv/*/metrics.csv"))) == 2 and min(after) == step  # same folder, next steps
    start = sum(before[s] for s in sorted(before)[:3]) / 3
    recent = sum(before[s] for s in range(step - 3, step)) / 3
    resumed_mean = sum(after.values()) / len(after)
    assert abs(resumed_mean - recent) < abs(resumed_mean - start)  # it carries on; it is not back at the start


def test_dataset_artifact_holds_the_stamps_that_change_on_a_rebuild(quickstart_cache):
    from videobert.tracking import _add_stamps

    added = []
    artifact = type("Artifact", (), {"add_file": lambda self, path, name: added.append((Path(path), name))})()
    _add_stamps(artifact, quickstart_cache / "features/train", "stamps/train/0")
    assert added == [(quickstart_cache / "features/train/index.json", "stamps/train/0/index.json"),
                     (quickstart_cache / "settings.json", "stamps/train/0/settings.json")]


def test_mfu_in_the_csv_equals_a_hand_computation(quickstart_cache, tmp_path, monkeypatch):
    from videobert.perf import flops_per_token

    monkeypatch.setenv("VIDEOBERT_PEAK_FLOPS", "1e11")
    cli = lightning_main(["fit", *_args(quickstart_cache, tmp_path / "runs", "--trainer.max_steps=4",
                                        "--trainer.log_every_n_steps=2", "--trainer.logger=[{class_path: "
                                        "lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: ., name: csv}}]")])
    rows = [r for f in Path(cli.trainer.default_root_dir).glob("csv/*/metrics.csv") for r in csv.DictReader(open(f))]
    perf = [r for r in rows if r.get("perf/mfu")]
    assert len(perf) == 2  # (steps 2 and 4: every log_every_n_steps)
    # 2 layers of width 32, MLP 64: N = 2 (4 * 32^2 + 2 * 32 * 64) = 16,384 weights
    assert flops_per_token(cli.model.model.cfg, 10.0) == 6 * 16384 + 12 * 2 * 32 * 10.0
    for r in perf:
        seq, tps = float(r["perf/seq_len"]), float(r["perf/tokens_per_s"])
        assert float(r["perf/flops_per_token"]) == pytest.approx(6 * 16384 + 12 * 2 * 32 * seq)
        assert float(r["perf/mfu"]) == pytest.approx(tps * (6 * 16384 + 768 * seq) / 1e11)
        assert 0 < float(r["perf/mfu"]) < 1 and 0 < seq <= cli.datamodule.max_sequence_length()
