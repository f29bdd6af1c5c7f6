"""Videos -> VideoBERT training sequences, and the masking that makes them a pretraining task.

A sequence is `[CLS] text [>] visual words [SEP]` (segment 0 for text, 1 for video); text-only is
`[CLS] text [SEP]` and video-only `[CLS] [>] visual words [SEP]`. Visual word w has token id
`text_vocab_size + w`. As in the paper, a run of 1..`max_sentences` neighbouring caption sentences
becomes one sequence whose visual words are the clips in its time span, subsampled at a random rate of
1..`max_subsample`; a paired sequence is, with `negative_prob`, given the visual words of another video
instead (alignment label 0). Sequences are text+video, text-only or video-only in the ratio `mix`. Masking
follows BERT (`videobert.masking`): `mask_prob` of the non-special tokens are targets; of these 80% become
[MASK], 10% a random token of the same modality, 10% stay. Options beyond the paper's defaults:
`future_prob` (a share of sequences that end at a sentence start with the next sentence's first clips
masked: forecasting as a training task), `action_mask_prob` (whole-action masking), `visual_split` and
`aligned_targets_only` (see `SequenceBuilder`).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from .masking import BERT_SPLIT, IGNORE, action_positions, corrupt, force_mask, mask_tokens, swap_clip_features

__all__ = ["IGNORE", "SequenceBuilder", "build_sequence", "collate", "mask_tokens"]


def build_sequence(text_ids, visual_ids, cls_id: int, sep_id: int, bridge_id: int):
    """(input_ids, segment_ids) for `[CLS] text [>] visual [SEP]`; either part may be empty."""
    ids, seg = [cls_id, *text_ids], [0] * (1 + len(text_ids))
    if len(visual_ids):
        ids += [bridge_id, *visual_ids]
        seg += [1] * (1 + len(visual_ids))
    return ids + [sep_id], seg + [seg[-1]]


class SequenceBuilder:
    """Turns a stream of decoded videos into a stream of masked training sequences."""

    def __init__(self, tokenizer, vocab, max_text_tokens: int = 32, max_visual_words: int = 16,
                 mask_prob: float = 0.15, mix: tuple[float, float, float] = (0.6, 0.2, 0.2),
                 negative_prob: float = 0.5, negatives_buffer: int = 64, max_sentences: int = 1,
                 max_subsample: int = 1, features: bool = False, hard_negatives: float = 0.0,
                 visual_split: tuple[float, float, float] = BERT_SPLIT, aligned_targets_only: bool = False,
                 action_mask_prob: float = 0.0, action_words: list[str] | None = None, future_prob: float = 0.0,
                 future_clips: int = 2):
        """`vocab`: the visual vocabulary, or None with `features=True` (CBT: clip features go to the
        model; every clip has the one placeholder id `text_vocab_size`). `hard_negatives`: the share of
        misaligned pairs whose clips come from another sentence of the same video (same scene and look, other
        action: only the grounding of the words tells them apart) instead of another video; a repeated step
        makes a few of them aligned in truth.
        `visual_split`: of the masked visual targets, the shares shown as [MASK], as a random visual word (CBT:
        another clip's features) and unchanged (BERT: 0.8, 0.1, 0.1). `aligned_targets_only`: misaligned pairs
        train the alignment head only (their text and clips are no targets: the clips do not show the text).
        `action_mask_prob`: the share of sequences with text in which every label word (`action_words`: the
        verbs and nouns, each one WordPiece token) is a [MASK] target, the verb and the noun together.
        `future_prob`: the share of sentences (after the first of a video) that become a forecasting sequence:
        `[CLS] [>]` the clips before the sentence, then its first `future_clips` clips as [MASK] targets, and
        nothing after them."""
        self.tok, self.vocab, self.features = tokenizer, vocab, features
        self.text_vocab_size = tokenizer.vocab_size
        self.max_text, self.max_visual, self.mask_prob = max_text_tokens, max_visual_words, mask_prob
        self.mix = np.asarray(mix, np.float64) / np.sum(mix)  # paired, text-only, video-only
        self.negative_prob, self.negatives_buffer = negative_prob, negatives_buffer
        if max_sentences < 1 or max_subsample < 1:
            raise ValueError(f"max_sentences={max_sentences} and max_subsample={max_subsample} must be >= 1")
        self.max_sentences, self.max_subsample = max_sentences, max_subsample
        if not 0.0 <= hard_negatives <= 1.0:
            raise ValueError(f"hard_negatives={hard_negatives}: expected a share in [0, 1]")
        self.hard_negatives = hard_negatives
        for name, share in (("action_mask_prob", action_mask_prob), ("future_prob", future_prob)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name}={share}: expected a share in [0, 1]")
        if len(visual_split) != 3 or min(visual_split) < 0 or sum(visual_split) <= 0:
            raise ValueError(f"visual_split={visual_split}: expected three shares ([MASK], random, unchanged) >= 0")
        if future_prob > 0 and not 1 <= future_clips < max_visual_words:
            raise ValueError(f"future_clips={future_clips}: expected 1 .. max_visual_words - 1 ({max_visual_words - 1})")
        if action_mask_prob > 0 and not action_words:
            raise ValueError("action_mask_prob > 0 needs the label words (action_words: the verbs and nouns)")
        self.visual_split, self.aligned_targets_only = tuple(visual_split), aligned_targets_only
        self.action_mask_prob, self.future_prob, self.future_clips = action_mask_prob, future_prob, future_clips
        self.action_ids = np.asarray([tokenizer.token_id(w) for w in action_words or []], np.int64)
        self.text_pool = np.setdiff1d(np.arange(self.text_vocab_size), list(tokenizer.special_ids))
        visual_size = 1 if features else vocab.size
        self.special = np.zeros(self.text_vocab_size + visual_size, bool)  # id -> never masked
        self.special[list(tokenizer.special_ids)] = True
        self.visual_range = (self.text_vocab_size, self.text_vocab_size + visual_size)

    def visual_ids(self, features: np.ndarray) -> np.ndarray:
        """Token ids of the clips: their visual words, or (CBT, no vocabulary) one placeholder id."""
        if self.features:
            return np.full(len(features), self.text_vocab_size, np.int64)
        return self.vocab.words(features) + self.text_vocab_size

    def example(self, text_ids, clips, align: int, source: tuple | None = None) -> dict:
        """An unmasked sequence from text ids and the clip indices `clips` of `source` = (visual ids,
        features) of a video; `collate` masks whole batches at once. With `features`, the clips' feature
        rows travel along (CBT: continuous video tokens)."""
        text_ids = text_ids[: self.max_text]
        visual = source[0][clips] if len(clips) else []
        ids, seg = build_sequence(text_ids, visual, self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
        ex = {"input_ids": np.asarray(ids, np.int64), "segment_ids": np.asarray(seg, np.int64), "align_label": align}
        if self.features and len(clips):
            ex["visual_features"], ex["visual_offset"] = source[1][clips], 2 + len(text_ids)
        return ex

    def collate(self, examples: list[dict], rng: np.random.Generator) -> dict:
        """Pad a list of sequences into a batch and mask it (`labels` hold the targets). Forecasting
        sequences (`future` > 0) are masked at their last clips only."""
        batch = collate(examples, self.tok.pad_id)
        original = batch["input_ids"].numpy()
        future = np.asarray([e.get("future", 0) for e in examples])
        maskable = ~self.special[original] & (future == 0)[:, None]
        ids, labels, swapped = corrupt(original, maskable, rng, self.mask_prob, self.tok.mask_id, self.text_pool,
                                       self.visual_range, self.visual_split)
        if self.action_mask_prob > 0:
            rows = rng.random(len(ids)) < self.action_mask_prob
            force_mask(ids, labels, original, action_positions(original, batch["segment_ids"].numpy(),
                                                               self.action_ids, rows), self.tok.mask_id)
        if future.any():
            ends = batch["attention_mask"].numpy().sum(1) - 1  # each row's [SEP]
            cols = np.arange(ids.shape[1])[None]
            force_mask(ids, labels, original, (cols < ends[:, None]) & (cols >= (ends - future)[:, None]),
                       self.tok.mask_id)
        if self.aligned_targets_only:
            labels[batch["align_label"].numpy() == 0] = IGNORE
        batch["input_ids"], batch["labels"] = torch.from_numpy(ids), torch.from_numpy(labels)
        if "visual_features" in batch:  # CBT: the targets keep each clip's own features
            feats = batch["visual_targets"] = batch["visual_features"]
            clips = (original >= self.visual_range[0]) & batch["attention_mask"].numpy()
            batch["visual_features"] = torch.from_numpy(swap_clip_features(feats.numpy(), swapped, clips, rng))
        return batch

    def _groups(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Consecutive runs of 1..max_sentences neighbouring sentences covering all n: [(first, end)]."""
        sizes = rng.integers(1, self.max_sentences + 1, size=n)
        bounds = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), n)
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def future_example(self, first: int, end: int, source: tuple) -> dict:
        """Forecasting: `[CLS] [>]` the clips before clip `first` (the sentence's first), then the sentence's
        first `future_clips` clips (of `first`..`end`), which `collate` masks; nothing after them."""
        target = np.arange(first, min(end, first + self.future_clips))
        context = np.arange(max(0, first - (self.max_visual - len(target))), first)
        ex = self.example([], np.concatenate([context, target]), IGNORE, source)
        ex["future"] = len(target)
        return ex

    def video_examples(self, video: dict, rng: np.random.Generator, others: deque):
        """Sequences from one video: `video` has `features` (T, D) and `json` with `sentences`, `clips`.

        Each group of neighbouring sentences is one sequence: its text, and the visual words of the clips
        whose middle lies in its time span, taking every r-th clip (r drawn from 1..max_subsample)."""
        sents, clips = video["json"]["sentences"], video["json"]["clips"]
        source = (self.visual_ids(video["features"]), video["features"])
        mids = np.asarray(clips, np.float64).reshape(-1, 2).mean(1)
        texts = self.tok.encode_batch([s["text"] for s in sents])
        groups = self._groups(len(sents), rng)
        lo = np.searchsorted(mids, [sents[i]["start"] for i, _ in groups], "left")
        hi = np.searchsorted(mids, [sents[j - 1]["end"] for _, j in groups], "left")
        rates = rng.integers(1, self.max_subsample + 1, size=len(groups))
        modes = rng.choice(3, size=len(groups), p=self.mix)  # drawn per video: one call, not one per sequence
        negative = rng.random(len(groups)) < self.negative_prob
        hard = rng.random(len(groups)) < self.hard_negatives
        future = rng.random(len(groups)) < self.future_prob if self.future_prob else np.zeros(len(groups), bool)
        n_clips = len(mids)
        for g, ((i, j), a, b, rate, mode, neg) in enumerate(zip(groups, lo, hi, rates, modes, negative)):
            text = texts[i] if j == i + 1 else [t for k in range(i, j) for t in texts[k]]
            span = np.arange(a, b)[::rate][: self.max_visual]  # clip indices
            if future[g] and 0 < a < b:
                yield self.future_example(a, b, source)
            elif mode == 1 or (mode == 0 and len(span) == 0):
                yield self.example(text, [], IGNORE)
            elif mode == 2:
                start = int(rng.integers(0, max(1, n_clips - (self.max_visual - 1) * rate)))
                yield self.example([], np.arange(start, n_clips)[::rate][: self.max_visual], IGNORE, source)
            elif neg and hard[g] and (elsewhere := [k for k in range(len(groups)) if abs(k - g) > 1 and hi[k] > lo[k]]):
                k = elsewhere[int(rng.integers(len(elsewhere)))]  # another sentence of this video, not a neighbour
                yield self.example(text, np.arange(lo[k], hi[k])[::rate][: max(1, len(span))], 0, source)
            elif others and neg:
                other = others[int(rng.integers(len(others)))]
                clips_other = np.arange(len(other[0]))[::rate]
                start = int(rng.integers(0, max(1, len(clips_other) - len(span) + 1)))
                yield self.example(text, clips_other[start:start + len(span)], 0, other)
            else:
                yield self.example(text, span, 1, source)
        others.append(source)

    def __call__(self, videos, rng: np.random.Generator):
        """An iterator of videos -> an iterator of sequences, drawing from `rng`."""
        others: deque = deque(maxlen=self.negatives_buffer)
        for video in videos:
            key = video.get("__key__", "")
            for example in self.video_examples(video, rng, others):
                example["key"] = key
                yield example


