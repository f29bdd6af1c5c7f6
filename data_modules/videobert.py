"""Streams feature shards (WebDataset) and turns each video into VideoBERT sequences on the fly.

train: `mode: resampled` (shards drawn with replacement; `batches_per_epoch` batches per rank, or one
pass worth computed from the shard index) or `mode: exact` (each sample once per epoch across all ranks
and workers). Every rank runs the same number of batches either way. val: one pass over the validation
shards, split across ranks and workers (ranks may run different numbers of batches; nothing in validation
waits for the other ranks per step). test: the examples of `test_task` (e.g. zero-shot classification) from
the test shards and the ground-truth sidecar. See `videobert.streaming` for the mechanics.

Fine-tuning (`task`, e.g. sentiment or captioning): train, val and test all stream that task's Data stage
(its examples and labels from the shards' `json`; no ground-truth sidecar) instead of pretraining
sequences; the epoch is sized by the task's unit (videos or sentences) from the shard index.
"""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import lightning as L
import webdataset as wds
from lightning.pytorch.utilities import rank_zero_info

from videobert.cli_errors import UsageError, check_range
from videobert.preflight import STAGE_SPLITS, check, readable_shards, shard_entries
from videobert.samples import decode_video, read_npy
from videobert.provenance import check_provenance
from videobert.safe_io import TooManySkips
from videobert.sequences import SequenceBuilder
from videobert.shards import load_index
from videobert.streaming import (MODES, ShardSet, ShardStream, StreamLoader, StreamState, resume_position,
                                 shard_urls, worker_batches)
from videobert.tasks import TASKS
from videobert.text import TextTokenizer
from videobert.vq import VisualVocab


def _check_ranges(args: dict) -> None:
    """Numeric settings a typo can put out of range: one clear error at construction, before any data is read."""
    for name in ("mask_prob", "val_mask_prob", "negative_prob", "hard_negatives", "max_skip_rate"):
        check_range(f"data.{name}", args[name], 0.0, 1.0)
    for name in ("batch_size", "max_text_tokens", "max_visual_words", "max_sentences", "max_subsample"):
        check_range(f"data.{name}", args[name], 1)
    for name in ("num_workers", "video_shuffle", "sequence_shuffle", "skip_check_after"):
        check_range(f"data.{name}", args[name], 0)
    for name in ("batches_per_epoch", "val_batches"):
        check_range(f"data.{name}", args[name], 1)
    mix = args["mix"]
    if len(mix) != 3 or any(m < 0 for m in mix) or not sum(mix) > 0:
        raise ValueError(f"data.mix={list(mix)}: expected 3 non-negative shares, not all 0 (paired, text only, "
                         "video only; normalised to sum to 1)")


