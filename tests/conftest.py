"""Shared fixtures: a tiny built-in corpus, built once per test session in a temp folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")  # tests never contact a W&B server
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def quickstart_cache(tmp_path_factory):
    """A prepared quickstart cache (corpus -> shards -> features -> vocab) with a handful of videos."""
    from data_modules import QuickstartDataModule

    root = tmp_path_factory.mktemp("quickstart")
    dm = QuickstartDataModule(**tiny_data_args(root))
    dm.prepare_data()
    return root


def tiny_data_args(root) -> dict:
    return dict(cache_dir=str(root), train_videos=12, val_videos=3, test_videos=4, samples_per_shard=4,
                vocab_levels=2, vocab_k=6, tokenizer_vocab_size=300, batch_size=8, num_workers=0,
                batches_per_epoch=4, val_batches=2, video_shuffle=4, sequence_shuffle=16)
