"""Streams feature shards (WebDataset) and turns each video into VideoBERT sequences on the fly.

train: shards drawn with replacement (`resampled`), a video shuffle buffer, sequences built per worker,
a sequence shuffle buffer, batches; `batches_per_epoch` batches per epoch on every rank.
val: one pass over the validation shards, split by node and worker. test: zero-shot classification
examples from the test shards and the ground-truth sidecar.
"""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
import webdataset as wds

from videobert.sequences import SequenceBuilder, collate
from videobert.tasks.zero_shot import ZeroShotData
from videobert.text import TextTokenizer
from videobert.vq import VisualVocab


def decode_video(sample: dict) -> dict:
    """Raw tar members -> {"__key__", "features" (T, D) float32, "json"}; raises naming the sample."""
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    for key in ("features.npy", "json"):
        if key not in sample:
            raise KeyError(f"{where}: no '{key}' member (is this a feature shard?)")
    features = np.load(io.BytesIO(sample["features.npy"]), allow_pickle=False).astype(np.float32)
    meta = json.loads(sample["json"])
    if features.ndim != 2 or len(features) != len(meta.get("clips", [])):
        raise ValueError(f"{where}: features {features.shape} do not match {len(meta.get('clips', []))} clips")
    return {"__key__": sample["__key__"], "features": features, "json": meta}


class SeededShuffle:
    """A webdataset shuffle buffer seeded when iteration starts, from torch's seed in this process or
    DataLoader worker (which `seed_everything` fixes and which differs per worker and epoch), so runs
    repeat exactly; webdataset's own `.shuffle()` seeds from the clock."""

    def __init__(self, bufsize: int, salt: int):
        self.bufsize, self.salt = bufsize, salt

    def __call__(self, source):
        seed = (torch.initial_seed() * 1_000_003 + self.salt) % 2**63
        return wds.filters.shuffle(self.bufsize, self.bufsize, seed=seed)(source)


def _urls(spec: str) -> list[str]:
    """A folder (all its .tar files) or a webdataset URL pattern."""
    path = Path(spec)
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
        if not urls:
            raise FileNotFoundError(f"{spec}: no .tar shards")
        return urls
    if not any(c in spec for c in "{:") and not path.exists():
        raise FileNotFoundError(f"{spec}: no such shard folder or file")
    return list(wds.shardlists.expand_urls(spec))


class VideoBertDataModule(L.LightningDataModule):
    def __init__(self, train_shards: str | None = None, val_shards: str | None = None,
                 test_shards: str | None = None, tokenizer: str | None = None, visual_vocab: str | None = None,
                 ground_truth: str | None = None, batch_size: int = 32, num_workers: int = 2,
                 batches_per_epoch: int = 1000, val_batches: int = 50, video_shuffle: int = 64,
                 sequence_shuffle: int = 1000, max_text_tokens: int = 32, max_visual_words: int = 16,
                 mask_prob: float = 0.15, mix: tuple[float, float, float] = (0.6, 0.2, 0.2),
                 negative_prob: float = 0.5, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def _paths(self) -> dict[str, str | None]:
        """Where the inputs are; the quickstart subclass points these at its cache."""
        hp = self.hparams
        return {"train": hp.train_shards, "val": hp.val_shards, "test": hp.test_shards,
                "tokenizer": hp.tokenizer, "visual_vocab": hp.visual_vocab, "ground_truth": hp.ground_truth}

    def _require(self, name: str) -> str:
        value = self._paths()[name]
        if value is None:
            raise ValueError(f"data.{name} is not set in the experiment config")
        return value

    def setup(self, stage: str | None = None) -> None:
        self.tokenizer = TextTokenizer(self._require("tokenizer"))
        self.vocab = VisualVocab.load(self._require("visual_vocab"))

    def vocab_sizes(self) -> tuple[int, int]:
        return self.tokenizer.vocab_size, self.vocab.size

    def max_sequence_length(self) -> int:
        """The longest sequence built: [CLS] text [>] visual words [SEP]."""
        return self.hparams.max_text_tokens + self.hparams.max_visual_words + 3

    def visual_centroids(self) -> np.ndarray:
        """(visual vocabulary size, D): the leaf centroid of every visual word, in word order."""
        return self.vocab.centroids[-1]

    def _builder(self, seed_offset: int = 0) -> SequenceBuilder:
        hp = self.hparams
        return SequenceBuilder(self.tokenizer, self.vocab, hp.max_text_tokens, hp.max_visual_words, hp.mask_prob,
                               tuple(hp.mix), hp.negative_prob, seed=hp.seed + seed_offset)

    def _loader(self, dataset, num_workers: int, batches: int):
        loader = wds.WebLoader(dataset, batch_size=None, num_workers=num_workers,
                               persistent_workers=num_workers > 0)
        return loader.with_epoch(batches)

    def train_dataloader(self):
        hp = self.hparams
        pipeline = wds.DataPipeline(
            # shards drawn with replacement, seeded by (rank, worker, epoch, seed): reproducible runs
            wds.ResampledShards(_urls(self._require("train")), seed=hp.seed, deterministic=True),
            wds.tarfile_to_samples(handler=wds.warn_and_continue),
            wds.map(decode_video, handler=wds.warn_and_continue),
            SeededShuffle(hp.video_shuffle, salt=0),
            self._builder(),  # one video -> its sequences
            SeededShuffle(hp.sequence_shuffle, salt=1),
            wds.batched(hp.batch_size, collation_fn=functools.partial(collate, pad_id=self.tokenizer.pad_id),
                        partial=False))
        return self._loader(pipeline, hp.num_workers, hp.batches_per_epoch)

    def _exact(self, spec: str):
        urls, world = _urls(spec), self.trainer.world_size if self.trainer else 1
        if len(urls) < world:
            raise ValueError(f"{spec}: {len(urls)} shards for {world} processes; every rank needs at least one")
        return (wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False,
                               handler=wds.warn_and_continue)
                .map(decode_video, handler=wds.warn_and_continue))

    def val_dataloader(self):
        hp = self.hparams
        ds = (self._exact(self._require("val")).compose(self._builder(seed_offset=1))
              .batched(hp.batch_size, collation_fn=functools.partial(collate, pad_id=self.tokenizer.pad_id)))
        return self._loader(ds, 0, hp.val_batches)

    def test_dataloader(self):
        truth_path = Path(self._require("ground_truth"))
        if not truth_path.is_file():
            raise FileNotFoundError(f"{truth_path}: no ground-truth sidecar for the zero-shot evaluation")
        zs = ZeroShotData(self.tokenizer, self.vocab, json.loads(truth_path.read_text()), self.hparams.max_visual_words)
        ds = self._exact(self._require("test")).compose(zs).batched(self.hparams.batch_size, collation_fn=zs.collate)
        return wds.WebLoader(ds, batch_size=None, num_workers=0)
