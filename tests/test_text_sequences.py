import pickle

import numpy as np
import pytest
import torch

from videobert.corpus import FILLERS, NOUNS, STEP_TEMPLATES, VERBS
from videobert.sequences import IGNORE, SequenceBuilder, build_sequence, collate, mask_tokens
from videobert.text import SPECIAL_TOKENS, TextTokenizer, train_wordpiece


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [t.format(verb=v, noun=n) for t in STEP_TEMPLATES for v in VERBS for n in NOUNS] + FILLERS
    return TextTokenizer(train_wordpiece(texts, tmp_path_factory.mktemp("tok"), vocab_size=300))


class FakeVocab:
    """A visual vocabulary whose word is the first feature (an int), to test sequence building alone."""

    size = 50

    def words(self, features):
        return np.asarray(features)[:, 0].astype(np.int64)


def test_tokenizer_specials_labels_and_pickling(tokenizer, tmp_path):
    assert [tokenizer.tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(6))
    ids = [tokenizer.token_id(w) for w in VERBS + NOUNS]
    assert len(set(ids)) == 20
    assert tokenizer.encode("now let me show you how to [MASK] the [MASK]").count(tokenizer.mask_id) == 2
    again = pickle.loads(pickle.dumps(tokenizer))
    assert again.encode("stir the egg") == tokenizer.encode("stir the egg")
    stock = tmp_path / "vocab.txt"  # a stock BERT vocabulary has no [>]: it is appended
    stock.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "egg"]))
    t = TextTokenizer(stock)
    assert t.bridge_id == 7 and t.vocab_size == 8
    b = SequenceBuilder(t, FakeVocab(), mask_prob=0.5)  # [>] is the last id: replacements still work
    assert b.text_pool.tolist() == [5, 6]
    with pytest.raises(ValueError, match="not one token"):
        tokenizer.token_id("stirring")


def test_sequence_layout():
    ids, seg = build_sequence([7, 8], [100, 101, 102], cls_id=2, sep_id=3, bridge_id=5)
    assert ids == [2, 7, 8, 5, 100, 101, 102, 3] and seg == [0, 0, 0, 1, 1, 1, 1, 1]
    assert build_sequence([7], [], 2, 3, 5) == ([2, 7, 3], [0, 0, 0])
    assert build_sequence([], [100], 2, 3, 5) == ([2, 5, 100, 3], [0, 1, 1, 1])


def test_masking_rates_and_specials():
    rng = np.random.default_rng(0)
    ids = np.array([2] + list(range(10, 30)) + [5] + list(range(100, 120)) + [3])
    maskable = ~np.isin(ids, [2, 3, 5])
    n_targets = kept = masked = 0
    for _ in range(2000):
        out, labels = mask_tokens(ids, maskable, rng, 0.15, mask_id=4, text_pool=np.arange(6, 100), visual_vocab=(100, 150))
        tgt = labels != IGNORE
        assert not tgt[~maskable].any() and np.array_equal(out[~maskable], ids[~maskable])
        assert np.array_equal(labels[tgt], ids[tgt]) and np.array_equal(out[~tgt], ids[~tgt])
        assert tgt.sum() == 6  # round(40 * 0.15)
        n_targets += tgt.sum()
        masked += (out[tgt] == 4).sum()
        kept += (out[tgt] == ids[tgt]).sum()
        swapped = tgt & (out != 4) & (out != ids)
        assert ((out[swapped] >= 100) == (ids[swapped] >= 100)).all()  # replacement stays in its modality
    assert masked / n_targets == pytest.approx(0.8, abs=0.02)
    assert kept / n_targets == pytest.approx(0.1 + 0.1 / 150, abs=0.02)


