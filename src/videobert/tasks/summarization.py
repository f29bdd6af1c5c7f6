"""Video summarization: pick the segments of a video that make its summary, within a length budget.

Candidate segments are the 1.5 s clips. Each is scored from the model alone, by how confidently it
names an action for the clip and its two neighbours: the zero-shot template `now let me show you how to
[MASK] the [MASK]` is filled with those clips, and the score is the highest verb probability at the
first [MASK] (idle scenes show no action); the (verb, noun) it names is kept too. Segments are taken best
first while they fit in `budget` (15% of the duration, TVSum/SumMe practice), first one per action the
model names, then the rest (a summary shows what happens, not the same step three times).

`coverage`: the share of a video's distinct steps (verb-noun pairs) that the summary shows (a chosen
clip's middle inside a step of that pair), averaged over videos: the budget holds fewer clips than most
videos have steps, so a summary must choose. Beside it: evenly spaced clips (`uniform_coverage`), a
uniformly random set of as many clips (`random_coverage`, exact: 1 - C(N - c, m) / C(N, m) per pair with
c of the N clips in it and m chosen) and the best any selection reaches (`oracle_coverage`). `f1`: of the
selected time against the key time (every action step), next to a random selection's (`random_f1`) and
the best reachable (`oracle_f1`: the budget caps recall); F1 cannot tell a good summary from a lucky one
here, since every action step is key. Intervals: bootstrap over the test videos.
Under DDP every rank gathers all videos' scores (each video is read by one rank) and computes the same
result, in video-id order, as one process would.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..stats import bootstrap_mean
from ..thumbnails import Clip, clips_of, spread
from .steps import gather_objects, steps_of, video_key
from .zero_shot import ZeroShotData


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total time covered by both interval sets (each made of disjoint intervals)."""
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def select(segments: list[tuple[float, float]], scores, budget: float, labels: list | None = None) -> list:
    """Best-scoring segments first, each kept if it still fits in `budget` seconds; with `labels` (what each
    segment shows, e.g. its predicted verb-noun pair), one segment per label first, then the rest."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    if labels is not None:
        first = {}
        for i in order:
            first.setdefault(labels[i], i)
        order = list(first.values()) + [i for i in order if i not in set(first.values())]
    chosen, used = [], 0.0
    for i in order:
        length = segments[i][1] - segments[i][0]
        if used + length <= budget:
            chosen.append(segments[i])
            used += length
    return chosen


def _pair_of(t: float, steps: list[dict]):
    return next(((s["verb"], s["noun"]) for s in steps if s["start"] <= t < s["end"]), None)


def coverage(selected: list[tuple[float, float]], steps: list[dict]) -> float:
    """Share of the distinct (verb, noun) pairs of `steps` that some selected segment's middle falls in."""
    pairs = {(s["verb"], s["noun"]) for s in steps}
    if not pairs:
        return 0.0
    shown = {_pair_of((a + b) / 2, steps) for a, b in selected} - {None}
    return len(shown & pairs) / len(pairs)


def random_coverage(segments: list[tuple[float, float]], steps: list[dict], m: int) -> float:
    """Exact expected coverage of m segments drawn uniformly without replacement from `segments`."""
    pairs = {(s["verb"], s["noun"]) for s in steps}
    if not pairs:
        return 0.0
    of = [_pair_of((a + b) / 2, steps) for a, b in segments]
    n = len(segments)
    return float(np.mean([1 - math.comb(n - of.count(p), m) / math.comb(n, m) for p in pairs]))


def f1(selected, key) -> float:
    hit = overlap(selected, key)
    if hit == 0:
        return 0.0
    p, r = hit / sum(e - s for s, e in selected), hit / sum(e - s for s, e in key)
    return 2 * p * r / (p + r)


class SummarizationData(ZeroShotData):
    """One zero-shot-template example per clip of each held-out video (with its two neighbours)."""

    def examples(self, video: dict):
        meta = video["json"]
        steps_of(self.truth, meta["video_id"])  # (raises for a video without ground truth)
        clips = meta["clips"]
        for i, (start, end) in enumerate(clips):
            window = {"verb": self.verbs[0], "noun": self.nouns[0],  # (placeholder labels: never read)
                      "start": clips[max(0, i - 1)][0], "end": clips[min(len(clips) - 1, i + 1)][1]}
            for ex in self._examples_for(video, [window]):
                yield {**ex, "video": meta["video_id"], "span": (start, end),
                       "clip": clips_of(video_key(video), meta, [i])[0]}

    def collate(self, examples: list[dict]) -> dict:
        batch = super().collate(examples)
        batch["video"], batch["span"] = [e["video"] for e in examples], [e["span"] for e in examples]
        batch["clip"] = [e["clip"] for e in examples]
        return batch

    def metrics(self) -> "SummarizationMetrics":
        return SummarizationMetrics(self.truth)


