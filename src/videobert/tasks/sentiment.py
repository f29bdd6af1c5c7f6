"""Video sentiment analysis: a classification head on `[CLS]`, fine-tuned with the pretrained encoder.

A whole video does not fit in one sequence (the encoder was pretrained on, and positions exist for, one
sentence with its clips), so a video is encoded as its segments, each as in pretraining, and the
`[CLS]` states of its segments are averaged before the head:

- `inputs: video_text`: one `[CLS] sentence [>] visual words of its span [SEP]` per caption sentence;
- `inputs: video`: one `[CLS] [>] visual words [SEP]` per window of `max_visual_words` consecutive clips.

At most `max_segments` segments per video (evenly spaced). The label is the `sentiment` field of the
video's `json` (the built-in corpus: positive when the dish turns out well, negative when it burns).
Metrics: accuracy and macro-F1 (torchmetrics), next to the majority-class baseline of the same data.
`examples()`: for the first videos, 4 evenly spaced clips, the true and the predicted label, its probability.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from ..sequences import IGNORE, build_sequence, collate
from ..stats import bootstrap_confusion, macro_f1
from ..thumbnails import clips_of, spread
from .steps import clip_mids, clip_token_ids, step_clips, video_key

INPUTS = ("video_text", "video")


class SentimentData:
    """Decoded videos -> one example per video: its segments as sequences, and its label."""

    task, finetune, unit = "sentiment", True, "samples"  # unit: one example per video (index "samples")

    def __init__(self, tokenizer, vocab, max_visual_words: int = 16, features: bool = False,
                 max_text_tokens: int = 32, inputs: str = "video_text",
                 classes: tuple[str, ...] = ("negative", "positive"), max_segments: int = 16,
                 label_field: str = "sentiment"):
        if inputs not in INPUTS:
            raise ValueError(f"sentiment inputs={inputs!r}: expected one of {INPUTS}")
        self.tok, self.vocab, self.features = tokenizer, vocab, features
        self.max_visual, self.max_text, self.inputs = max_visual_words, max_text_tokens, inputs
        self.classes, self.max_segments, self.field = list(classes), max_segments, label_field
        self.train_counts: list[int] | None = None  # videos per label in the training shards (the DataModule's)

    def label(self, video: dict) -> int:
        meta, where = video["json"], f"{video.get('__url__', '?')}:{video.get('__key__', '?')}"
        if self.field not in meta:
            raise KeyError(f"{where}: no '{self.field}' label in the sample's json (expected one of {self.classes}; "
                           "`videobert data shards --labels FILE` adds per-video labels)")
        if meta[self.field] not in self.classes:
            raise ValueError(f"{where}: {self.field}={meta[self.field]!r}, expected one of {self.classes}")
        return self.classes.index(meta[self.field])

    def segments(self, video: dict) -> list[tuple[list[int], np.ndarray]]:
        """(text ids, clip indices) of each segment of the video."""
        n = len(video["features"])
        if self.inputs == "video":
            return [([], np.arange(a, min(n, a + self.max_visual))) for a in range(0, n, self.max_visual)]
        sents, mids = video["json"].get("sentences") or [], clip_mids(video["json"])
        texts = self.tok.encode_batch([s["text"] for s in sents]) if sents else []
        return [(t[: self.max_text], step_clips(mids, s, self.max_visual)) for s, t in zip(sents, texts)]

    def example(self, video: dict) -> dict:
        label = self.label(video)
        words = clip_token_ids(self.tok, self.vocab, video["features"], self.features)
        segs = [s for s in self.segments(video) if len(s[0]) or len(s[1])]
        if not segs:
            raise ValueError(f"{video.get('__url__', '?')}:{video['__key__']}: no sentence or clip to classify")
        keep = np.unique(np.linspace(0, len(segs) - 1, min(len(segs), self.max_segments)).round().astype(int))
        seqs = []
        for text, clips in (segs[i] for i in keep):
            ids, seg = build_sequence(text, words[clips], self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
            seq = {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "align_label": IGNORE}
            if self.features and len(clips):
                seq["visual_features"], seq["visual_offset"] = video["features"][clips], len(ids) - 1 - len(clips)
            seqs.append(seq)
        key = video_key(video)
        shown = spread(clips_of(key, video["json"], range(len(video["features"]))), 4)
        return {"sequences": seqs, "label": label, "key": key, "clips": shown}

    def __call__(self, videos, rng: np.random.Generator | None = None):
        for video in videos:
            yield self.example(video)

    def collate(self, examples: list[dict], rng: np.random.Generator | None = None) -> dict:
        """All segments of the batch's videos as one batch of sequences; `video_index` maps each to its video."""
        batch = collate([s for e in examples for s in e["sequences"]], self.tok.pad_id)
        batch["video_index"] = torch.tensor([i for i, e in enumerate(examples) for _ in e["sequences"]])
        batch["label"] = torch.tensor([e["label"] for e in examples])
        batch["keys"], batch["clips"] = [e["key"] for e in examples], [e["clips"] for e in examples]
        return batch

    def head(self, encoder: nn.Module, dropout: float = 0.1) -> "SentimentClassifier":
        return SentimentClassifier(encoder, len(self.classes), dropout)

    def metrics(self) -> "SentimentMetrics":
        return SentimentMetrics(self.classes, self.train_counts)

    def count_labels(self, metas) -> list[int]:
        """Videos per label among sample json dicts (the training shards', for the majority baseline)."""
        counts = [0] * len(self.classes)
        for meta in metas:
            counts[self.label({"json": meta, "__key__": meta.get("video_id", "?")})] += 1
        return counts