def collate(examples: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of sequences to the longest; `attention_mask` is True on real tokens; `labels` (targets)
    are IGNORE where an example has none."""
    n, length = len(examples), max(len(e["input_ids"]) for e in examples)
    arrays = {"input_ids": np.full((n, length), pad_id, np.int64), "segment_ids": np.zeros((n, length), np.int64),
              "attention_mask": np.zeros((n, length), bool), "labels": np.full((n, length), IGNORE, np.int64)}
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        arrays["input_ids"][i, :k] = e["input_ids"]
        arrays["segment_ids"][i, :k] = e["segment_ids"]
        arrays["attention_mask"][i, :k] = True
        if "labels" in e:
            arrays["labels"][i, :k] = e["labels"]
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    batch["align_label"] = torch.as_tensor([e["align_label"] for e in examples], dtype=torch.long)
    batch["keys"] = [e.get("key", "") for e in examples]  # the source video of each sequence's text
    with_features = [e for e in examples if "visual_features" in e]
    if with_features:  # CBT: (B, T, D) clip features at the visual positions, zeros elsewhere
        feats = np.zeros((n, length, with_features[0]["visual_features"].shape[1]), np.float32)
        for i, e in enumerate(examples):
            if "visual_features" in e:
                feats[i, e["visual_offset"]:e["visual_offset"] + len(e["visual_features"])] = e["visual_features"]
        batch["visual_features"] = torch.from_numpy(feats)
    return batch
