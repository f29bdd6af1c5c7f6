"""Text <-> video retrieval over the action steps of held-out videos, relevance by ground truth.

The candidate pool is every action step of the first `pool_videos` test videos by id (40 by default: ~220
steps on the built-in corpus; the cross-encoder scores queries x pool pairs, so the pool is kept to what
a CPU scores in minutes; None: every test video). The queries are the steps whose
narration describes them (the caption sentences in the step name its verb and its noun; fillers and
mismatched sentences cannot be answered, so they are not queries). A candidate answers a query when its
step shows the same verb and noun, whatever the words: several candidates answer most queries. Scorers,
each over the whole pool (no reranking of another scorer's top list):
- `generative` (VideoBERT's own, no extra training): the likelihood of the query's verb and noun given
  the candidate's clips, read at the two [MASK]s of the zero-shot template "now let me show you how to
  [MASK] the [MASK]" (label vocabularies): log p(verb) + log p(noun); one encoder pass per candidate;
- `cross`: the alignment head, p(aligned) of `[CLS] text [>] video [SEP]` for every query x candidate
  (batched; quadratic);
- `dual`: cosine of mean hidden states of the text alone and of the video alone, only for a model trained
  to make those comparable (CBT's cross-modal InfoNCE, `feature_dim` > 0); for plain VideoBERT no loss ever
  trained it, so it is not reported.
Reported per scorer and direction (video -> text: each candidate that some query answers, ranked over the
queries): R@1, R@5, R@10 (torchmetrics' hit rate) and the median rank; chance R@k exactly, for each query
1 - C(N - r, k) / C(N, k) with r of its N candidates relevant, averaged; the pool and query counts. Ties
with an irrelevant item count against the query. Under DDP the pairs of all ranks are gathered (in pair-id
order, so the result is the single-process one) and every rank scores the whole set.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn
from torchmetrics.retrieval import RetrievalHitRate

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of
from .steps import (clip_mids, clip_token_ids, gather_objects, print_rank_zero, step_clips, step_text, steps_of,
                    video_key)
from .zero_shot import TEMPLATE, template_masks

KS = (1, 5, 10)


class RetrievalData:
    """Held-out videos + ground truth -> one example per step (text ids, clip ids/features)."""

    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False,
                 max_text_tokens: int = 32, pool_videos: int | None = 40):
        self.tok, self.vocab, self.truth, self.max_visual, self.features = tokenizer, vocab, truth, max_visual_words, features
        self.max_text = max_text_tokens
        self.pool_ids = set(sorted(truth["videos"])[:pool_videos])  # (the same set on every rank)
        self.verbs, self.nouns = list(truth["verbs"]), list(truth["nouns"])

    def examples(self, video: dict):
        meta, feats = video["json"], video["features"]
        steps = steps_of(self.truth, meta["video_id"])
        if meta["video_id"] not in self.pool_ids:
            return
        words, mids = clip_token_ids(self.tok, self.vocab, feats, self.features), clip_mids(meta)
        for n, step in enumerate(steps):
            if step["verb"] is None:
                continue
            clips, text = step_clips(mids, step, self.max_visual), step_text(meta, step)
            if len(clips):
                named = named_labels(text, self.verbs, self.nouns)  # (what the text says, not the truth)
                ex = {"pair": f"{meta['video_id']}/{n}", "text": self.tok.encode(text)[: self.max_text] if text else [],
                      "words": words[clips], "caption": text, "clips": clips_of(video_key(video), meta, clips),
                      "label": (self.verbs.index(step["verb"]), self.nouns.index(step["noun"])),
                      "describes": step["verb"] in named[0] and step["noun"] in named[1],
                      "named": (self.verbs.index(named[0][0]) if named[0] else -1,
                                self.nouns.index(named[1][0]) if named[1] else -1)}
                if self.features:
                    ex["features"] = feats[clips]
                yield ex

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict:
        return {key: [e.get(key) for e in examples] for key in ITEM}

    def metrics(self) -> "RetrievalMetrics":
        return RetrievalMetrics(self.tok, self.verbs, self.nouns)


ITEM = ("pair", "text", "words", "features", "caption", "clips", "label", "describes", "named")  # one step


def named_labels(text: str, verbs: list[str], nouns: list[str]) -> tuple[list[str], list[str]]:
    """The label words a narration names, in order: (verbs, nouns)."""
    words = re.findall(r"[a-z]+", text.lower())
    return [w for w in words if w in verbs], [w for w in words if w in nouns]


def chance_recall(relevant: torch.Tensor, k: int) -> float:
    """Exact R@k of a uniformly random ranking, averaged over the queries (rows) of `relevant` (Q, N)."""
    n = relevant.shape[1]
    miss = [math.comb(n - int(r), k) / math.comb(n, k) if k <= n else 0.0 for r in relevant.sum(1).tolist()]
    return float(1 - np.mean(miss))


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
    """Collects the steps, then scores every query against the whole pool in `compute(model)`."""

    RATES = {f"{scorer}_{way}_r{k}": f"{way}_queries" for scorer in ("generative", "cross", "dual")
             for way in ("t2v", "v2t") for k in KS}

    def __init__(self, tokenizer, verbs: list[str], nouns: list[str], batch_size: int = 256, shown: int = 8):
        super().__init__()
        self.tok, self.batch_size, self.shown = tokenizer, batch_size, shown
        self.verb_ids = torch.tensor([tokenizer.token_id(w) for w in verbs])
        self.noun_ids = torch.tensor([tokenizer.token_id(w) for w in nouns])
        self.template = tokenizer.encode(TEMPLATE)
        self.masks = template_masks(tokenizer, self.template)
        self.items: list[tuple] = []
        self.rows: list[dict] = []

    def update(self, model, batch: dict) -> None:
        self.items += list(zip(*(batch[key] for key in ITEM)))

    @torch.no_grad()
    def _run(self, model, texts, words, feats, head, device) -> torch.Tensor:
        """`head(hidden, batch)` on the sequences [CLS] texts[i] [>] words[i] [SEP], in batches."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            b = sequences(self.tok, texts[i:i + self.batch_size], words[i:i + self.batch_size], feats[i:i + self.batch_size])
            b = {k: v.to(device) for k, v in b.items() if isinstance(v, torch.Tensor)}
            out.append(head(model(b["input_ids"], b["segment_ids"], b["attention_mask"], b.get("visual_features")), b).cpu())
        return torch.cat(out)

    def _dual(self, model, q: dict, pool: dict, device) -> torch.Tensor:
        """Cosine of the mean hidden states of each query text alone and each candidate video alone."""
        def pool_mean(h, b):
            m = b["attention_mask"][..., None].float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        t = self._run(model, q["text"], [[]] * len(q["text"]), [None] * len(q["text"]), pool_mean, device)
        v = self._run(model, [[]] * len(pool["words"]), pool["words"], pool["features"], pool_mean, device)
        return t @ v.T

    def _cross(self, model, q: dict, pool: dict, device) -> torch.Tensor:
        """p(aligned) from the alignment head for every (query text, candidate video)."""
        n = len(pool["words"])
        texts = [t for t in q["text"] for _ in range(n)]
        p = self._run(model, texts, pool["words"] * len(q["text"]), pool["features"] * len(q["text"]),
                      lambda h, b: model.align_logits(h).float().softmax(-1)[:, 1], device)
        return p.view(len(q["text"]), n)

    def _generative(self, model, q: dict, pool: dict, device) -> torch.Tensor:
        """log p(query's verb) + log p(query's noun) at the zero-shot template's [MASK]s, given each candidate."""
        masks = torch.tensor(self.masks)

        def label_logprobs(h, b):  # (B, verbs + nouns): log-softmax over each label vocabulary
            at = h[:, masks]
            verb = model.token_logits(at[:, 0], self.verb_ids.to(h.device)).float().log_softmax(-1)
            noun = model.token_logits(at[:, 1], self.noun_ids.to(h.device)).float().log_softmax(-1)
            return torch.cat([verb, noun], 1)
        n = len(pool["words"])
        lp = self._run(model, [self.template] * n, pool["words"], pool["features"], label_logprobs, device)
        verb, noun = (torch.tensor([nm[i] for nm in q["named"]]) for i in (0, 1))
        return lp[:, verb].T + lp[:, len(self.verb_ids) + noun].T  # (queries, candidates)

    def compute(self, model) -> dict[str, float]:
        items = sorted((it for part in gather_objects(self.items) for it in part), key=lambda it: it[0])
        self.items = []
        pool = {key: [it[i] for it in items] for i, key in enumerate(ITEM)}
        queries = [i for i, it in enumerate(items) if it[ITEM.index("describes")]]
        if len(queries) < 2:
            raise RuntimeError(f"retrieval needs at least 2 steps whose narration names their verb and noun, got "
                               f"{len(queries)} of {len(items)} steps: check test shards and ground truth")
        q = {key: [pool[key][i] for i in queries] for key in ITEM}
        labels = torch.tensor(pool["label"])
        relevant = (labels[queries][:, None] == labels[None]).all(-1)  # (Q, N): the same verb and noun
        answered = relevant.any(0)  # candidates some query answers: the video -> text queries
        print_rank_zero(f"retrieval: {len(queries)} text queries against a pool of {len(items)} steps "
                        f"({int(answered.sum())} video queries)")
        device = next(model.parameters()).device
        scorers = {"generative": self._generative, "cross": self._cross}
        if model.cfg.feature_dim:  # (only a contrastively trained model has comparable text and video means)
            scorers["dual"] = self._dual
        out = {"pool": float(len(items)), "t2v_queries": float(len(queries)), "v2t_queries": float(answered.sum())}
        for k in KS:
            out[f"chance_t2v_r{k}"] = chance_recall(relevant, k)
            out[f"chance_v2t_r{k}"] = chance_recall(relevant.T[answered], k)
        best = None
        for name, scorer in scorers.items():
            scores = scorer(model, q, pool, device)
            out.update({f"{name}_t2v_{k}": x for k, x in recall_and_median(scores, relevant).items()})
            out.update({f"{name}_v2t_{k}": x for k, x in recall_and_median(scores.T[answered], relevant.T[answered]).items()})
            if best is None or out[f"{name}_t2v_r1"] > out[f"{best[0]}_t2v_r1"]:
                best = (name, scores)
        self.rows = self._rows(best[1], relevant, q["caption"], pool["caption"], q["clips"], pool["clips"], best[0])
        return out

    def _rows(self, scores, relevant, queries: list[str], captions: list[str], query_clips, clips, scorer: str) -> list:
        """The first queries: the narration, its step's middle clip, the middle clips of the top 3 steps retrieved
        (by the best scorer), and the rank of the first one of the same verb and noun."""
        ranks = ranks_from_scores(scores, relevant)
        top = scores.topk(min(3, scores.shape[1]), dim=1).indices
        return [{"query": queries[i], "true_step": query_clips[i][len(query_clips[i]) // 2],
                 "retrieved": [clips[c][len(clips[c]) // 2] for c in top[i].tolist()],
                 "retrieved_text": " | ".join(captions[c] for c in top[i].tolist()), "rank": int(ranks[i]),
                 "scorer": scorer} for i in range(min(self.shown, len(queries)))]

    def examples(self) -> list[dict]:
        """Text -> video with the best scorer, for the first queries of the last `compute`."""
        return self.rows
