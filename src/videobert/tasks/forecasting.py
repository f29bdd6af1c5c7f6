"""Forecasting: given the visual words of a video's first clips, predict the next ones (paper, Sec. 4.4).

Windows of `context` clips slide over each held-out video (stride `context // 2`); the model sees
`[CLS] [>] v_1 ... v_context [MASK] [MASK] [MASK] [SEP]` and predicts the three masked visual words
(+1, +2, +3 clips ahead) over the visual vocabulary. Reported: top-1/top-5 accuracy per horizon, next to
chance and to a "the last word repeats" baseline (the strongest trivial guess for slow scenes).
`examples()`: for the first windows, the last context clips, the true next clips, and for each predicted
word the clip of the same video nearest to its centroid.
Visual words only: a CBT model has no visual vocabulary to predict.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of, spread
from .steps import nearest_clips, video_key

HORIZONS = (1, 2, 3)


class ForecastingData:
    def __init__(self, tokenizer, vocab, truth: dict | None = None, max_visual_words: int = 16, features: bool = False,
                 context: int = 8):
        if features:
            raise ValueError("forecasting predicts visual words: it needs a visual-word model, not CBT "
                             "(data.video_input=features)")
        self.tok, self.vocab, self.context = tokenizer, vocab, min(context, max_visual_words - len(HORIZONS))

    def examples(self, video: dict):
        words = self.vocab.words(video["features"]) + self.tok.vocab_size
        n, key = self.context + len(HORIZONS), video_key(video)
        for start in range(0, len(words) - n + 1, max(1, self.context // 2)):
            window = words[start:start + n]
            seen = list(window[: self.context]) + [self.tok.mask_id] * len(HORIZONS)
            ids, seg = build_sequence([], seen, self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
            labels = np.full(len(ids), IGNORE)
            labels[-1 - len(HORIZONS):-1] = window[self.context:]
            yield {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "labels": labels,
                   "align_label": IGNORE, "last": window[self.context - 1],
                   "window": clips_of(key, video["json"], range(start, start + n)),
                   "video": (key, video["features"], video["json"])}

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        batch = collate(examples, self.tok.pad_id)
        batch["last"] = torch.as_tensor(np.array([e["last"] for e in examples]))
        batch["window"], batch["video"] = [e["window"] for e in examples], [e["video"] for e in examples]
        return batch

    def metrics(self) -> "ForecastingMetrics":
        return ForecastingMetrics(self.tok.vocab_size, self.vocab.size, self.vocab.centroids[-1])


class ForecastingMetrics(nn.Module):
    RATES = {f"t{h}_{name}": "windows" for h in HORIZONS for name in ("top1", "top5", "repeat_last")}
    def __init__(self, text_vocab_size: int, visual_vocab_size: int, centroids: np.ndarray | None = None,
                 shown: int = 8):
        """`centroids`: (visual vocabulary size, D) leaf centroids, to show a clip for each predicted word."""
        super().__init__()
        self.text, self.size, self.centroids, self.shown = text_vocab_size, visual_vocab_size, centroids, shown
        self.rows: list[dict] = []
        self.acc = nn.ModuleDict({f"t{h}_top{k}": MulticlassAccuracy(visual_vocab_size, top_k=min(k, visual_vocab_size),
                                                                      average="micro")
                                  for h in HORIZONS for k in (1, 5)})
        self.repeat = nn.ModuleDict({f"t{h}": MulticlassAccuracy(visual_vocab_size, average="micro") for h in HORIZONS})
        self.windows = SumMetric()  # test windows (summed over ranks): the n of every accuracy

    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        sel = batch["labels"] != IGNORE  # (B, T): three targets per row, in order
        h = hidden[sel].view(len(hidden), len(HORIZONS), -1)
        y = batch["labels"][sel].view(len(hidden), len(HORIZONS)) - self.text
        logits = model.token_logits(h.flatten(0, 1), slice(self.text, self.text + self.size)).view(*y.shape, -1)
        for i, hz in enumerate(HORIZONS):
            for k in (1, 5):
                self.acc[f"t{hz}_top{k}"].update(logits[:, i], y[:, i])
            self.repeat[f"t{hz}"].update(batch["last"] - self.text, y[:, i])
        self.windows.update(float(len(y)))
        if len(self.rows) < self.shown and "window" in batch:
            self._keep_examples(batch, logits.argmax(-1).cpu().numpy(), y.cpu().numpy())

    def _keep_examples(self, batch: dict, pred: np.ndarray, true: np.ndarray) -> None:
        c = -len(HORIZONS)
        for window, (key, feats, meta), p, t in zip(batch["window"], batch["video"], pred, true):
            if len(self.rows) == self.shown:
                break
            row = {"context": spread(window[:c], 4), "true_next": window[c:], "true_words": t.tolist(),
                   "predicted_words": p.tolist()}
            if self.centroids is not None:  # the clip of this video nearest to each predicted word
                row["predicted_next"] = nearest_clips(feats, self.centroids[p], clips_of(key, meta, range(len(feats))))[0]
            self.rows.append(row)

    def examples(self) -> list[dict]:
        """The first windows of this rank: context clips, true next clips, predicted words shown as clips."""
        return self.rows

    def compute(self, model=None) -> dict[str, float]:
        out = {name: float(m.compute()) for name, m in self.acc.items()}
        out.update({f"t{hz}_repeat_last": float(self.repeat[f"t{hz}"].compute()) for hz in HORIZONS})
        out.update({"chance_top1": 1 / self.size, "chance_top5": min(5, self.size) / self.size,
                    "windows": float(self.windows.compute())})
        for m in (*self.acc.values(), *self.repeat.values(), self.windows):
            m.reset()
        return out
