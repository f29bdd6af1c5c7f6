"""From raw videos to a zero-shot evaluation through the real command line (LightningCLI), in-process."""
import csv
import glob
import json
from pathlib import Path

import pytest
import torch
import wandb
import yaml

from videobert.cli import export_checkpoint, lightning_main
from videobert.cli_errors import UsageError
from videobert.module import VideoBertModule
from videobert.pretrained import load_pretrained

from .conftest import tiny_data_args

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model.hidden_size=32", "--model.num_layers=2", "--model.num_heads=2", "--model.intermediate_size=64",
         "--model.warmup_steps=2"]


def _cli_args(cache, run_dir, extra=()):
    """The quickstart experiment, shrunk, writing into `run_dir` (a second --config replaces the lists)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    override = run_dir / "override.yaml"
    override.write_text(yaml.safe_dump({"trainer": {
        "default_root_dir": str(run_dir),
        "logger": [{"class_path": "lightning.pytorch.loggers.WandbLogger",
                    "init_args": {"project": "videobert-tests", "save_dir": str(run_dir)}},
                   {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir), "name": "csv"}}],
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                       "init_args": {"dirpath": str(run_dir / "ckpt"), "save_last": True}}]}}))
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(cache).items()]
    trainer = ["--trainer.max_steps=6", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=2",
               "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"]
    return ["--config", str(ROOT / "experiments/quickstart.yaml"), "--config", str(override),
            *MODEL, *data, *trainer, *extra]


def test_fit_then_zero_shot_test(quickstart_cache, tmp_path, caplog):
    run = tmp_path / "run"
    cli = lightning_main(["fit", *_cli_args(quickstart_cache, run)])
    assert cli.trainer.global_step == 6
    metrics = cli.trainer.callback_metrics
    for key in ("train/loss", "train/mlm_loss", "train/mvm_loss", "train/align_loss", "train/mvm_acc", "val/loss",
                "val/mlm_acc"):
        assert key in metrics and metrics[key].isfinite(), key
    rows = list(csv.DictReader(open(glob.glob(f"{run}/csv/*/metrics.csv")[0])))
    assert any(r.get("val/align_acc") for r in rows)  # a local copy readable without W&B
    val = [r for r in rows if r.get("val/align_auroc")]
    assert val and all(0 <= float(r[f"val/align_{m}"]) <= 1 for r in val for m in ("balanced_acc", "auroc", "majority_acc"))
    assert glob.glob(f"{run}/wandb/offline-run-*/run-*.wandb")  # W&B offline, no server contacted
    ckpt = run / "ckpt/last.ckpt"
    assert ckpt.exists()
    export_checkpoint(str(ckpt), str(run / "export"))  # tokenizer + visual vocabulary found via the DataModule
    model, tok, vocab = load_pretrained(run / "export")
    trained = VideoBertModule.load_from_checkpoint(ckpt, weights_only=True).model.eval()
    ids = torch.tensor([[tok.cls_id, 5, 6, tok.bridge_id, tok.vocab_size + 1, tok.sep_id]])
    args = (ids, torch.tensor([[0, 0, 0, 1, 1, 1]]), torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(model(*args), trained(*args)) and vocab.size == model.cfg.visual_vocab_size
    wandb.finish()  # one W&B run per command, as from the shell

    again = lightning_main(["fit", *_cli_args(quickstart_cache, tmp_path / "again")])
    wandb.finish()
    assert again.trainer.callback_metrics["train/loss"] == metrics["train/loss"]  # same seed, same run

    cli = lightning_main(["test", *_cli_args(quickstart_cache, tmp_path / "test"), f"--ckpt_path={ckpt}"])
    res = cli.trainer.callback_metrics
    for what in ("verb", "noun"):
        assert 0.0 <= res[f"test/zero_shot/{what}_top1"] <= res[f"test/zero_shot/{what}_top5"] <= 1.0
        assert res[f"test/zero_shot/{what}_top1_chance"] == pytest.approx(0.1)
    assert "zero_shot on held-out videos" in caplog.text
    run_dir = Path(cli.trainer.default_root_dir)  # <experiment folder>/<run id>-test
    assert run_dir.parent == tmp_path / "test" and (run_dir / "zero_shot_verb_confusion.png").exists()  # (no W&B needed)
    saved = json.loads((run_dir / "zero_shot_results.json").read_text())
    assert saved["steps"] > 0 and saved["verb_top1_ci_low"] <= saved["verb_top1"] <= saved["verb_top1_ci_high"]
    assert res["test/zero_shot/verb_top1_ci_high"] == pytest.approx(saved["verb_top1_ci_high"])
    wandb.finish()

    for task, key in (("retrieval", "test/retrieval/cross_t2v_r10"), ("forecasting", "test/forecasting/t1_top5"),
                      ("summarization", "test/summarization/f1"), ("text_to_video", "test/text_to_video/top5")):
        cli = lightning_main(["test", *_cli_args(quickstart_cache, tmp_path / task),
                              "--config", str(ROOT / f"experiments/eval/{task}.yaml"), f"--ckpt_path={ckpt}"])
        wandb.finish()
        assert 0.0 <= cli.trainer.callback_metrics[key] <= 1.0
        if task == "text_to_video":  # (what each word depicts, learned from the training videos)
            assert 0.0 <= cli.trainer.callback_metrics["test/text_to_video/depicts_top1"] <= 1.0
        if task == "retrieval":  # (plain VideoBERT: no loss trained its dual encoder, so it is not reported)
            assert not any("dual" in k for k in cli.trainer.callback_metrics)
    examples = json.loads((Path(cli.trainer.default_root_dir) / "text_to_video_examples.json").read_text())
    assert examples and {"text", "predicted_words", "nearest_clips"} <= set(examples[0])


def test_unknown_config_key_fails_with_its_name(quickstart_cache, tmp_path):
    with pytest.raises(UsageError, match="--model.hiden_size is not a setting of VideoBertModule; did you mean "
                                         "--model.hidden_size"):
        lightning_main(["fit", *_cli_args(quickstart_cache, tmp_path), "--model.hiden_size=8"], run=False)


@pytest.mark.parametrize("config", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(config, tmp_path):
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]  # (GPU recipes too)
    cli = lightning_main(["--config", str(config), f"--trainer.default_root_dir={tmp_path}", *cpu], run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_checkpoint_of_another_vocabulary_is_a_clear_error(quickstart_cache, tmp_path):
    args = _cli_args(quickstart_cache, tmp_path, ["--model.text_vocab_size=999", "--model.visual_vocab_size=7"])
    with pytest.raises(ValueError, match="999 text \\+ 7 visual tokens"):
        lightning_main(["test", *args])
    wandb.finish()


def test_bad_data_settings_are_clear_errors(quickstart_cache, tmp_path):
    from data_modules import QuickstartDataModule
    from videobert.streaming import shard_urls

    args = {**tiny_data_args(quickstart_cache), "train_videos": 99}
    with pytest.raises(ValueError, match="built with other settings .*train_videos"):
        QuickstartDataModule(**args).prepare_data()
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        shard_urls(str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="unknown losses \\['mvm'\\]"):
        VideoBertModule(loss_weights={"mvm": 0.1})


def test_resume_from_last_continues_step_and_reseeds_the_stream(quickstart_cache, tmp_path):
    run = tmp_path / "run"
    lightning_main(["fit", *_cli_args(quickstart_cache, run), "--trainer.max_steps=3"])
    wandb.finish()
    cli = lightning_main(["fit", *_cli_args(quickstart_cache, run), "--trainer.max_steps=6", "--ckpt_path=last",
                          "--data.init_args.batches_per_epoch=10"])  # (one epoch: the epoch start does not reseed)
    wandb.finish()
    assert cli.trainer.global_step == 6
    assert cli.datamodule.state.get() == (0, 3)  # the resumed stream was seeded by the step it resumed at
    sched = cli.trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 6  # the schedule continued from the checkpoint


def test_cbt_variant_fits_and_runs_zero_shot(quickstart_cache, tmp_path):
    args = ["--data.init_args.video_input=features", "--model.loss_weights={nce_loss: 0.1}",
            "--model.untie_visual_output=false"]  # (quickstart.yaml unties visual-word output; CBT has none)
    cli = lightning_main(["fit", *_cli_args(quickstart_cache, tmp_path / "run", args)])
    wandb.finish()
    metrics = cli.trainer.callback_metrics
    assert cli.model.model.cfg.feature_dim == 165 and "train/mvm_loss" not in metrics
    for key in ("train/nce_loss", "train/xmodal_loss", "train/mlm_loss", "val/nce_acc"):
        assert key in metrics and metrics[key].isfinite(), key
    ckpt = tmp_path / "run/ckpt/last.ckpt"
    cli = lightning_main(["test", *_cli_args(quickstart_cache, tmp_path / "test", args), f"--ckpt_path={ckpt}"])
    wandb.finish()
    assert 0.0 <= cli.trainer.callback_metrics["test/zero_shot/verb_top1"] <= 1.0
    cli = lightning_main(["test", *_cli_args(quickstart_cache, tmp_path / "retrieval", args), f"--ckpt_path={ckpt}",
                          "--config", str(ROOT / "experiments/eval/retrieval.yaml")])
    wandb.finish()
    got = cli.trainer.callback_metrics  # (CBT trained its text and video means to match: the dual encoder counts)
    assert {"test/retrieval/dual_t2v_r1", "test/retrieval/generative_t2v_r1", "test/retrieval/cross_t2v_r1"} <= set(got)


def test_a_training_step_calls_no_collective_between_flushes(quickstart_cache, tmp_path, monkeypatch):
    """The stream's counts stay on the device; one all-reduce every log_every_n_steps batches and at an epoch's
    last batch (issue: a host sync and a collective per step starve a GPU)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    calls, real = [], SingleDeviceStrategy.reduce

    def counted(self, tensor, *args, **kwargs):
        if getattr(tensor, "shape", None) == (2,):  # (the data counts: videos, skipped)
            calls.append(int(self.lightning_module.global_step))
        return real(self, tensor, *args, **kwargs)

    monkeypatch.setattr(SingleDeviceStrategy, "reduce", counted)
    cli = lightning_main(["fit", *_cli_args(quickstart_cache, tmp_path / "run", ["--trainer.log_every_n_steps=3",
                                                                                 "--trainer.max_steps=8"])])
    wandb.finish()
    # 4 batches an epoch: flushes after batches 3 and 4 of each epoch (steps 2, 3, 6, 7 counted from 0)
    assert calls == [2, 3, 6, 7]
    rows = list(csv.DictReader(open(glob.glob(f"{tmp_path}/run/csv/*/metrics.csv")[0])))
    per_epoch = [float(r["data/videos"]) for r in rows if r.get("data/videos")]
    assert len(per_epoch) == 2 and all(v > 0 for v in per_epoch) and cli.trainer.global_step == 8