class VideoBertDataModule(L.LightningDataModule):
    def __init__(self, train_shards: str | list[ShardSet] | None = None, val_shards: str | None = None,
                 test_shards: str | None = None, tokenizer: str | None = None, visual_vocab: str | None = None,
                 ground_truth: str | None = None, thumbnails: str | None = None, mode: str = "resampled",
                 train_ground_truth: str | None = None, predict_videos: str | None = None,
                 predict_shards: str | None = None, predict_labels: str | None = None,
                 batch_size: int = 32,
                 num_workers: int = 2, batches_per_epoch: int | None = None, val_batches: int | None = None,
                 video_shuffle: int = 64, sequence_shuffle: int = 1000, max_text_tokens: int = 32,
                 max_visual_words: int = 16, mask_prob: float = 0.15, val_mask_prob: float | None = None, mix: tuple[float, float, float] = (0.6, 0.2, 0.2),
                 negative_prob: float = 0.5, hard_negatives: float = 0.0, max_sentences: int = 1, max_subsample: int = 1,
                 video_input: str = "words", test_task: str = "zero_shot", task: str | None = None,
                 task_options: dict | None = None, max_skip_rate: float = 0.05, skip_check_after: int = 100,
                 seed: int = 0, visual_split: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 aligned_targets_only: bool = False, action_mask_prob: float = 0.0, future_prob: float = 0.0,
                 future_clips: int = 2, allow_mixed_provenance: bool = False):
        """`val_mask_prob`: the masking rate of validation (default: `mask_prob`); fix it when comparing runs
        that train with different masking rates (e.g. a sweep), or a lower rate also means an easier test.
        `task`: a fine-tuning task of `videobert.tasks.TASKS` (sentiment, captioning): train, val and test
        stream its examples; `task_options`: its Data stage's settings (e.g. `{inputs: video}`).
        `thumbnails`: shards holding the test videos' bytes under the same keys (the raw shards of
        `videobert data shards`), for the clip images of the example tables; without it, no images.
        `train_ground_truth`: the training videos' ground truth (as `ground_truth`), for baselines learned
        from training data (text_to_video: what each visual word depicts); without it they are left out.
        `predict_videos` / `predict_shards`: what `videobert predict` reads (a folder of videos, or of feature
        shards); `predict_labels`: a json file {"verbs": [...], "nouns": [...]} for its zero-shot answers
        (default: the ground truth's label words, when there is one). `visual_split`, `aligned_targets_only`,
        `action_mask_prob` (label words: `train_ground_truth`'s verbs and nouns), `future_prob`, `future_clips`:
        the pretraining task's options beyond the paper's (`videobert.sequences.SequenceBuilder`).
        `allow_mixed_provenance`: train on shard sets of different feature provenance, or with a visual
        vocabulary fit on other features (refused by default: `videobert.provenance`)."""
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"data.mode={mode!r}: expected one of {MODES}")
        if test_task not in TASKS:
            raise ValueError(f"data.test_task={test_task!r}: expected one of {sorted(TASKS)}")
        finetune = sorted(k for k, v in TASKS.items() if getattr(v, "finetune", False))
        if test_task in finetune:
            raise ValueError(f"data.test_task={test_task!r} trains a head first: set data.task={test_task!r} (and a "
                             "fine-tuning model, see experiments/finetune/)")
        if task is not None and task not in finetune:
            raise ValueError(f"data.task={task!r}: expected a fine-tuning task, one of {finetune}")
        if video_input not in ("words", "features"):
            raise ValueError(f"data.video_input={video_input!r}: expected 'words' (VideoBERT) or 'features' (CBT)")
        _check_ranges(locals())
        if mode == "exact" and max_sentences > 1:
            raise ValueError("data.mode=exact cannot size an epoch when sentences are concatenated at random "
                             "(max_sentences > 1): use mode=resampled, or max_sentences=1")
        self.save_hyperparameters()
        self.state = StreamState()
        self.skips = {"videos": 0, "skipped": 0}

    def _paths(self) -> dict:
        """Where the inputs are; the quickstart subclass points these at its cache."""
        hp = self.hparams
        return {"train": hp.train_shards, "val": hp.val_shards, "test": hp.test_shards,
                "tokenizer": hp.tokenizer, "visual_vocab": hp.visual_vocab, "ground_truth": hp.ground_truth,
                "thumbnails": hp.thumbnails, "train_ground_truth": hp.train_ground_truth}

    def thumbnail_source(self):
        """Where example tables find clip images (`videobert.thumbnails`), or None when none is configured."""
        from videobert.thumbnails import ThumbnailSource

        folder = self._paths().get("thumbnails")
        if folder is not None and not hasattr(self, "_thumbnails"):
            self._thumbnails = ThumbnailSource(folder)
        return getattr(self, "_thumbnails", None)

    def inputs(self) -> dict:
        """What this DataModule reads (shard specs, tokenizer, visual vocabulary): the run's data lineage."""
        return {k: v for k, v in self._paths().items() if v is not None}

    def _require(self, name: str):
        value = self._paths()[name]
        if value is None:
            raise UsageError(f"data.{name} is not set in the experiment config")
        return value

    @property
    def features(self) -> bool:
        """CBT: clip features go to the model as they are; no visual vocabulary is needed."""
        return self.hparams.video_input == "features"

    def setup(self, stage: str | None = None) -> None:
        self.tokenizer = TextTokenizer(self._require("tokenizer"))
        self.vocab = None if self.features else VisualVocab.load(self._require("visual_vocab"))
        paths = self._paths()  # (one provenance per run: videobert.provenance; allow_mixed_provenance lets it pass)
        check_provenance({s: paths.get(s) for s in ("train", "val", "test")}, None if self.features else
                         paths.get("visual_vocab"), self.hparams.allow_mixed_provenance)
        dim, self._feature_dtype = self._peek_features()
        self._feature_dim = self.vocab.dim if self.vocab else dim
        self.task_data = self._task_data() if self.hparams.task else None
        if hasattr(self.task_data, "count_labels") and self._paths().get("train") is not None:
            self.task_data.train_counts = self.task_data.count_labels(self._train_metas())
        if self.trainer is not None and stage in STAGE_SPLITS:
            self.preflight(stage)

    def preflight(self, stage: str | None = None) -> list:
        """Every configured split against world size x workers (`videobert.preflight.check`)."""
        return check(self, stage)

    def _task_data(self):
        """The fine-tuning task's Data stage (its examples, batches and metrics)."""
        hp, cls = self.hparams, TASKS[self.hparams.task]
        try:
            return cls(self.tokenizer, self.vocab, max_visual_words=hp.max_visual_words, features=self.features,
                       max_text_tokens=hp.max_text_tokens, **(hp.task_options or {}))
        except TypeError as err:
            raise ValueError(f"data.task_options={hp.task_options}: not settings of {cls.__name__} ({err})") from None

    def _train_samples(self):
        """Every training sample's tar members (all shards, whatever the rank): training-data baselines."""
        urls = [u for s in self._shard_sets("train") for u in shard_urls(s.urls)]
        yield from wds.tarfile_to_samples()({"url": u} for u in urls)

    def _train_metas(self):
        return (json.loads(s["json"]) for s in self._train_samples() if "json" in s)

    def _peek_features(self) -> tuple[int, str]:
        """The clip features' dimension and stored dtype, from the first good sample of the first configured
        split (the set's: a sample that differs is a counted skip)."""
        for name in ("train", "val", "test"):
            if self._paths()[name] is not None:
                samples = wds.tarfile_to_samples(handler=wds.warn_and_continue)({"url": u} for u in self._sets(name)[0][0])
                for sample in itertools.islice(samples, 16):
                    try:
                        decode_video(sample)
                    except (ValueError, KeyError):
                        continue
                    features = read_npy(sample["features.npy"])
                    return int(features.shape[1]), features.dtype.str
        raise ValueError("data: no shards to read the clip-feature dimension from")

    def vocab_sizes(self) -> tuple[int, int]:
        return self.tokenizer.vocab_size, 1 if self.features else self.vocab.size

    def feature_dim(self) -> int:
        """0 for visual words (VideoBERT); the clip-feature dimension for continuous inputs (CBT)."""
        return self._feature_dim if self.features else 0

    def max_sequence_length(self) -> int:
        """The longest sequence built: [CLS] text [>] visual words [SEP]."""
        return self.hparams.max_text_tokens + self.hparams.max_visual_words + 3

    def visual_centroids(self):
        """(visual vocabulary size, D): the leaf centroid of every visual word, in word order; factorised
        words: a list of each group's leaf centroids."""
        return getattr(self.vocab, "group_centroids", None) or self.vocab.centroids[-1]

    def visual_groups(self) -> tuple[int, ...]:
        """Each group's vocabulary size for factorised visual words (`videobert.factorised`); () otherwise."""
        return tuple(getattr(self.vocab, "group_sizes", ())) if not self.features else ()

    def set_epoch(self, epoch: int, step: int) -> None:
        """Reseed the training stream (the LightningModule calls this when an epoch starts)."""
        self.state.set(epoch, step)

    def _shard_sets(self, name: str) -> list[ShardSet]:
        spec = self._require(name)
        return [ShardSet(spec)] if isinstance(spec, str) else [s if isinstance(s, ShardSet) else ShardSet(**s)
                                                              for s in spec]

    def _sets(self, name: str) -> list[tuple[list[str], list[int] | None, float]]:
        """[(urls, examples per shard or None when unknown, weight)] of a split's shard sets; an example is a
        sentence (pretraining) or the fine-tuning task's unit."""
        unit = getattr(TASKS[self.hparams.task], "unit", "sentences") if self.hparams.task else "sentences"
        resolved, bad = [], getattr(self, "_bad_shards", {})
        for s in self._shard_sets(name):
            urls = shard_urls(s.urls)
            entries = shard_entries(s, urls)
            if entries is None:
                resolved.append((urls, None, s.weight))
                continue
            urls, counts, unreadable = readable_shards(name, s.urls, urls, entries, unit, bad)
            if name == "train":  # (each unreadable training shard is one counted skip, once)
                self.skips["skipped"] += len(set(unreadable) - set(bad))
            self._bad_shards = bad = {**bad, **unreadable}
            resolved.append((urls, counts, s.weight))
        return resolved

    def prepare_data(self) -> None:
        """Rebuild missing index entries of local shard sets once per machine, before any rank reads them."""
        for name in ("train", "val", "test"):
            if self._paths()[name] is not None:
                self._sets(name)

    def _world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def _stream(self, name: str, sets, build, collate_fn, mode: str, batches: int | None, seed: int, workers: int,
                state: StreamState, shuffle: bool = True):
        hp, (rank, world) = self.hparams, self._world()
        sets = [(urls, counts or [1] * len(urls), w) for urls, counts, w in sets]
        shards, readers = sum(n > 0 for _, counts, _ in sets for n in counts), world * max(1, workers)
        if mode == "exact" and shards < readers and name == "train":
            raise ValueError(f"{name} ({mode}): {shards} non-empty shards for {world} rank(s) x {max(1, workers)} "
                             f"worker(s) = {readers} readers; every reader needs one (write smaller shards or use "
                             "fewer workers)")
        samples = self._samples(sets) if mode == "exact" and shards < readers else None
        if samples is not None and samples < readers:  # (evaluation splits samples then: each rank needs one)
            raise ValueError(f"{name}: {samples} videos for {world} rank(s) x {max(1, workers)} worker(s) = {readers} "
                             "readers; every reader needs one (fewer devices or workers, or more videos)")
        ds = ShardStream(sets, functools.partial(decode_video, dim=self._feature_dim, dtype=self._feature_dtype), build, collate_fn,
                         hp.batch_size, mode, batches, rank, world, seed, state, pad=name == "train",
                         video_shuffle=hp.video_shuffle if shuffle else 0,
                         sequence_shuffle=hp.sequence_shuffle if shuffle else 0)
        return StreamLoader(ds, num_workers=workers)

    def _samples(self, sets) -> int | None:
        """Samples (videos) in the shard sets, from their index; None if a set has none."""
        total = 0
        for urls, _, _ in sets:
            if not urls or not all(Path(u).is_file() for u in urls):  # (remote shards: not counted here)
                return None
            entries = load_index(Path(urls[0]).parent, [Path(u).name for u in urls])
            total += sum(entries[Path(u).name].get("samples", 0) for u in urls)
        return total

    def _epoch_batches(self, sets) -> int:
        hp, (_, world) = self.hparams, self._world()
        if hp.mode == "exact" and any(w != 1.0 for *_, w in sets):
            raise ValueError("data.mode=exact reads every sample once: shard-set weights apply to resampled mode only")
        if any(counts is None for _, counts, _ in sets) and (hp.mode == "exact" or hp.batches_per_epoch is None):
            raise ValueError("a remote shard set has no `index`: give its index.json, or set data.batches_per_epoch "
                             "(resampled mode)")
        seqs = [n for urls, counts, _ in sets for n in (counts or [1] * len(urls))]
        if hp.mode == "resampled" and hp.max_sentences > 1 and not hp.task:  # sentences per sequence: (1 + max) / 2 on average
            seqs = [round(n * 2 / (1 + hp.max_sentences)) for n in seqs]
        k = worker_batches(hp.mode, seqs, hp.batch_size, world, hp.num_workers, hp.batches_per_epoch)
        per_rank = k * max(1, hp.num_workers)
        rank_zero_info(f"train ({hp.mode}): {len(seqs)} shards, {sum(seqs)} sequences; {per_rank} batches of "
                       f"{hp.batch_size} per rank per epoch on {world} rank(s) "
                       f"({per_rank * hp.batch_size * world / max(1, sum(seqs)):.2f} passes)")
        return k

    def train_dataloader(self):
        hp, sets = self.hparams, self._sets("train")
        k = self._epoch_batches(sets)
        if self.trainer:  # on resume this is the restored epoch and step: the stream is reseeded by them
            self.set_epoch(self.trainer.current_epoch, self.trainer.global_step)
        builder = self.task_data or self._builder()
        loader = self._stream("train", sets, builder, builder.collate, hp.mode, k, hp.seed, hp.num_workers, self.state)
        loader.dataset.length = k * max(1, hp.num_workers)
        if self.trainer:
            loader.position = functools.partial(resume_position, self.trainer, self.set_epoch, hp.mode,
                                                loader.dataset.length)
        return loader

    def val_dataloader(self):
        # (a fresh StreamState: the same masks every validation)
        builder = self.task_data or self._builder(self.hparams.val_mask_prob, train=False)
        return self._stream("val", self._sets("val"), builder, builder.collate, "exact", self.hparams.val_batches,
                            self.hparams.seed + 1, 0, StreamState())

    def test_dataloader(self):
        if self.task_data is not None:  # fine-tuning: the labels are in the shards, no sidecar
            return self._stream("test", self._sets("test"), self.task_data, self.task_data.collate, "exact", None,
                                self.hparams.seed + 2, 0, StreamState(), shuffle=False)
        truth_path = Path(self._require("ground_truth"))
        if not truth_path.is_file():
            raise FileNotFoundError(f"{truth_path}: no ground-truth sidecar for the zero-shot evaluation")
        truth = json.loads(truth_path.read_text())
        self.test_data = task = TASKS[self.hparams.test_task](self.tokenizer, self.vocab, truth,
                                                              self.hparams.max_visual_words, features=self.features)
        train_truth = self._paths().get("train_ground_truth")
        train_truth = json.loads(Path(train_truth).read_text()) if train_truth and Path(train_truth).is_file() else None
        if (hasattr(task, "learn_baselines") and self._paths().get("train") and
                (train_truth is not None or not getattr(task, "baselines_need_truth", True))):
            task.learn_baselines((decode_video(s, self._feature_dim) for s in self._train_samples()), train_truth)
        return self._stream("test", self._sets("test"), lambda videos, rng: task(videos),
                            lambda ex, rng: task.collate(ex), "exact", None, self.hparams.seed + 2, 0, StreamState(),
                            shuffle=False)

    def test_evaluator(self):
        """The metrics module of `data.test_task` (the LightningModule feeds it every test batch; every task
        gathers what it compares across ranks)."""
        return self.test_data.metrics()

    def predict_dataloader(self):
        from videobert.predict import PredictItems, loader

        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return loader(PredictItems(self.hparams.predict_videos, self.hparams.predict_shards, rank, world))

    def pipeline(self, model):
        """(`videobert.api.VideoBertPipeline` around `model`, verbs, nouns): what `predict` runs per video."""
        from videobert.predict import pipeline_for

        if not hasattr(self, "_pipeline"):
            self._pipeline = pipeline_for(self, model)
        return self._pipeline

    def _builder(self, mask_prob: float | None = None, train: bool = True) -> SequenceBuilder:
        """Training's sequences, or (`train` False) validation's: masked at `mask_prob` as BERT masks, without
        the training-only options (whole-action and future masking, targets on aligned pairs only), so every
        recipe is validated on the same pairs and the same task."""
        hp = self.hparams
        mask_prob = hp.mask_prob if mask_prob is None else mask_prob
        return SequenceBuilder(self.tokenizer, self.vocab, hp.max_text_tokens, hp.max_visual_words, mask_prob,
                               tuple(hp.mix), hp.negative_prob, max_sentences=hp.max_sentences,
                               max_subsample=hp.max_subsample, features=self.features, hard_negatives=hp.hard_negatives,
                               visual_split=tuple(hp.visual_split) if train else (0.8, 0.1, 0.1),
                               aligned_targets_only=hp.aligned_targets_only and train,
                               action_mask_prob=hp.action_mask_prob if train else 0.0,
                               action_words=self._action_words() if train else None,
                               future_prob=hp.future_prob if train else 0.0, future_clips=hp.future_clips)

    def _action_words(self) -> list[str] | None:
        """The label verbs and nouns (of `train_ground_truth`) for whole-action masking, when it is on."""
        if not self.hparams.action_mask_prob:
            return None
        path = self._paths().get("train_ground_truth")
        if not path or not Path(path).is_file():
            raise ValueError(f"data.action_mask_prob={self.hparams.action_mask_prob} needs the label words: set "
                             f"data.train_ground_truth to a ground-truth json with verbs and nouns (got {path})")
        truth = json.loads(Path(path).read_text())
        return list(truth["verbs"]) + list(truth["nouns"])

    def count_skips(self, videos: int, skipped: int) -> None:
        """Add the stream's counts (summed over ranks, so every rank decides alike); stop when too many were bad."""
        self.skips["videos"] += videos
        self.skips["skipped"] += skipped
        seen = self.skips["videos"] + self.skips["skipped"]
        rate = self.skips["skipped"] / max(1, seen)
        if seen >= self.hparams.skip_check_after and rate > self.hparams.max_skip_rate:
            raise TooManySkips(f"{self.skips['skipped']} of {seen} samples were bad and skipped ({rate:.1%}), more "
                               f"than data.max_skip_rate={self.hparams.max_skip_rate:.1%}; the warnings above name "
                               "the files")
