"""Forecasting: from the clips of a video so far, predict what comes next (paper, Sec. 4.4), step by step.

For every action step of a held-out video that follows another one, the model sees the visual words of
the clips before the step (at most `context`): `[CLS] [>] v_1 ... v_c [MASK] [MASK] [SEP]`, and predicts the
visual words of the step's first two clips over the visual vocabulary. Reported:
- `t1_top1/5`, `t2_top1/5`: those words, next to chance and "the last word repeats" (`t*_repeat_last`);
- `verb_top1`, `noun_top1`: the next step's verb and noun, read from the predicted words: a word stands for
  the (verb, noun) that most of its training clips show (`word_labels`, from the training videos and their
  ground truth), and the step's verb is the one with the most predicted probability over both clips.
  Beside them, baselines from the training videos only: `bigram_*` (the verb and the noun that most often
  follow the previous step's verb-noun pair in training; given the true previous pair, so it is the
  bigram of a perfect recogniser), `repeat_*` (the previous step's) and `majority_*` (the training steps'
  most frequent), and chance (one over the label vocabulary).
The bigram is beatable in principle on the built-in corpus: videos follow recipes that share steps, so the
last step alone leaves the next one open while the steps before it tell the dish (and its ingredients).
`examples()`: for the first steps, the context clips, the true next clips, and for each predicted word the
clip of the same video nearest to its centroid. Visual words only: a CBT model has no visual vocabulary.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of, spread
from .steps import clip_mids, depicted_pairs, nearest_clips, pair_ids, step_clips, steps_of, video_key

HORIZONS = (1, 2)  # the next step's first two clips (every step lasts at least two)
BASELINES = ("bigram", "repeat", "majority")
STEP_FIGURES = [f"{who}{side}" for who in ("", *(f"{b}_" for b in BASELINES)) for side in ("verb", "noun")]  # model, baselines


class ForecastingData:
    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False,
                 context: int | None = None):
        if features:
            raise ValueError("forecasting predicts visual words: it needs a visual-word model, not CBT "
                             "(data.video_input=features)")
        self.tok, self.vocab, self.truth = tokenizer, vocab, truth
        self.context = min(context or max_visual_words, max_visual_words) - len(HORIZONS)
        self.verbs, self.nouns = list(truth["verbs"]), list(truth["nouns"])
        self.pair_id = pair_ids(self.verbs, self.nouns)
        self.word_labels: np.ndarray | None = None  # (words,) pair id each word depicts (-1: none); `learn_baselines`
        self.bigram: dict | None = None  # previous pair -> (verb id, noun id) most often next, in training
        self.majority: tuple[int, int] = (0, 0)  # the verb and noun most often next to any step, in training

    def learn_baselines(self, videos, truth: dict) -> None:
        """From the training videos (decoded) and their ground truth: what each visual word depicts, and which
        step follows which (the bigram's answer after each pair, and overall)."""
        self.word_labels = depicted_pairs(self.vocab, self.pair_id, videos, truth)
        follow, overall = defaultdict(Counter), Counter()
        for info in truth["videos"].values():
            pairs = [(s["verb"], s["noun"]) for s in info["steps"] if s["verb"] is not None]
            for prev, nxt in zip(pairs, pairs[1:]):
                follow[prev][nxt] += 1
                overall[nxt] += 1
        self.bigram = {prev: self._most_frequent(after) for prev, after in follow.items()}
        self.majority = self._most_frequent(overall)

    def _most_frequent(self, counts: Counter) -> tuple[int, int]:
        """(verb id, noun id): the verb and the noun most frequent among `counts`' pairs (ties: alphabetical)."""
        best = []
        for side, names in ((0, self.verbs), (1, self.nouns)):
            marginal = Counter()
            for pair, c in counts.items():
                marginal[pair[side]] += c
            best.append(names.index(max(sorted(marginal), key=lambda w: marginal[w])))
        return best[0], best[1]

    def baselines(self, prev: tuple[str, str]) -> dict[str, tuple[int, int]]:
        """(verb id, noun id) each training-data baseline predicts after the step `prev` (a pair never seen in
        training: the bigram falls back to the overall counts)."""
        return {"bigram": self.bigram.get(prev, self.majority),
                "repeat": (self.verbs.index(prev[0]), self.nouns.index(prev[1])), "majority": self.majority}

    def examples(self, video: dict):
        words = self.vocab.words(video["features"]) + self.tok.vocab_size
        meta, key = video["json"], video_key(video)
        mids, prev = clip_mids(meta), None
        for step in steps_of(self.truth, meta["video_id"]):
            if step["verb"] is None:
                continue
            target, before = step_clips(mids, step, len(HORIZONS)), np.flatnonzero(mids < step["start"])[-self.context:]
            if prev is not None and len(target) == len(HORIZONS) and len(before):
                yield self._example(words, before, target, step, prev, key, video)
            prev = (step["verb"], step["noun"])

    def _example(self, words, before, target, step, prev, key, video) -> dict:
        seen = list(words[before]) + [self.tok.mask_id] * len(HORIZONS)
        ids, seg = build_sequence([], seen, self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
        labels = np.full(len(ids), IGNORE)
        labels[-1 - len(HORIZONS):-1] = words[target]
        ex = {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "labels": labels, "align_label": IGNORE,
              "last": words[before[-1]], "verb": self.verbs.index(step["verb"]), "noun": self.nouns.index(step["noun"]),
              "window": clips_of(key, video["json"], [*before, *target]), "video": (key, video["features"], video["json"])}
        if self.bigram is not None:
            ex["baselines"] = self.baselines(prev)
        return ex

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        batch = collate(examples, self.tok.pad_id)
        batch["last"] = torch.as_tensor(np.array([e["last"] for e in examples]))
        batch["verb"], batch["noun"] = (torch.tensor([e[k] for e in examples]) for k in ("verb", "noun"))
        if "baselines" in examples[0]:
            batch["baselines"] = torch.tensor([[e["baselines"][b] for b in BASELINES] for e in examples])  # (B, 3, 2)
        batch["window"], batch["video"] = [e["window"] for e in examples], [e["video"] for e in examples]
        return batch

    def metrics(self) -> "ForecastingMetrics":
        return ForecastingMetrics(self.tok.vocab_size, self.vocab.size, self.vocab.centroids[-1], self.word_labels,
                                  (len(self.verbs), len(self.nouns)))


class ForecastingMetrics(nn.Module):
    RATES = {**{f"t{h}_{name}": "transitions" for h in HORIZONS for name in ("top1", "top5", "repeat_last")},
             **{f"{name}_top1": "transitions" for name in STEP_FIGURES}}

    def __init__(self, text_vocab_size: int, visual_vocab_size: int, centroids: np.ndarray | None = None,
                 word_labels: np.ndarray | None = None, labels: tuple[int, int] = (1, 1), shown: int = 8):
        """`centroids`: (visual vocabulary size, D) leaf centroids, to show a clip for each predicted word;
        `word_labels`: the pair id each word depicts (-1: none), to read the next verb and noun; `labels`: the
        number of verbs and of nouns."""
        super().__init__()
        self.text, self.size, self.centroids, self.shown, self.labels = text_vocab_size, visual_vocab_size, centroids, shown, labels
        self.word_labels = None if word_labels is None else torch.as_tensor(word_labels)
        self.rows: list[dict] = []
        self.acc = nn.ModuleDict({f"t{h}_top{k}": MulticlassAccuracy(visual_vocab_size, top_k=min(k, visual_vocab_size),
                                                                      average="micro")
                                  for h in HORIZONS for k in (1, 5)})
        self.repeat = nn.ModuleDict({f"t{h}": MulticlassAccuracy(visual_vocab_size, average="micro") for h in HORIZONS})
        self.hits = nn.ModuleDict({name: SumMetric() for name in STEP_FIGURES})
        self.transitions = SumMetric()  # test steps forecast (summed over ranks): the n of every accuracy

    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        sel = batch["labels"] != IGNORE  # (B, T): the targets of each row, in order
        h = hidden[sel].view(len(hidden), len(HORIZONS), -1)
        y = batch["labels"][sel].view(len(hidden), len(HORIZONS)) - self.text
        logits = model.token_logits(h.flatten(0, 1), slice(self.text, self.text + self.size)).view(*y.shape, -1)
        for i, hz in enumerate(HORIZONS):
            for k in (1, 5):
                self.acc[f"t{hz}_top{k}"].update(logits[:, i], y[:, i])
            self.repeat[f"t{hz}"].update(batch["last"] - self.text, y[:, i])
        self.transitions.update(float(len(y)))
        if self.word_labels is not None and "baselines" in batch:
            self._update_steps(logits, batch)
        if len(self.rows) < self.shown and "window" in batch:
            self._keep_examples(batch, logits.argmax(-1).cpu().numpy(), y.cpu().numpy())

    def _update_steps(self, logits: torch.Tensor, batch: dict) -> None:
        """The next step's verb and noun from the predicted words' probabilities, and the baselines' hits."""
        nv, nn_ = self.labels
        prob = logits.float().softmax(-1).mean(1)  # (B, words): over both clips
        labels = self.word_labels.to(prob.device)
        mass = prob.new_zeros(len(prob), nv * nn_ + 1).index_add_(1, torch.where(labels < 0, nv * nn_, labels), prob)
        pairs = mass[:, :-1].view(-1, nv, nn_)
        truth = torch.stack([batch["verb"], batch["noun"]], 1).to(prob.device)  # (B, 2)
        pred = torch.stack([pairs.sum(2).argmax(1), pairs.sum(1).argmax(1)], 1)
        for side, j in (("verb", 0), ("noun", 1)):
            self.hits[side].update((pred[:, j] == truth[:, j]).float().sum())
            for b, who in enumerate(BASELINES):
                self.hits[f"{who}_{side}"].update((batch["baselines"][:, b, j].to(truth.device) == truth[:, j]).float().sum())

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
        """The first steps of this rank: context clips, true next clips, predicted words shown as clips."""
        return self.rows

    def compute(self, model=None) -> dict[str, float]:
        n = float(self.transitions.compute())
        if not n:
            raise RuntimeError("forecasting got no step that follows another: check test shards and ground truth")
        out = {name: float(m.compute()) for name, m in self.acc.items()}
        out.update({f"t{hz}_repeat_last": float(self.repeat[f"t{hz}"].compute()) for hz in HORIZONS})
        out.update({"chance_top1": 1 / self.size, "chance_top5": min(5, self.size) / self.size, "transitions": n})
        if self.word_labels is not None:
            out.update({f"{name}_top1": float(m.compute()) / n for name, m in self.hits.items()})
            out.update({"chance_verb_top1": 1 / self.labels[0], "chance_noun_top1": 1 / self.labels[1]})
        for m in (*self.acc.values(), *self.repeat.values(), *self.hits.values(), self.transitions):
            m.reset()
        return out