class SummarizationMetrics(nn.Module):
    def __init__(self, truth: dict, budget: float = 0.15, random_draws: int = 50, shown: int = 8):
        super().__init__()
        self.truth, self.budget, self.draws, self.shown = truth, budget, random_draws, shown
        self.scores: dict[str, list] = {}  # video id -> [(span, score, Clip)]
        self.rows: list[dict] = []

    @torch.no_grad()
    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], batch.get("visual_features"))
        h = hidden[torch.arange(len(hidden), device=hidden.device), batch["mask_positions"][:, 0]]
        conf, verb = model.token_logits(h, batch["verb_candidates"]).float().softmax(-1).max(-1)
        h_noun = hidden[torch.arange(len(hidden), device=hidden.device), batch["mask_positions"][:, 1]]
        noun = model.token_logits(h_noun, batch["noun_candidates"]).argmax(-1)
        for video, span, c, clip, pair in zip(batch["video"], batch["span"], conf.tolist(), batch["clip"],
                                              zip(verb.tolist(), noun.tolist())):
            self.scores.setdefault(video, []).append((tuple(span), c, clip, pair))

    def compute(self, model=None) -> dict[str, float]:
        merged: dict[str, list] = {}
        for part in gather_objects(self.scores):
            for video, items in part.items():
                merged.setdefault(video, []).extend(items)
        if not merged:
            raise RuntimeError("summarization got no segments: check test shards and ground truth")
        self.rows, per_video = [], []
        for video in sorted(merged):
            items = sorted(merged[video], key=lambda i: i[0])  # (clip order)
            per_video.append(self._video(video, items))
        self.scores = {}
        out = {"videos": float(len(per_video)), "budget": self.budget}
        for name in per_video[0]:  # (means over videos, bootstrapped: a video's clips are not independent)
            values = [v[name] for v in per_video]
            out[name] = float(np.mean(values))
            if not name.startswith("oracle"):
                out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_mean(values)
        return out

    def _video(self, video: str, items: list) -> dict[str, float]:
        """Every figure of one video: the model's summary and the baselines, coverage and F1."""
        info, rng = self.truth["videos"][video], np.random.default_rng(len(self.rows))
        steps = [s for s in info["steps"] if s["verb"] is not None]
        key = [(s["start"], s["end"]) for s in steps]
        segments, scores, pairs = [i[0] for i in items], [i[1] for i in items], [i[3] for i in items]
        budget = self.budget * info["duration"]
        chosen = select(segments, scores, budget, pairs)
        if len(self.rows) < self.shown:
            self.rows.append(self._row(video, items, chosen, key, f1(chosen, key)))
        fit = len(select(segments, np.zeros(len(segments)), budget))  # clips the budget holds
        uniform = [segments[int(i)] for i in np.floor((np.arange(fit) + 0.5) * len(segments) / max(fit, 1))]
        distinct = len({(s["verb"], s["noun"]) for s in steps})
        return {"coverage": coverage(chosen, steps), "uniform_coverage": coverage(uniform, steps),
                "random_coverage": random_coverage(segments, steps, fit),
                "oracle_coverage": min(fit, distinct) / max(1, distinct),
                "f1": f1(chosen, key), "uniform_f1": f1(uniform, key),
                "random_f1": float(np.mean([f1(select(segments, rng.random(len(segments)), budget), key)
                                            for _ in range(self.draws)])),
                "oracle_f1": f1(select(segments, [overlap([s], key) for s in segments], budget), key)}

    @staticmethod
    def _row(video: str, items: list, chosen: list, key: list, score: float) -> dict:
        """The chosen segments (time order) against the ground truth: the middle clip of every key step."""
        clips: list[Clip] = [i[2] for i in items]
        mids = np.array([c.middle for c in clips])
        truth = [clips[int(np.abs(mids - (s + e) / 2).argmin())] for s, e in key]
        picked = [i[2] for i in items if i[0] in set(chosen)]
        return {"video": video, "summary": spread(picked, 8), "ground_truth": spread(truth, 8),
                "summary_times": ", ".join(f"{c.start:.1f}-{c.end:.1f}" for c in picked), "f1": round(score, 3)}

    def examples(self) -> list[dict]:
        """The first videos (by id) of the last `compute`: the summary's clips next to the key steps' clips."""
        return self.rows
