"""The word lookup: zero-shot verb and noun with no transformer, a baseline learned from training data alone.

Each visual word is labelled with the verb and the noun that the training narration of its clips names most
often (a clip is narrated by the caption sentences whose time span holds its middle; a sentence names the
label words it contains); a test step's clips then vote, each with its word's labels. Factorised words are
labelled per group, and each label reads the group whose labels agree best with the narration on the
training clips (on the built-in corpus: motion codes for the verb, appearance codes for the noun). It needs
no ground truth of the training videos, only their captions and the label vocabulary, so it is computed for
any data `videobert test` evaluates zero-shot; what it scores shows how much of the task the visual words
alone answer.
"""
from __future__ import annotations

import re

import numpy as np

from .steps import clip_mids

WORD = re.compile(r"[a-z]+")


class WordLookup:
    def __init__(self, vocab, verbs: list[str], nouns: list[str]):
        self.vocab, self.labels = vocab, {"verb": list(verbs), "noun": list(nouns)}
        self.groups = len(vocab.group_sizes) if hasattr(vocab, "group_sizes") else 1
        sizes = list(vocab.group_sizes) if self.groups > 1 else [vocab.size]
        self.counts = {what: [np.zeros((n, len(names)), np.int64) for n in sizes] for what, names in self.labels.items()}
        self.table: dict[str, np.ndarray] = {}  # label -> (words of its group,) label id, -1: never narrated
        self.group: dict[str, int] = {}  # label -> the group it reads
        self.fallback: dict[str, int] = {}  # label -> the label the training narration names most

    def codes(self, words: np.ndarray) -> np.ndarray:
        """(clips, groups) each clip's word in every group (joint words: one group), from its visual words."""
        words = np.asarray(words, np.int64)
        return self.vocab.codes(words) if self.groups > 1 else words[:, None]

    def add(self, video: dict) -> None:
        """Count the label words each clip's narration names (`video`: decoded, with `features` and `json`)."""
        codes, mids = self.codes(self.vocab.words(video["features"])), clip_mids(video["json"])
        index = {what: {w: i for i, w in enumerate(names)} for what, names in self.labels.items()}
        for sentence in video["json"]["sentences"]:
            inside = (mids >= sentence["start"]) & (mids < sentence["end"])
            if not inside.any():
                continue
            named = set(WORD.findall(sentence["text"].lower()))
            for what, ids in index.items():
                for word in named & ids.keys():
                    for g in range(self.groups):
                        np.add.at(self.counts[what][g][:, ids[word]], codes[inside, g], 1)

    def fit(self, videos) -> "WordLookup":
        for video in videos:
            self.add(video)
        for what, per_group in self.counts.items():
            agreement = [c.max(1).sum() / max(1, c.sum()) for c in per_group]  # how well each group's labels fit
            self.group[what] = int(np.argmax(agreement))
            counts = per_group[self.group[what]]
            self.table[what] = np.where(counts.sum(1) > 0, counts.argmax(1), -1)
            self.fallback[what] = int(per_group[0].sum(0).argmax())
        return self

    def predict(self, words: np.ndarray) -> dict[str, int]:
        """{"verb": id, "noun": id}: the label most of the clips' visual `words` stand for (ties: the lower id;
        no labelled word: the label the training narration names most)."""
        codes, out = self.codes(words), {}
        for what, table in self.table.items():
            votes = table[codes[:, self.group[what]]]
            votes = votes[votes >= 0]
            out[what] = int(np.bincount(votes).argmax()) if len(votes) else self.fallback[what]
        return out
