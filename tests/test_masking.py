"""The pretraining task's options beyond BERT's masking, by hand on tiny sequences: whole-action masking,
future masking, the visual split, targets on aligned pairs only, and CBT's random clip from the batch."""
from collections import deque

import numpy as np
import pytest

from videobert.corpus import FILLERS, NOUNS, STEP_TEMPLATES, VERBS
from videobert.masking import swap_clip_features
from videobert.sequences import IGNORE, SequenceBuilder, mask_tokens
from videobert.text import TextTokenizer, train_wordpiece


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [t.format(verb=v, noun=n) for t in STEP_TEMPLATES for v in VERBS for n in NOUNS] + FILLERS
    return TextTokenizer(train_wordpiece(texts, tmp_path_factory.mktemp("tok"), vocab_size=300))


class Identity:  # visual word = the clip's first feature
    size = 40

    def words(self, f):
        return np.asarray(f)[:, 0].astype(np.int64)


def video(n_sentences=4, clips_per_sentence=4, text="stir the egg"):
    """Sentence i spans clips 4i .. 4i+3 (1.5 s each); clip c has visual word c."""
    n = n_sentences * clips_per_sentence
    return {"__key__": "v", "features": np.arange(n)[:, None].astype(np.float32), "json": {
        "clips": [[1.5 * i, 1.5 * i + 1.5] for i in range(n)],
        "sentences": [{"start": 6.0 * i, "end": 6.0 * i + 6.0, "text": text} for i in range(n_sentences)]}}


def test_future_masking_hides_the_next_sentence_with_nothing_after(tokenizer):
    v = tokenizer.vocab_size
    b = SequenceBuilder(tokenizer, Identity(), max_visual_words=6, mask_prob=0.3, mix=(1, 0, 0), negative_prob=0.0,
                        future_prob=1.0, future_clips=2)
    rng = np.random.default_rng(0)
    exs = list(b.video_examples(video(), rng, deque()))
    futures = [e for e in exs if e.get("future")]
    assert len(futures) == 3 and len(exs) == 4  # every sentence but the first (nothing before it)
    batch = b.collate(futures, rng)
    for row, first in zip(range(3), (4, 8, 12)):  # sentence k starts at clip 4k
        ids, labels = batch["input_ids"][row].numpy(), batch["labels"][row].numpy()
        real = batch["attention_mask"][row].numpy()
        seq = ids[real]
        assert seq[0] == tokenizer.cls_id and seq[1] == tokenizer.bridge_id and seq[-1] == tokenizer.sep_id
        assert (batch["segment_ids"][row].numpy()[real][1:] == 1).all()  # no text
        context = seq[2:-3] - v
        assert context.tolist() == list(range(first - 4, first))  # the 4 clips just before the sentence, unmasked
        assert (seq[-3:-1] == tokenizer.mask_id).all()  # its first two clips: [MASK], then only [SEP]
        targets = labels[labels != IGNORE] - v
        assert targets.tolist() == [first, first + 1]  # no other target, none of the masked step is visible
        assert not np.isin(np.arange(first, first + 4), context).any()


def test_whole_action_masking_masks_verb_and_noun_together(tokenizer):
    words = VERBS + NOUNS
    b = SequenceBuilder(tokenizer, Identity(), mask_prob=0.0, mix=(0, 1, 0), action_mask_prob=1.0, action_words=words)
    text = f"now {VERBS[0]} the {NOUNS[0]} slowly"
    rng = np.random.default_rng(0)
    exs = list(b.video_examples(video(1, text=text), rng, deque()))
    batch = b.collate(exs, rng)
    ids, labels = batch["input_ids"][0].numpy(), batch["labels"][0].numpy()
    label_ids = [tokenizer.token_id(w) for w in words]
    original = exs[0]["input_ids"]
    action = np.isin(original, label_ids)
    assert action.sum() == 2  # the verb and the noun
    assert (ids[:len(original)][action] == tokenizer.mask_id).all()
    assert np.array_equal(labels[:len(original)][action], original[action])
    assert (labels[:len(original)][~action] == IGNORE).all()  # mask_prob=0: nothing else
    none = SequenceBuilder(tokenizer, Identity(), mask_prob=0.0, mix=(0, 1, 0), action_mask_prob=0.0)
    assert (none.collate(exs, rng)["labels"] == IGNORE).all()
    with pytest.raises(ValueError, match="label words"):
        SequenceBuilder(tokenizer, Identity(), action_mask_prob=0.5)


def test_visual_split_and_aligned_targets_only():
    rng = np.random.default_rng(0)
    ids = np.array([2] + list(range(10, 30)) + [5] + list(range(100, 140)) + [3])
    maskable = ~np.isin(ids, [2, 3, 5])
    visual = ids >= 100
    shown = {"mask": 0, "other": 0}
    for _ in range(300):
        out, labels = mask_tokens(ids, maskable, rng, 0.3, 4, np.arange(6, 100), (100, 150), visual_split=(1, 0, 0))
        tgt = (labels != IGNORE) & visual
        shown["mask"] += int((out[tgt] == 4).sum())
        shown["other"] += int((out[tgt] != 4).sum())
    assert shown["other"] == 0 and shown["mask"] > 0  # visual targets always [MASK]


def test_aligned_targets_only_drops_targets_of_misaligned_pairs(tokenizer):
    b = SequenceBuilder(tokenizer, Identity(), mask_prob=0.5, mix=(1, 0, 0), negative_prob=0.5, aligned_targets_only=True)
    rng, others = np.random.default_rng(1), deque()
    exs = [e for _ in range(5) for e in b.video_examples(video(), rng, others)]
    batch = b.collate(exs, rng)
    align, has_target = batch["align_label"].numpy(), (batch["labels"].numpy() != IGNORE).any(1)
    assert (align == 0).any() and (align == 1).any()
    assert not has_target[align == 0].any() and has_target[align == 1].all()


def test_cbt_random_clip_is_another_clip_of_the_batch(tokenizer):
    feats = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)  # every position's features distinct
    clips = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], bool)
    swapped = np.zeros((2, 5), bool)
    swapped[0, 2] = swapped[1, 1] = True
    seen = set()
    for seed in range(50):
        out = swap_clip_features(feats, swapped, clips, np.random.default_rng(seed))
        assert np.array_equal(out[~swapped], feats[~swapped])
        for r, c in ((0, 2), (1, 1)):
            source = [(i, j) for i, j in zip(*np.nonzero(clips)) if np.array_equal(feats[i, j], out[r, c])]
            assert len(source) == 1 and source[0] != (r, c)  # another clip's features, never its own
            seen.add(source[0])
    assert len(seen) >= 4  # drawn at random among the batch's clips

    # through the builder: a CBT batch keeps the true features as targets, swaps the inputs of random targets
    b = SequenceBuilder(tokenizer, None, mask_prob=0.5, mix=(0, 0, 1), features=True, visual_split=(0, 1, 0))
    rng = np.random.default_rng(0)
    exs = list(b.video_examples(video(), rng, deque()))[:1]  # (one window: each clip once in the batch)
    batch = b.collate(exs, rng)
    tgt = (batch["labels"].numpy() != IGNORE) & (batch["segment_ids"].numpy() == 1)
    inputs, truth = batch["visual_features"].numpy(), batch["visual_targets"].numpy()
    assert tgt.any() and not np.isclose(inputs[tgt], truth[tgt]).all(-1).any()  # no target shows its own clip
    assert np.array_equal(inputs[~tgt], truth[~tgt])
