"""Video summarization: pick the segments of a video that make its summary, within a length budget.

Candidate segments are the 1.5 s clips. Each is scored from the model alone, by how confidently it
names an action for the clip and its two neighbours: the zero-shot template `now let me show you how to
[MASK] the [MASK]` is filled with those clips, and the score is the highest verb probability at the
first [MASK] (idle scenes show no action). Segments are taken best first while they fit in
`budget` (15% of the duration, TVSum/SumMe practice). F1 of the selected time against the ground-truth
key time (the real steps), averaged over videos, next to the expected F1 of a random selection under
the same budget and the best F1 any selection can reach (`oracle_f1`: the budget caps recall).
Under DDP every rank gathers all videos' scores (each video is read by one rank) and computes the same
result, in video-id order, as one process would.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..thumbnails import Clip, clips_of, spread
from .steps import gather_objects, steps_of, video_key
from .zero_shot import ZeroShotData


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total time covered by both interval sets (each made of disjoint intervals)."""
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def select(segments: list[tuple[float, float]], scores, budget: float) -> list[tuple[float, float]]:
    """Best-scoring segments first, each kept if it still fits in `budget` seconds."""
    chosen, used = [], 0.0
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        length = segments[i][1] - segments[i][0]
        if used + length <= budget:
            chosen.append(segments[i])
            used += length
    return chosen


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
        conf = model.token_logits(h, batch["verb_candidates"]).softmax(-1).amax(-1).float().cpu()
        for video, span, c, clip in zip(batch["video"], batch["span"], conf.tolist(), batch["clip"]):
            self.scores.setdefault(video, []).append((tuple(span), c, clip))

    def compute(self, model=None) -> dict[str, float]:
        merged: dict[str, list] = {}
        for part in gather_objects(self.scores):
            for video, items in part.items():
                merged.setdefault(video, []).extend(items)
        if not merged:
            raise RuntimeError("summarization got no segments: check test shards and ground truth")
        rng, ours, rand, oracle, self.rows = np.random.default_rng(0), [], [], [], []
        for video in sorted(merged):
            items = sorted(merged[video], key=lambda i: i[0])  # (clip order)
            info = self.truth["videos"][video]
            key = [(s["start"], s["end"]) for s in info["steps"] if s["verb"] is not None]
            segments, scores = [i[0] for i in items], [i[1] for i in items]
            budget = self.budget * info["duration"]
            chosen = select(segments, scores, budget)
            ours.append(f1(chosen, key))
            if len(self.rows) < self.shown:
                self.rows.append(self._row(video, items, chosen, key, ours[-1]))
            rand.append(np.mean([f1(select(segments, rng.random(len(segments)), budget), key) for _ in range(self.draws)]))
            oracle.append(f1(select(segments, [overlap([s], key) for s in segments], budget), key))
        self.scores = {}
        return {"f1": float(np.mean(ours)), "random_f1": float(np.mean(rand)), "oracle_f1": float(np.mean(oracle)),
                "videos": float(len(ours)), "budget": self.budget}

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
