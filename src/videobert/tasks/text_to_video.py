"""Text-to-video: from a step's narration alone, predict the visual words of its clips (paper, Fig. 6).

For each held-out step with narration, the model sees `[CLS] text [>] [MASK] x n [SEP]` (n = the step's
clips) and predicts every masked visual word over the visual vocabulary. Reported: top-1/top-5 accuracy
against the step's real visual words, next to chance and to always guessing the word most frequent in
training; and, since a word's identity also encodes a video's look, `depicts_top1/5`: a predicted word
counts when it depicts the step, i.e. the (verb, noun) most of the training clips of that word show
(`word_labels`, from the training videos and their ground truth: `learn_baselines`) is the step's; beside it the most
frequent training word's and exact chance (the share of the vocabulary's words that depict the step).
`examples()` gives, for a few steps, the step's own clips, the predicted words and the real test clips
nearest to them (distance of the clip's features to the predicted word's centroid): what the paper
shows as images. Under DDP the targets are gathered for the most-frequent baseline (accuracies are
torchmetrics states, summed over ranks); the example gallery is the clips of the rank that publishes.
Visual words only: a CBT model has no visual vocabulary to predict.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of, spread
from .steps import clip_mids, clip_token_ids, depicted_pairs, gather_objects, nearest_clips, pair_ids, step_clips, step_text, video_key


class TextToVideoData:
    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False):
        if features:
            raise ValueError("text_to_video predicts visual words: it needs a visual-word model, not CBT "
                             "(data.video_input=features)")
        self.tok, self.vocab, self.truth, self.max_visual = tokenizer, vocab, truth, max_visual_words
        self.nouns = list(truth["nouns"])
        self.pair_id = pair_ids(list(truth["verbs"]), self.nouns)
        self.word_labels: np.ndarray | None = None  # (words,) the pair id each word depicts, -1: none (set by the
        # DataModule from the training videos: `learn_baselines`)

    def examples(self, video: dict):
        meta, feats = video["json"], video["features"]
        words, mids = clip_token_ids(self.tok, self.vocab, feats, False), clip_mids(meta)
        key = video_key(video)
        for step in self.truth["videos"].get(meta["video_id"], {}).get("steps", []):
            clips, text = step_clips(mids, step, self.max_visual), step_text(meta, step)
            if step["verb"] is None or not len(clips) or not text:
                continue
            ids, seg = build_sequence(self.tok.encode(text)[:32], [self.tok.mask_id] * len(clips), self.tok.cls_id,
                                      self.tok.sep_id, self.tok.bridge_id)
            labels = np.full(len(ids), IGNORE)
            labels[-1 - len(clips):-1] = words[clips]
            yield {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "labels": labels, "align_label": IGNORE,
                   "text": text, "video": (key, feats, meta), "clips": clips_of(key, meta, clips),
                   "pair": self.pair_id[(step["verb"], step["noun"])]}

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        batch = collate(examples, self.tok.pad_id)
        batch["text"] = [e["text"] for e in examples]
        batch["videos"], batch["clips"] = [e["video"] for e in examples], [e["clips"] for e in examples]
        batch["pair"] = torch.tensor([e["pair"] for e in examples])
        return batch

    def metrics(self) -> "TextToVideoMetrics":
        return TextToVideoMetrics(self.tok.vocab_size, self.vocab, self.word_labels)

    def learn_baselines(self, videos, truth: dict) -> None:
        """What each visual word depicts, from the training videos (decoded) and their ground truth."""
        self.word_labels = depicted_pairs(self.vocab, self.pair_id, videos, truth)


class TextToVideoMetrics(nn.Module):
    def __init__(self, text_vocab_size: int, vocab, word_labels: np.ndarray | None = None, shown: int = 8):
        super().__init__()
        self.text, self.vocab, self.shown = text_vocab_size, vocab, shown
        self.word_labels = None if word_labels is None else torch.as_tensor(word_labels)
        self.depicts: list[torch.Tensor] = []  # per masked clip: (its step's pair, top-5 predicted words)
        self.acc = nn.ModuleDict({f"top{k}": MulticlassAccuracy(vocab.size, top_k=min(k, vocab.size), average="micro")
                                  for k in (1, 5)})
        self.targets: list[torch.Tensor] = []
        self.gallery: dict = {}  # video key -> (features, json) of the test videos, for `examples()`
        self.queries: list[tuple[str, list, list[int]]] = []  # (narration, its clips, predicted words)

    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        sel = batch["labels"] != IGNORE
        logits = model.token_logits(hidden[sel], slice(self.text, self.text + self.vocab.size))
        y = batch["labels"][sel] - self.text
        for k in (1, 5):
            self.acc[f"top{k}"].update(logits, y)
        self.targets.append(y.cpu())
        counts = sel.sum(1).tolist()
        if self.word_labels is not None:
            pairs = batch["pair"].to(y.device).repeat_interleave(sel.sum(1))
            top5 = logits.topk(min(5, self.vocab.size), -1).indices
            self.depicts.append(torch.cat([pairs[:, None], top5], 1).cpu())
        preds = logits.argmax(-1).cpu().split(counts)
        for text, pred, (key, feats, meta), clips in zip(batch["text"], preds, batch["videos"], batch["clips"]):
            if len(self.queries) < self.shown:
                self.queries.append((text, clips, pred.tolist()))
            self.gallery[key] = (feats, meta)

    RATES = {name: "steps" for name in ("top1", "top5", "most_frequent_top1", "depicts_top1", "depicts_top5",
                                        "most_frequent_depicts_top1")}

    def compute(self, model=None) -> dict[str, float]:
        y = torch.cat([t for part in gather_objects(self.targets) for t in part] or [torch.zeros(0, dtype=torch.long)])
        if not len(y):
            raise RuntimeError("text_to_video got no steps with narration: check test shards and ground truth")
        out = {name: float(m.compute()) for name, m in self.acc.items()}
        if self.vocab.counts is not None:  # (the word most frequent in training, never the test targets' mode)
            out["most_frequent_top1"] = float((y == int(self.vocab.counts.argmax())).float().mean())
        out["steps"] = float(len(y))
        if self.word_labels is not None:
            out.update(self._depicts(torch.cat([t for part in gather_objects(self.depicts) for t in part])))
        self.depicts = []
        out.update({"chance_top1": 1 / self.vocab.size, "chance_top5": min(5, self.vocab.size) / self.vocab.size})
        for m in self.acc.values():
            m.reset()
        self.targets = []
        return out

    def _depicts(self, rows: torch.Tensor) -> dict[str, float]:
        """Share of masked clips whose predicted word depicts the step, top-1/top-5; the most frequent training
        word's share; exact chance (a uniformly random word)."""
        labels, pair, top5 = self.word_labels, rows[:, 0], rows[:, 1:]
        hit = labels[top5] == pair[:, None]
        share = (labels[None] == pair[:, None]).float().mean(1)  # (clips,) the vocabulary's words that depict it
        out = {"depicts_top1": float(hit[:, 0].float().mean()), "depicts_top5": float(hit.any(1).float().mean()),
               "depicts_chance_top1": float(share.mean())}
        if self.vocab.counts is not None:
            out["most_frequent_depicts_top1"] = float((labels[int(self.vocab.counts.argmax())] == pair).float().mean())
        return out

    def examples(self) -> list[dict]:
        """For a few narrations: the step's clips, the predicted visual words and, per word (up to 8), the
        nearest real test clip of this rank."""
        if not self.gallery:
            return []
        feats = np.concatenate([f for f, _ in self.gallery.values()])
        refs = [c for key, (f, meta) in self.gallery.items() for c in clips_of(key, meta, range(len(f)))]
        rows = []
        for text, clips, words in self.queries:
            near, dist = nearest_clips(feats, self.vocab.centroids[-1][words[:8]], refs)
            rows.append({"text": text, "true_clips": spread(clips, 8), "predicted_words": words,
                         "nearest_clips": near, "distances": dist})
        return rows
