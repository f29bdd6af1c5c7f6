"""Text-to-video: from a step's narration alone, predict the visual words of its clips (paper, Fig. 6).

For each held-out step with narration, the model sees `[CLS] text [>] [MASK] x n [SEP]` (n = the step's
clips) and predicts every masked visual word over the visual vocabulary. Reported: top-1/top-5 accuracy
against the step's real visual words, next to chance and to always guessing the most frequent word.
`examples()` gives, for a few steps, the predicted words and the real clips nearest to them (video, time,
distance of the clip's features to the predicted word's centroid): what the paper shows as images.
Visual words only: a CBT model has no visual vocabulary to predict.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..sequences import IGNORE, build_sequence, collate
from .steps import clip_mids, clip_token_ids, step_clips, step_text


class TextToVideoData:
    task = "text_to_video"

    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False):
        if features:
            raise ValueError("text_to_video predicts visual words: it needs a visual-word model, not CBT "
                             "(data.video_input=features)")
        self.tok, self.vocab, self.truth, self.max_visual = tokenizer, vocab, truth, max_visual_words

    def examples(self, video: dict):
        meta, feats = video["json"], video["features"]
        words, mids = clip_token_ids(self.tok, self.vocab, feats, False), clip_mids(meta)
        for step in self.truth["videos"].get(meta["video_id"], {}).get("steps", []):
            clips, text = step_clips(mids, step, self.max_visual), step_text(meta, step)
            if step["verb"] is None or not len(clips) or not text:
                continue
            ids, seg = build_sequence(self.tok.encode(text)[:32], [self.tok.mask_id] * len(clips), self.tok.cls_id,
                                      self.tok.sep_id, self.tok.bridge_id)
            labels = np.full(len(ids), IGNORE)
            labels[-1 - len(clips):-1] = words[clips]
            yield {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "labels": labels, "align_label": IGNORE,
                   "text": text, "video": (meta["video_id"], feats, meta["clips"])}

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        batch = collate(examples, self.tok.pad_id)
        batch["task"], batch["text"] = self.task, [e["text"] for e in examples]
        batch["videos"] = [e["video"] for e in examples]
        return batch

    def metrics(self) -> "TextToVideoMetrics":
        return TextToVideoMetrics(self.tok.vocab_size, self.vocab)


class TextToVideoMetrics(nn.Module):
    def __init__(self, text_vocab_size: int, vocab, shown: int = 8):
        super().__init__()
        self.text, self.vocab, self.shown = text_vocab_size, vocab, shown
        self.acc = nn.ModuleDict({f"top{k}": MulticlassAccuracy(vocab.size, top_k=min(k, vocab.size), average="micro")
                                  for k in (1, 5)})
        self.targets: list[torch.Tensor] = []
        self.gallery: dict = {}  # video id -> (features, clip times) of the test clips, for `examples()`
        self.queries: list[tuple[str, list[int]]] = []

    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        sel = batch["labels"] != IGNORE
        logits = model.token_logits(hidden[sel], slice(self.text, self.text + self.vocab.size))
        y = batch["labels"][sel] - self.text
        for k in (1, 5):
            self.acc[f"top{k}"].update(logits, y)
        self.targets.append(y.cpu())
        counts = sel.sum(1).tolist()
        for text, pred, (video, feats, clips) in zip(batch["text"], logits.argmax(-1).cpu().split(counts), batch["videos"]):
            if len(self.queries) < self.shown:
                self.queries.append((text, pred.tolist()))
            self.gallery[video] = (feats, clips)

    def compute(self, model=None) -> dict[str, float]:
        y = torch.cat(self.targets)
        out = {name: float(m.compute()) for name, m in self.acc.items()}
        out["most_frequent_top1"] = float((y == y.mode().values).float().mean())
        out.update({"chance_top1": 1 / self.vocab.size, "chance_top5": min(5, self.vocab.size) / self.vocab.size})
        for m in self.acc.values():
            m.reset()
        self.targets = []
        return out

    def examples(self) -> list[dict]:
        """For a few narrations: the predicted visual words and, per word, the nearest real test clip."""
        feats = np.concatenate([f for f, _ in self.gallery.values()]).astype(np.float32)
        ids = [(video, clip) for video, (_, clips) in self.gallery.items() for clip in clips]
        leaves = self.vocab.centroids[-1]
        rows = []
        for text, words in self.queries:
            d = ((feats[None] - leaves[words][:, None]) ** 2).sum(-1)  # (words, clips)
            near = d.argmin(1)
            rows.append({"text": text, "predicted_words": words,
                         "nearest_clips": [{"video": ids[j][0], "clip": ids[j][1], "distance": round(float(d[i, j]), 3)}
                                           for i, j in enumerate(near)]})
        return rows
