"""The word-lookup baseline and the like-for-like zero-shot subsets, by hand on tiny inputs."""
import numpy as np
import pytest
import torch

from videobert.tasks.lookup import WordLookup
from videobert.tasks.zero_shot import ZeroShotMetrics

VERBS, NOUNS = ["cut", "stir"], ["egg", "fish", "bread"]


class Joint:  # word = the first feature
    size = 4

    def words(self, f):
        return np.asarray(f)[:, 0].astype(np.int64)


class Factorised:  # word = 3 * motion + look; feature 0 is the motion code, feature 1 the look code
    group_sizes = [2, 3]
    size = 6

    def words(self, f):
        f = np.asarray(f).astype(np.int64)
        return f[:, 0] * 3 + f[:, 1]

    def codes(self, words):
        return np.stack([words // 3, words % 3], 1)


def video(features, sentences):
    """Clip i spans [i, i + 1); sentences: (start, end, text)."""
    return {"features": np.asarray(features, np.float32),
            "json": {"clips": [[i, i + 1.0] for i in range(len(features))],
                     "sentences": [{"start": a, "end": b, "text": t} for a, b, t in sentences]}}


def test_joint_words_are_labelled_by_the_narration_of_their_clips():
    train = [video([[0], [0], [1], [1], [2]], [(0, 2, "Now cut the egg."), (2, 4, "stir the fish!"), (4, 5, "so good")]),
             video([[0], [1], [3]], [(0, 1, "cut the bread"), (1, 2, "cut the fish"), (2, 3, "um")])]
    lookup = WordLookup(Joint(), VERBS, NOUNS).fit(train)
    # word 0: cut x3 (egg x2, bread x1); word 1: stir x2, cut x1 (fish x3); words 2, 3: never narrated by a label
    assert lookup.table["verb"].tolist() == [0, 1, -1, -1]
    assert lookup.table["noun"].tolist() == [0, 1, -1, -1]
    assert lookup.predict(np.array([0, 1, 1])) == {"verb": 1, "noun": 1}  # word 1 twice outvotes word 0
    assert lookup.predict(np.array([0, 1])) == {"verb": 0, "noun": 0}  # a tie: the lower id
    assert lookup.predict(np.array([2, 3])) == {"verb": 0, "noun": 1}  # no labelled word: the most named
    assert lookup.predict(np.array([2, 1])) == {"verb": 1, "noun": 1}  # unlabelled words abstain


def test_factorised_words_read_the_group_that_fits_each_label():
    # motion code = the verb, look code = the noun; the other group carries nothing of each label
    clips, sentences = [], []
    for i, (v, n) in enumerate([(0, 0), (0, 1), (1, 2), (1, 0), (0, 2), (1, 1)] * 3):
        clips.append([v, n])
        sentences.append((i, i + 1, f"{VERBS[v]} the {NOUNS[n]}"))
    lookup = WordLookup(Factorised(), VERBS, NOUNS).fit([video(clips, sentences)])
    assert lookup.group == {"verb": 0, "noun": 1}
    assert lookup.table["verb"].tolist() == [0, 1] and lookup.table["noun"].tolist() == [0, 1, 2]
    assert lookup.predict(Factorised().words(np.array([[1, 0], [1, 0]]))) == {"verb": 1, "noun": 0}  # a pair never seen together


class Oracle(torch.nn.Module):
    """A model whose [MASK] states are the answers: the verb from the 1st template mask, the noun from the 2nd."""

    def forward(self, ids, seg, mask, feats=None):
        return torch.nn.functional.one_hot(ids, 8).float()

    def token_logits(self, h, candidates):
        return h[:, candidates]


def test_zero_shot_figures_on_all_seen_and_unseen_steps_beside_the_lookup():
    m = ZeroShotMetrics(VERBS, NOUNS, lookup=True)
    # four steps: the model reads token ids 0/1 at position 0 (verb) and 2..4 at position 1 (noun)
    ids = torch.tensor([[0, 2], [1, 3], [0, 4], [1, 2]])
    batch = {"input_ids": ids, "segment_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids, dtype=bool),
             "mask_positions": torch.tensor([[0, 1]] * 4), "verb_candidates": torch.tensor([0, 1]),
             "noun_candidates": torch.tensor([2, 3, 4]), "verb": torch.tensor([0, 1, 1, 1]),
             "noun": torch.tensor([0, 1, 2, 1]), "unseen": torch.tensor([False, False, True, True]),
             "lookup": torch.tensor([[0, 0], [0, 1], [1, 2], [0, 0]]), "clips": [[]] * 4}
    m.update(Oracle(), batch)
    r = m.compute()
    assert (r["steps"], r["seen_pair_steps"], r["unseen_pair_steps"]) == (4, 2, 2)
    assert r["verb_top1"] == 0.75 and r["verb_top1_seen_pairs"] == 1.0 and r["verb_top1_unseen_pairs"] == 0.5
    assert r["noun_top1"] == 0.75 and r["noun_top1_seen_pairs"] == 1.0 and r["noun_top1_unseen_pairs"] == 0.5
    assert r["verb_top1_lookup"] == 0.5 and r["verb_top1_lookup_seen_pairs"] == 0.5
    assert r["verb_top1_lookup_unseen_pairs"] == 0.5
    assert r["noun_top1_lookup"] == 0.75 and r["noun_top1_lookup_unseen_pairs"] == 0.5
    assert set(ZeroShotMetrics.RATES) >= {"verb_top1_seen_pairs", "noun_top1_lookup_unseen_pairs"}
    text = m.summary(r)
    assert "word lookup" in text and "seen pairs (n=2)" in text
