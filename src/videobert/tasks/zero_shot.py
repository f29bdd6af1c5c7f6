"""Zero-shot action classification (the paper's protocol).

For each ground-truth step of a held-out video, feed
`[CLS] now let me show you how to [MASK] the [MASK] [>] visual words of the step [SEP]`
and read the verb from the first [MASK] and the noun from the second, each restricted to the label
vocabulary. Reported: top-1 and top-5 accuracy, with chance level alongside, on all steps and apart on the
steps whose verb-noun pair training showed (`_seen_pairs`) and those marked `unseen_pair` (held out of the
built-in training corpus: `_unseen_pairs`). Beside them, on the same steps and clips, two baselines learned
from the training videos: the word lookup (`_lookup`, no transformer: `tasks.lookup`) and the majority label.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of, spread
from .lookup import WordLookup
from .steps import clip_mids, clip_token_ids, step_clips, steps_of, video_key

TEMPLATE = "now let me show you how to [MASK] the [MASK]"


def template_masks(tok, ids: list[int], template: str = TEMPLATE) -> list[int]:
    """Positions of the template's verb and noun [MASK]s in `[CLS] template ...` (`ids`: the template's tokens)."""
    masks = [i + 1 for i, t in enumerate(ids) if t == tok.mask_id]  # (+1: [CLS])
    if len(masks) != 2:
        raise ValueError(f"the template must hold two [MASK] tokens (verb, noun), got {len(masks)}: {template!r}")
    return masks


PARTS = {"": "steps", "_seen_pairs": "seen_pair_steps", "_unseen_pairs": "unseen_pair_steps"}  # subset: its n


class ZeroShotData:
    """Turns decoded test videos plus their ground truth into zero-shot classification examples."""

    baselines_need_truth = False  # (the word lookup needs the training captions only)

    def __init__(self, tokenizer, vocab, truth: dict, max_visual_words: int = 16, features: bool = False):
        """`features`: CBT models take the clips' features (with one placeholder id) instead of visual words."""
        self.tok, self.vocab, self.truth, self.max_visual = tokenizer, vocab, truth, max_visual_words
        self.features = features
        self.verbs, self.nouns = truth["verbs"], truth["nouns"]
        self.verb_ids = torch.tensor([tokenizer.token_id(w) for w in self.verbs])
        self.noun_ids = torch.tensor([tokenizer.token_id(w) for w in self.nouns])
        self.template = tokenizer.encode(TEMPLATE)
        self.mask_positions = template_masks(tokenizer, self.template)
        self.lookup: WordLookup | None = None  # `learn_baselines`

    def examples(self, video: dict):
        steps = steps_of(self.truth, video["json"]["video_id"])
        yield from self._examples_for(video, [s for s in steps if s["verb"] is not None])

    def _examples_for(self, video: dict, steps: list[dict]):
        """The template filled with the clips of each step (a span with a verb and noun label)."""
        feats = video["features"]
        words = clip_token_ids(self.tok, self.vocab, feats, self.features)
        mids = clip_mids(video["json"])
        for step in steps:
            clips = step_clips(mids, step, self.max_visual)
            if len(clips) == 0:
                continue
            ids, seg = build_sequence(self.template, words[clips], self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
            ex = {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "labels": np.full(len(ids), IGNORE),
                  "align_label": IGNORE, "verb": self.verbs.index(step["verb"]), "noun": self.nouns.index(step["noun"]),
                  "unseen": bool(step.get("unseen_pair", False)),
                  "clips": clips_of(video_key(video), video["json"], clips)}
            if self.lookup is not None:  # (the baseline reads the very clips the model sees)
                guess = self.lookup.predict(words[clips] - self.tok.vocab_size)  # (token ids -> visual words)
                ex.update({f"lookup_{what}": i for what, i in guess.items()})
            if self.features:
                ex["visual_features"], ex["visual_offset"] = feats[clips], 2 + len(self.template)
            yield ex

    def __call__(self, videos):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(examples, self.tok.pad_id)
        batch["verb"] = torch.tensor([e["verb"] for e in examples])
        batch["noun"] = torch.tensor([e["noun"] for e in examples])
        batch["mask_positions"] = torch.tensor(self.mask_positions).expand(len(examples), 2)
        batch["verb_candidates"], batch["noun_candidates"] = self.verb_ids, self.noun_ids
        batch["unseen"] = torch.tensor([e["unseen"] for e in examples])
        batch["clips"] = [e["clips"] for e in examples]
        if self.lookup is not None:
            batch["lookup"] = torch.tensor([[e["lookup_verb"], e["lookup_noun"]] for e in examples])
        return batch

    def learn_baselines(self, videos, truth: dict | None) -> None:
        """From the training data: the word lookup (from the decoded training `videos` and their captions; not
        for CBT, which has no visual words) and, given their ground truth `truth`, the verb and the noun most
        frequent among their action steps (ties go to the first label)."""
        if not self.features:
            self.lookup = WordLookup(self.vocab, self.verbs, self.nouns).fit(videos)
        if truth is not None:
            steps = [s for info in truth["videos"].values() for s in info["steps"] if s["verb"] is not None]
            self.majority = {what: max(names, key=[s[what] for s in steps].count)
                             for what, names in (("verb", self.verbs), ("noun", self.nouns))}

    def metrics(self) -> "ZeroShotMetrics":
        return ZeroShotMetrics(self.verbs, self.nouns, getattr(self, "majority", None), lookup=self.lookup is not None)


class ZeroShotMetrics(nn.Module):
    """Top-1/top-5 verb and noun accuracy (torchmetrics) on all steps, seen and unseen pairs, with chance
    levels and the training-data baselines on the same steps, and confusion matrices."""

    RATES = {**{f"{what}_top{k}{part}": n for what in ("verb", "noun") for k in (1, 5) for part, n in PARTS.items()},
             **{f"{what}_top1_lookup{part}": n for what in ("verb", "noun") for part, n in PARTS.items()},
             "verb_top1_majority": "steps", "noun_top1_majority": "steps"}  # (proportions: the key of their n)

    def __init__(self, verbs: list[str], nouns: list[str], majority: dict | None = None, shown: int = 8,
                 lookup: bool = False):
        """`majority`: the training steps' most frequent verb and noun ({"verb": ..., "noun": ...}), a baseline;
        `lookup`: batches carry the word lookup's answers (`lookup`: (B, 2) verb and noun ids)."""
        super().__init__()
        self.majority = None if majority is None else {w: [verbs, nouns][i].index(majority[w])
                                                       for i, w in enumerate(("verb", "noun"))}
        self.majority_hits = nn.ModuleDict({what: SumMetric() for what in ("verb", "noun")})
        self.lookup_hits = nn.ModuleDict({f"{what}{part}": SumMetric() for what in ("verb", "noun") for part in PARTS}
                                         if lookup else {})
        self.shown, self.rows = shown, []  # the first steps this rank sees, for `examples()`
        self.labels = {"verb": list(verbs), "noun": list(nouns)}
        self.sizes = {what: len(names) for what, names in self.labels.items()}
        self.acc = nn.ModuleDict({f"{what}_top{k}{part}": MulticlassAccuracy(n, top_k=min(k, n), average="micro")
                                  for what, n in self.sizes.items() for k in (1, 5) for part in PARTS})
        self.steps = SumMetric()  # test steps (summed over ranks)
        self.unseen = SumMetric()  # steps whose pair the training corpus never showed (summed over ranks)
        self.confusion = nn.ModuleDict({what: MulticlassConfusionMatrix(n) for what, n in self.sizes.items()})

    def update(self, model, batch: dict) -> None:
        hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], batch.get("visual_features"))
        rows = torch.arange(len(hidden), device=hidden.device)[:, None]
        h = hidden[rows, batch["mask_positions"]]  # (B, 2, C): the verb and noun [MASK]s
        unseen, preds = batch["unseen"], {}
        subsets = {"": torch.ones_like(unseen), "_seen_pairs": ~unseen, "_unseen_pairs": unseen}
        for i, what in enumerate(("verb", "noun")):
            logits, truth = model.token_logits(h[:, i], batch[f"{what}_candidates"]), batch[what]
            for part, rows_in in subsets.items():
                if rows_in.any():
                    for k in (1, 5):
                        self.acc[f"{what}_top{k}{part}"].update(logits[rows_in], truth[rows_in])
                    if "lookup" in batch and self.lookup_hits:
                        self.lookup_hits[f"{what}{part}"].update((batch["lookup"][rows_in, i] == truth[rows_in]).sum().float())
            preds[what] = logits.argmax(-1)
            self.confusion[what].update(preds[what], truth)
            if self.majority is not None:
                self.majority_hits[what].update((truth == self.majority[what]).sum().float())
        self.unseen.update(unseen.sum().float())
        self.steps.update(float(len(hidden)))
        if len(self.rows) < self.shown:  # (a device-to-host copy only while example rows are missing)
            self._keep_examples(batch, {what: p.tolist() for what, p in preds.items()})

    def _keep_examples(self, batch: dict, preds: dict) -> None:
        verbs, nouns = self.labels["verb"], self.labels["noun"]
        for i in range(min(len(preds["verb"]), self.shown - len(self.rows))):
            self.rows.append({"clips": spread(batch["clips"][i], 4),
                              "truth": f"{verbs[batch['verb'][i]]} the {nouns[batch['noun'][i]]}",
                              "predicted": f"{verbs[preds['verb'][i]]} the {nouns[preds['noun'][i]]}",
                              "unseen_pair": bool(batch["unseen"][i])})

    def examples(self) -> list[dict]:
        """The first steps of this rank: their clips, the true and the predicted verb and noun (top-1)."""
        return self.rows

    def compute(self, model=None) -> dict[str, float]:
        steps, unseen = float(self.steps.compute()), float(self.unseen.compute())  # (the same on every rank)
        n = {"steps": steps, "seen_pair_steps": steps - unseen, "unseen_pair_steps": unseen}
        out = {key: value for key, value in n.items() if value or key == "steps"}
        for name, metric in self.acc.items():
            part = next(p for p in ("_seen_pairs", "_unseen_pairs", "") if name.endswith(p))
            if n[PARTS[part]]:  # (no rank skips a gather: every rank has the same counts)
                out[name] = float(metric.compute())
            if not part:
                what, k = name.split("_top")
                out[f"{name}_chance"] = min(int(k), self.sizes[what]) / self.sizes[what]
            metric.reset()
        for what in ("verb", "noun") if self.lookup_hits else ():
            for part, subset in PARTS.items():
                if n[subset]:
                    out[f"{what}_top1_lookup{part}"] = float(self.lookup_hits[f"{what}{part}"].compute()) / n[subset]
        if self.majority is not None:
            out.update({f"{what}_top1_majority": float(m.compute()) / steps for what, m in self.majority_hits.items()})
        for m in (self.unseen, self.steps, *self.majority_hits.values(), *self.lookup_hits.values()):
            m.reset()
        return out

    def summary(self, results: dict) -> str:
        """The model beside the word lookup, on all steps, seen and unseen pairs (top-1, 95% intervals)."""
        names = {"": "all steps", "_seen_pairs": "seen pairs", "_unseen_pairs": "unseen pairs"}
        parts = [p for p in PARTS if PARTS[p] in results]
        lines = [("  top-1 [95% CI]   " + "".join(f"{names[p] + f' (n={int(results[PARTS[p]])})':<25}" for p in parts)).rstrip()]
        for what in ("verb", "noun"):
            for who, tag in (("model", ""), ("word lookup", "_lookup")):
                cells = [_cell(results, f"{what}_top1{tag}{p}") for p in parts]
                if any(cells):
                    lines.append(f"  {what} {who:<12}" + "".join(f"{c:<25}" for c in cells).rstrip())
        if "verb_top1_majority" in results:
            lines.append(f"  training majority: verb {results['verb_top1_majority']:.1%}, noun "
                         f"{results['noun_top1_majority']:.1%}; chance {results['verb_top1_chance']:.1%}")
        return "\n".join(lines)

    def figures(self) -> dict:
        """Verb and noun confusion matrices (top-1) as images; resets them."""
        from ..plots import confusion_figure

        out = {}
        for what, metric in self.confusion.items():
            out[f"zero_shot/{what}_confusion"] = confusion_figure(metric.compute().cpu().numpy(), self.labels[what],
                                                                 f"zero-shot {what}s: truth (rows) x prediction")
            metric.reset()
        return out


def _cell(results: dict, key: str) -> str:
    if key not in results:
        return ""
    low, high = results.get(f"{key}_ci_low"), results.get(f"{key}_ci_high")
    return f"{100 * results[key]:.1f}%" + (f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")
