"""Shared fixtures: a tiny built-in corpus, built once per test session in a temp folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")  # tests never contact a W&B server
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # (as the CLI: idle OpenMP threads sleep, see cli.py)


@pytest.fixture(scope="session")
def quickstart_cache(tmp_path_factory):
    """A prepared quickstart cache (corpus -> shards -> features -> vocab) with a handful of videos."""
    from data_modules import QuickstartDataModule

    root = tmp_path_factory.mktemp("quickstart")
    dm = QuickstartDataModule(**tiny_data_args(root))
    dm.prepare_data()
    return root


@pytest.fixture(scope="session")
def pretrained(quickstart_cache, tmp_path_factory):
    """A VideoBERT pretrained for 3 steps on the tiny corpus (its checkpoint)."""
    from pathlib import Path

    from videobert.cli import lightning_main

    root, out = Path(__file__).resolve().parents[1], tmp_path_factory.mktemp("pretrained")
    model = ["--model.hidden_size=32", "--model.num_layers=2", "--model.num_heads=2", "--model.intermediate_size=64",
             "--model.warmup_steps=2"]
    lightning_main(["fit", "--config", str(root / "experiments/quickstart.yaml"), *model,
                    *[f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()],
                    "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
                    "--trainer.max_steps=3", "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={out}",
                    "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
                    "init_args: {save_last: true}}]"])
    return next(out.glob("**/checkpoints/last.ckpt"))


def tiny_data_args(root) -> dict:
    return dict(cache_dir=str(root), train_videos=12, val_videos=3, test_videos=4, samples_per_shard=4,
                vocab_levels=2, vocab_k=6, tokenizer_vocab_size=300, batch_size=8, num_workers=0,
                batches_per_epoch=4, val_batches=2, video_shuffle=4, sequence_shuffle=16)
