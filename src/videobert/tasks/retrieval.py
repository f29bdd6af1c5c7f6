"""Text <-> video retrieval over the action steps of held-out videos.

A pair is one ground-truth step: its text (the caption sentences whose middle lies in the step) and its
video (the step's clips). Every text is ranked against every video and vice versa, with two scorers:
- `dual`: cosine similarity of mean hidden states of the text alone and of the video alone (fast;
  one encoder pass per item);
- `cross`: the alignment head on `[CLS] text [>] video [SEP]` (exact but quadratic), used to rerank
  the dual scorer's top `rerank` candidates of every query; the rest keep their dual order.
Reported per scorer and direction: R@1, R@5, R@10 (torchmetrics' hit rate) and the median rank, with
chance. Steps whose narration is word for word the same answer each other's queries (ties with a wrong
item count against the query). Under DDP the pairs of all ranks are gathered (in pair-id order, so the
result is the single-process one) and every rank scores the whole set.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.retrieval import RetrievalHitRate

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of
from .steps import clip_mids, clip_token_ids, gather_objects, step_clips, step_text, steps_of, video_key

KS = (1, 5, 10)


class RetrievalData:
    """Held-out videos + ground truth -> one example per step (text ids, clip ids/features)."""

    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False,
                 max_text_tokens: int = 32):
        self.tok, self.vocab, self.truth, self.max_visual, self.features = tokenizer, vocab, truth, max_visual_words, features
        self.max_text = max_text_tokens

    def examples(self, video: dict):
        meta, feats = video["json"], video["features"]
        steps = steps_of(self.truth, meta["video_id"])
        words, mids = clip_token_ids(self.tok, self.vocab, feats, self.features), clip_mids(meta)
        for n, step in enumerate(steps):
            if step["verb"] is None:
                continue
            clips, text = step_clips(mids, step, self.max_visual), step_text(meta, step)
            if len(clips) and text:
                ex = {"pair": f"{meta['video_id']}/{n}", "text": self.tok.encode(text)[: self.max_text],
                      "words": words[clips], "caption": text, "clips": clips_of(video_key(video), meta, clips)}
                if self.features:
                    ex["features"] = feats[clips]
                yield ex

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        return {"pair": [e["pair"] for e in examples],
                "text": [e["text"] for e in examples], "words": [e["words"] for e in examples],
                "features": [e.get("features") for e in examples], "caption": [e["caption"] for e in examples],
                "clips": [e["clips"] for e in examples]}

    def metrics(self) -> "RetrievalMetrics":
        return RetrievalMetrics(self.tok)


def sequences(tok, texts: list, words: list, features: list) -> dict:
    """A batch of `[CLS] text [>] words [SEP]` sequences (either part may be empty), with CBT features."""
    exs = []
    for text, w, f in zip(texts, words, features):
        ids, seg = build_sequence(list(text), list(w), tok.cls_id, tok.sep_id, tok.bridge_id)
        ex = {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "align_label": IGNORE}
        if f is not None and len(w):
            ex["visual_features"], ex["visual_offset"] = f, 2 + len(text)
        exs.append(ex)
    return collate(exs, tok.pad_id)


def ranks_from_scores(scores: torch.Tensor, relevant: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, N) scores -> the 1-based rank of each query's best-ranked relevant item (default: item i is
    query i's). A tie with an irrelevant item counts against the query (no luck in the ranking)."""
    relevant = torch.eye(*scores.shape, dtype=torch.bool) if relevant is None else relevant
    best = scores.masked_fill(~relevant, float("-inf")).amax(1, keepdim=True)
    return ((scores >= best) & ~relevant).sum(1) + 1


def recall_and_median(scores: torch.Tensor, relevant: torch.Tensor | None = None) -> dict[str, float]:
    """R@k (a relevant item among the top k; torchmetrics' hit rate) and the median rank. `relevant`
    (Q, N) bool: which items answer each query (items with the very same narration count as answers)."""
    q, n = scores.shape
    relevant = torch.eye(q, n, dtype=torch.bool) if relevant is None else relevant
    ranks = ranks_from_scores(scores, relevant)
    indexes = torch.arange(q)[:, None].expand(q, n).flatten()
    out = {}
    # torchmetrics breaks ties arbitrarily; one step down (nextafter) puts every relevant item just below an
    # irrelevant one with the same score and changes no other order, so R@k and the median rank agree
    pessimistic = torch.where(relevant, torch.nextafter(scores, torch.tensor(float("-inf"))), scores)
    for k in KS:
        out[f"r{k}"] = float(RetrievalHitRate(top_k=k)(pessimistic.flatten(), relevant.flatten(), indexes=indexes))
    out["median_rank"] = float(ranks.float().quantile(0.5))  # as np.median
    return out


