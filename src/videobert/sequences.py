"""Videos -> VideoBERT training sequences, and the masking that makes them a pretraining task.

A sequence is `[CLS] text [>] visual words [SEP]` (segment 0 for text, 1 for video); text-only is
`[CLS] text [SEP]` and video-only `[CLS] [>] visual words [SEP]`. Visual word w has token id
`text_vocab_size + w`. Each caption sentence becomes one sequence whose visual words are the clips in
its time span; a paired sequence is, with `negative_prob`, given the visual words of another video
instead (alignment label 0). Masking follows BERT: `mask_prob` of the non-special tokens are targets;
of these 80% become [MASK], 10% a random token of the same modality, 10% stay.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

IGNORE = -100  # label of a position or sequence with no target


def build_sequence(text_ids, visual_ids, cls_id: int, sep_id: int, bridge_id: int):
    """(input_ids, segment_ids) for `[CLS] text [>] visual [SEP]`; either part may be empty."""
    ids, seg = [cls_id, *text_ids], [0] * (1 + len(text_ids))
    if len(visual_ids):
        ids += [bridge_id, *visual_ids]
        seg += [1] * (1 + len(visual_ids))
    return ids + [sep_id], seg + [seg[-1]]


def mask_tokens(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, mask_prob: float,
                mask_id: int, text_pool: np.ndarray, visual_vocab: tuple[int, int]):
    """BERT masking of `ids` at `maskable` positions -> (corrupted ids, labels with IGNORE elsewhere).

    A random replacement is drawn from the position's own modality: `text_pool` (the non-special
    WordPiece ids) or the visual-word id range `visual_vocab` = [first, end)."""
    ids, labels = ids.copy(), np.full(len(ids), IGNORE, np.int64)
    cand = np.flatnonzero(maskable)
    if len(cand) == 0 or mask_prob <= 0:
        return ids, labels
    chosen = rng.choice(cand, size=max(1, int(round(len(cand) * mask_prob))), replace=False)
    labels[chosen] = ids[chosen]
    roll = rng.random(len(chosen))
    ids[chosen[roll < 0.8]] = mask_id
    for pos in chosen[roll >= 0.9]:
        ids[pos] = rng.integers(*visual_vocab) if ids[pos] >= visual_vocab[0] else rng.choice(text_pool)
    return ids, labels


class SequenceBuilder:
    """Turns a stream of decoded videos into a stream of masked training sequences."""

    def __init__(self, tokenizer, vocab, max_text_tokens: int = 32, max_visual_words: int = 16,
                 mask_prob: float = 0.15, mix: tuple[float, float, float] = (0.6, 0.2, 0.2),
                 negative_prob: float = 0.5, negatives_buffer: int = 64, seed: int = 0):
        self.tok, self.vocab = tokenizer, vocab
        self.text_vocab_size = tokenizer.vocab_size
        self.max_text, self.max_visual, self.mask_prob = max_text_tokens, max_visual_words, mask_prob
        self.mix = np.asarray(mix, np.float64) / np.sum(mix)  # paired, text-only, video-only
        self.negative_prob, self.negatives_buffer, self.seed = negative_prob, negatives_buffer, seed
        self.text_pool = np.setdiff1d(np.arange(self.text_vocab_size), list(tokenizer.special_ids))
        self.visual_range = (self.text_vocab_size, self.text_vocab_size + vocab.size)

    def visual_ids(self, features: np.ndarray) -> np.ndarray:
        return self.vocab.words(features) + self.text_vocab_size

    def _span(self, words: np.ndarray, clips, start: float, end: float) -> np.ndarray:
        mids = np.array([(a + b) / 2 for a, b in clips])
        inside = np.flatnonzero((mids >= start) & (mids < end))
        return words[inside[: self.max_visual]]

    def example(self, text_ids, visual_ids, align: int, rng: np.random.Generator) -> dict:
        ids, seg = build_sequence(text_ids[: self.max_text], visual_ids[: self.max_visual],
                                  self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
        ids = np.asarray(ids, np.int64)
        maskable = ~np.isin(ids, list(self.tok.special_ids))
        ids, labels = mask_tokens(ids, maskable, rng, self.mask_prob, self.tok.mask_id,
                                  self.text_pool, self.visual_range)
        return {"input_ids": ids, "segment_ids": np.asarray(seg, np.int64), "labels": labels, "align_label": align}

    def video_examples(self, video: dict, rng: np.random.Generator, others: deque):
        """Sequences from one video: `video` has `features` (T, D) and `json` with `sentences`, `clips`."""
        meta = video["json"]
        words = self.visual_ids(video["features"])
        for sent in meta["sentences"]:
            text = self.tok.encode(sent["text"])
            span = self._span(words, meta["clips"], sent["start"], sent["end"])
            mode = rng.choice(3, p=self.mix)
            if mode == 1 or (mode == 0 and len(span) == 0):
                yield self.example(text, [], IGNORE, rng)
            elif mode == 2:
                start = int(rng.integers(0, max(1, len(words) - self.max_visual + 1)))
                yield self.example([], words[start:start + self.max_visual], IGNORE, rng)
            elif others and rng.random() < self.negative_prob:
                other = others[int(rng.integers(len(others)))]
                start = int(rng.integers(0, max(1, len(other) - len(span) + 1)))
                yield self.example(text, other[start:start + len(span)], 0, rng)
            else:
                yield self.example(text, span, 1, rng)
        others.append(words)

    def __call__(self, videos):
        """A webdataset `compose` stage: an iterator of videos -> an iterator of sequences."""
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0, torch.initial_seed() % 2**31])
        others: deque = deque(maxlen=self.negatives_buffer)
        for video in videos:
            yield from self.video_examples(video, rng, others)


def collate(examples: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of sequences to the longest; `attention_mask` is True on real tokens."""
    n, length = len(examples), max(len(e["input_ids"]) for e in examples)
    batch = {"input_ids": torch.full((n, length), pad_id, dtype=torch.long),
             "segment_ids": torch.zeros((n, length), dtype=torch.long),
             "attention_mask": torch.zeros((n, length), dtype=torch.bool),
             "labels": torch.full((n, length), IGNORE, dtype=torch.long)}
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        batch["input_ids"][i, :k] = torch.as_tensor(e["input_ids"])
        batch["segment_ids"][i, :k] = torch.as_tensor(e["segment_ids"])
        batch["attention_mask"][i, :k] = True
        batch["labels"][i, :k] = torch.as_tensor(e["labels"])
    batch["align_label"] = torch.as_tensor([e["align_label"] for e in examples], dtype=torch.long)
    return batch