class SentimentClassifier(nn.Module):
    """The encoder, the mean `[CLS]` state of each video's segments, dropout and a linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.cfg.hidden_size, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        """-> (videos, classes) logits."""
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"],
                         batch.get("visual_features"))[:, 0]  # (sequences, C): [CLS]
        idx, n = batch["video_index"], len(batch["label"])
        pooled = h.new_zeros(n, h.shape[-1]).index_add_(0, idx, h)
        pooled = pooled / torch.bincount(idx, minlength=n).clamp_min(1)[:, None].to(h.dtype)
        return self.classifier(self.dropout(pooled))

    def loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self(batch), batch["label"])


class SentimentMetrics(nn.Module):
    """Accuracy, macro-F1 and the majority-class baseline: what always answering the label most frequent in
    the training videos (`train_counts`; never the test labels) scores here; without training counts there
    is no baseline. All synced across ranks by torchmetrics."""

    RATES = {"acc": "videos", "majority_acc": "videos"}

    def __init__(self, classes: list[str], train_counts: list[int] | None = None, shown: int = 8):
        super().__init__()
        n, self.classes, self.shown, self.rows = len(classes), classes, shown, []
        self.majority = None if not train_counts else int(np.argmax(train_counts))
        self.acc = MulticlassAccuracy(n, average="micro")
        self.f1 = MulticlassF1Score(n, average="macro")
        self.confusion = MulticlassConfusionMatrix(n)  # (its row sums: how often each label occurs)

    @torch.no_grad()
    def update(self, model: SentimentClassifier, batch: dict) -> None:
        logits = model(batch)
        self.acc.update(logits, batch["label"])
        self.f1.update(logits, batch["label"])
        self.confusion.update(logits.argmax(-1), batch["label"])
        if len(self.rows) < self.shown and "clips" in batch:
            self._keep_examples(batch, logits.float().softmax(-1))

    def _keep_examples(self, batch: dict, probs: torch.Tensor) -> None:
        confidence, predicted = probs.max(-1)
        for n, (key, clips) in enumerate(zip(batch["keys"], batch["clips"])):
            if len(self.rows) == self.shown:
                break
            self.rows.append({"clips": clips, "video": key, "true": self.classes[int(batch["label"][n])],
                              "predicted": self.classes[int(predicted[n])], "confidence": float(confidence[n])})

    def examples(self) -> list[dict]:
        """The first videos of this rank: some of their clips, true and predicted label, its probability."""
        return self.rows

    def compute(self, model=None) -> dict[str, float]:
        confusion = self.confusion.compute()
        support = confusion.sum(1).double()
        out = {"acc": float(self.acc.compute()), "macro_f1": float(self.f1.compute()), "videos": float(support.sum())}
        # (one item per video: resampling the videos is resampling the confusion matrix's cells)
        if out["videos"]:
            out["macro_f1_ci_low"], out["macro_f1_ci_high"] = bootstrap_confusion(confusion.cpu().numpy(), macro_f1)
        if self.majority is not None:
            share = float(support[self.majority] / support.sum().clamp_min(1))  # (how often it is right here)
            # always that label: F1 2p/(1+p) on its class (precision p, recall 1; 0 if p = 0), 0 on the others
            out.update({"majority_acc": share, "majority_macro_f1": 2 * share / (1 + share) / len(support)})
        for m in (self.acc, self.f1, self.confusion):
            m.reset()
        return out