def test_builder_pairs_negatives_and_modes(tokenizer):
    b = SequenceBuilder(tokenizer, FakeVocab(), mask_prob=0.0, mix=(1, 0, 0), negative_prob=0.5)
    v = tokenizer.vocab_size

    def video(word):
        return {"features": np.full((4, 1), word), "json": {
            "clips": [[0, 1.5], [1.5, 3], [3, 4.5], [4.5, 6]],
            "sentences": [{"start": 0.2, "end": 3.1, "text": "stir the egg"}] * 20}}

    aligned = negatives = 0
    rng, others = np.random.default_rng(0), __import__("collections").deque(maxlen=4)
    for w in range(10):
        for ex in b.video_examples(video(w), rng, others):
            vis = ex["input_ids"][ex["segment_ids"] == 1][1:-1]
            assert len(vis) == 2  # clips whose middle lies in [0.2, 3.1)
            if ex["align_label"] == 1:
                aligned += 1
                assert (vis == v + w).all()
            else:
                negatives += 1
                assert (vis != v + w).all()
    assert negatives / (aligned + negatives) == pytest.approx(0.45, abs=0.07)  # none for the first video

    # hard negatives: the clips of another, non-neighbouring sentence of the same video
    hard = SequenceBuilder(tokenizer, FakeVocab(), mask_prob=0.0, mix=(1, 0, 0), negative_prob=1.0, hard_negatives=1.0)
    clips = [[1.5 * i, 1.5 * i + 1.5] for i in range(8)]  # word of clip i: i
    sents = [{"start": 1.5 * i, "end": 1.5 * i + 3, "text": f"step {i}"} for i in range(0, 8, 2)]  # 2 clips each
    exs = list(hard.video_examples({"features": np.arange(8)[:, None], "json": {"clips": clips, "sentences": sents}},
                                   rng, __import__("collections").deque()))
    assert len(exs) == 4 and all(ex["align_label"] == 0 for ex in exs)  # (no other video needed)
    for g, ex in enumerate(exs):
        shown = {int(t) - v for t in ex["input_ids"][ex["segment_ids"] == 1][1:-1]}
        assert len(shown) == 2 and all(abs(w // 2 - g) > 1 for w in shown)  # another sentence's clips, not a neighbour's
    with pytest.raises(ValueError, match="hard_negatives"):
        SequenceBuilder(tokenizer, FakeVocab(), hard_negatives=1.5)

    text_only = SequenceBuilder(tokenizer, FakeVocab(), mask_prob=0.0, mix=(0, 1, 0))
    ex = next(text_only.video_examples(video(3), rng, others))
    assert ex["align_label"] == IGNORE and (ex["segment_ids"] == 0).all()
    video_only = SequenceBuilder(tokenizer, FakeVocab(), mask_prob=0.0, mix=(0, 0, 1))
    ex = next(video_only.video_examples(video(3), rng, others))
    assert ex["align_label"] == IGNORE and list(ex["input_ids"]) == [2, 5] + [v + 3] * 4 + [3]


def test_collate_pads():
    exs = [{"input_ids": np.array([2, 9, 3]), "segment_ids": np.array([0, 0, 0]), "labels": np.array([-100, 9, -100]),
            "align_label": 1},
           {"input_ids": np.array([2, 3]), "segment_ids": np.array([0, 0]), "labels": np.array([-100, -100]),
            "align_label": -100}]
    b = collate(exs, pad_id=0)
    assert b["input_ids"].tolist() == [[2, 9, 3], [2, 3, 0]]
    assert b["attention_mask"].tolist() == [[True] * 3, [True, True, False]]
    assert b["labels"][1].tolist() == [-100] * 3 and b["align_label"].tolist() == [1, -100]
    assert b["input_ids"].dtype == torch.long


def test_neighbouring_sentences_and_visual_subsampling(tokenizer):
    v = tokenizer.vocab_size
    video = {"__key__": "v", "features": np.arange(40)[:, None].astype(np.float32), "json": {
        "clips": [[1.5 * i, 1.5 * i + 1.5] for i in range(40)],
        "sentences": [{"start": 6.0 * i, "end": 6.0 * i + 6.0, "text": "stir the egg"} for i in range(10)]}}

    class Identity:  # visual word = clip index
        size = 40

        def words(self, f):
            return f[:, 0].astype(np.int64)

    b = SequenceBuilder(tokenizer, Identity(), max_text_tokens=64, max_visual_words=40, mask_prob=0.0,
                        mix=(1, 0, 0), negative_prob=0.0, max_sentences=3, max_subsample=5)
    rng, lengths, rates = np.random.default_rng(0), [], set()
    n_words = len(tokenizer.encode("stir the egg"))
    for _ in range(50):
        exs = list(b.video_examples(video, rng, __import__("collections").deque()))
        covered = 0
        for ex in exs:
            text = ex["input_ids"][ex["segment_ids"] == 0][1:]
            vis = ex["input_ids"][ex["segment_ids"] == 1][1:-1] - v
            k = len(text) // n_words  # sentences in this sequence
            lengths.append(k)
            step = set(np.diff(vis).tolist()) or {None}  # (one word: no step to see)
            assert len(step) == 1 and step <= {None, 1, 2, 3, 4, 5}  # every r-th clip, r in 1..5
            rates |= step - {None}
            assert vis[0] == covered * 4 and vis[-1] < (covered + k) * 4  # the clips of exactly these sentences
            covered += k
        assert covered == 10  # every sentence used once
    assert set(lengths) == {1, 2, 3} and rates == {1, 2, 3, 4, 5}


def test_wordpiece_vocabulary_is_deterministic_and_ordered(tmp_path):
    texts = ["Stir the egg, stir it!", "flip the fish", "the egg"]
    a = train_wordpiece(texts, tmp_path / "a", vocab_size=100).read_text().split("\n")
    b = train_wordpiece(texts[::-1], tmp_path / "b", vocab_size=100).read_text().split("\n")
    assert a == b  # the same file whatever the order of the texts (and the process's hash seed)
    words = a[a.index("##t") + 1:-1]
    assert words == ["the", "egg", "stir", "fish", "flip", "it"]  # by count, ties alphabetical
    assert a[:len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and "!" in a and "##g" in a
    small = train_wordpiece(texts, tmp_path / "c", vocab_size=len(a) - 1 - 3).read_text().split("\n")
    assert "fish" not in small and "flip" not in small and "it" not in small  # the rarest words are left out
    tok = TextTokenizer(tmp_path / "c/vocab.txt")
    assert tok.decode(tok.encode("flip the fish")) == "flip the fish"  # spelt in characters instead
    with pytest.raises(ValueError, match="smaller than"):
        train_wordpiece(texts, tmp_path / "d", vocab_size=10)