class RetrievalMetrics(nn.Module):
    """Collects the pairs, then scores everything against everything in `compute(model)`."""

    def __init__(self, tokenizer, rerank: int = 10, batch_size: int = 64, shown: int = 8):
        super().__init__()
        self.tok, self.rerank, self.batch_size, self.shown = tokenizer, rerank, batch_size, shown
        self.items: list[tuple] = []
        self.rows: list[dict] = []

    def update(self, model, batch: dict) -> None:
        self.items += list(zip(batch["pair"], batch["text"], batch["words"], batch["features"], batch["caption"],
                               batch["clips"]))

    @torch.no_grad()
    def _run(self, model, texts, words, feats, head, device) -> torch.Tensor:
        """`head(hidden, batch)` on the sequences [CLS] texts[i] [>] words[i] [SEP], in batches."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            b = sequences(self.tok, texts[i:i + self.batch_size], words[i:i + self.batch_size], feats[i:i + self.batch_size])
            b = {k: v.to(device) for k, v in b.items() if isinstance(v, torch.Tensor)}
            out.append(head(model(b["input_ids"], b["segment_ids"], b["attention_mask"], b.get("visual_features")), b).cpu())
        return torch.cat(out)

    def _encode(self, model, texts, words, feats, device) -> torch.Tensor:
        """Mean hidden state over the real tokens, L2-normalised (the dual encoder's embedding)."""
        def pool(h, b):
            m = b["attention_mask"][..., None].float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        return self._run(model, texts, words, feats, pool, device)

    def _cross(self, model, pairs: list[tuple[int, int]], texts, words, feats, device) -> torch.Tensor:
        """P(aligned) for (text index, video index) pairs from the alignment head."""
        return self._run(model, [texts[t] for t, _ in pairs], [words[v] for _, v in pairs], [feats[v] for _, v in pairs],
                         lambda h, b: model.align_logits(h).softmax(-1)[:, 1].float(), device)

    def _reranked(self, model, dual: torch.Tensor, text_side: bool, data, device) -> torch.Tensor:
        """Cross-encoder scores on each query's top candidates, placed above the rest in dual order."""
        k = min(self.rerank, dual.shape[1])
        top = dual.topk(k, dim=1).indices
        pairs = [(q, int(c)) if text_side else (int(c), q) for q in range(len(dual)) for c in top[q]]
        p = self._cross(model, pairs, *data, device).view(len(dual), k)
        scores = dual - dual.max() - 2.0  # below every reranked candidate (cosine in [-1, 1], p in [0, 1])
        return scores.scatter(1, top, p)

    def compute(self, model) -> dict[str, float]:
        items = sorted((it for part in gather_objects(self.items) for it in part), key=lambda it: it[0])
        if len(items) < 2:
            raise RuntimeError(f"retrieval needs at least 2 pairs, got {len(items)}: check test shards and ground truth")
        device = next(model.parameters()).device
        _, texts, words, feats, captions, clips = map(list, zip(*items))
        data = (texts, words, feats)
        t = self._encode(model, texts, [[]] * len(texts), [None] * len(texts), device)
        v = self._encode(model, [[]] * len(words), words, feats, device)
        dual = t @ v.T  # (texts, videos)
        # a step whose narration is word for word another's (fillers, common phrasings) answers it too
        same = torch.tensor([[a == b for b in texts] for a in texts])
        out = {"chance_r1": float(same.float().mean())}
        cross = self._reranked(model, dual, True, data, device)
        for name, scores in (("dual", dual), ("cross", cross)):
            out.update({f"{name}_t2v_{k}": x for k, x in recall_and_median(scores, same).items()})
        self.rows = self._rows(cross, same, captions, clips)  # (text -> video, cross-encoder)
        for name, scores in (("dual", dual.T), ("cross", self._reranked(model, dual.T, False, data, device))):
            out.update({f"{name}_v2t_{k}": x for k, x in recall_and_median(scores, same).items()})
        out["pairs"] = float(len(dual))
        self.items = []
        return out

    def _rows(self, scores: torch.Tensor, relevant: torch.Tensor, captions: list[str], clips: list) -> list[dict]:
        """The first queries: the narration, its step's middle clip, the middle clips of the top 3 steps retrieved."""
        ranks = ranks_from_scores(scores, relevant)
        top = scores.topk(min(3, scores.shape[1]), dim=1).indices
        return [{"query": captions[q], "true_step": clips[q][len(clips[q]) // 2],
                 "retrieved": [clips[c][len(clips[c]) // 2] for c in top[q].tolist()],
                 "retrieved_text": " | ".join(captions[c] for c in top[q].tolist()), "rank": int(ranks[q])}
                for q in range(min(self.shown, len(captions)))]

    def examples(self) -> list[dict]:
        """Text -> video with the cross-encoder, for the first queries of the last `compute`."""
        return self.rows
