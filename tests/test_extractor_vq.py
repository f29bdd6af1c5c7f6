import json

import numpy as np
import pytest

from videobert.corpus import make_corpus
from videobert.extractors import BuiltinExtractor
from videobert.video import iter_clips
from videobert.vq import VisualVocab, hierarchical_kmeans


def test_builtin_extractor_separates_actions_and_objects(tmp_path):
    """Nearest class mean on held-out videos: far above the 10% chance level for verbs and for nouns."""
    root = make_corpus(str(tmp_path), num_videos=24, seed=5, workers=2)
    truth = json.loads((root / "ground_truth.json").read_text())
    ex, rows = BuiltinExtractor(), []
    for i, (vid, info) in enumerate(sorted(truth["videos"].items())):
        clips = list(iter_clips(str(root / f"{vid}.mp4"), size=ex.size))
        feats = ex(np.stack([c for _, _, c in clips]))
        assert feats.shape[1] == ex.dim
        for (s, e, _), f in zip(clips, feats):
            step = next(st for st in info["steps"] if st["start"] <= (s + e) / 2 < st["end"])
            if step["verb"] is None:  # the closing result scene shows no action
                continue
            rows.append((i < 16, f, truth["verbs"].index(step["verb"]), truth["nouns"].index(step["noun"])))
    train = [r for r in rows if r[0]]
    test = [r for r in rows if not r[0]]
    for col, floor in ((2, 0.6), (3, 0.4)):
        means = {c: np.mean([r[1] for r in train if r[col] == c], 0) for c in {r[col] for r in train}}
        keys = list(means)
        pred = [keys[int(np.argmin([((r[1] - means[k]) ** 2).sum() for k in keys]))] for r in test]
        acc = np.mean([p == r[col] for p, r in zip(pred, test)])
        assert acc > floor, (col, acc)


def test_hierarchical_kmeans_recovers_separated_clusters(tmp_path):
    rng = np.random.default_rng(0)
    parents, children = rng.normal(0, 100, (3, 8)), rng.normal(0, 10, (3, 3, 8))
    centres = (parents[:, None] + children).reshape(9, 8)
    labels = np.repeat(np.arange(9), 50)
    x = centres[labels] + rng.normal(0, 0.5, (450, 8))
    vocab = hierarchical_kmeans(x, levels=2, k=3, seed=0)
    words = vocab.words(x)
    assert vocab.size == 9 and len(np.unique(words)) == 9
    for c in range(9):  # one word per cluster, and a word's first digit is its parent cluster
        assert len(np.unique(words[labels == c])) == 1
    assert all(len(np.unique(words[labels // 3 == p] // 3)) == 1 for p in range(3))
    vocab.save(tmp_path / "v.npz")
    again = VisualVocab.load(tmp_path / "v.npz")
    assert np.array_equal(again.words(x), words)
    # a word is the greedy path of nearest centroids
    top = np.argmin(((x[:, None] - vocab.centroids[0][None]) ** 2).sum(-1), 1)
    leaf = vocab.centroids[1].reshape(3, 3, 8)[top]
    assert np.array_equal(words, top * 3 + np.argmin(((leaf - x[:, None]) ** 2).sum(-1), 1))
    with pytest.raises(ValueError, match="dim 8"):
        vocab.words(np.zeros((2, 5)))


def test_kmeans_nodes_with_fewer_points_than_k():
    x = np.concatenate([np.zeros((20, 4)), np.ones((2, 4)) * 50])
    vocab = hierarchical_kmeans(x, levels=2, k=4, seed=0)
    assert vocab.words(x).max() < 16


def test_vocab_reports_clips_per_word_and_warns_when_most_have_few(tmp_path, capsys, caplog):
    import logging

    import webdataset as wds

    from videobert.vq import build_vocab, word_usage

    assert word_usage(np.array([0, 1, 2, 10, 0, 7])) == {"words_used": 4, "median_clips": 4.5, "share_below": 0.5}
    rng = np.random.default_rng(0)
    (tmp_path / "feat").mkdir()
    with wds.TarWriter(str(tmp_path / "feat/f-000.tar")) as w:
        w.write({"__key__": "v0", "features.npy": rng.normal(size=(30, 4)).astype(np.float16), "json": b"{}"})
    with caplog.at_level(logging.WARNING, logger="videobert.vq"):
        build_vocab(str(tmp_path / "feat"), str(tmp_path / "big.npz"), levels=2, k=4)  # 16 words for 30 clips
    assert "training clips per used word: median" in capsys.readouterr().out
    assert any("fewer than 5 training clips" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp_path / "big.json").read_text())
    assert saved["words_used"] == int((VisualVocab.load(tmp_path / "big.npz").counts > 0).sum()) and saved["share_below"] > 0.5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videobert.vq"):
        build_vocab(str(tmp_path / "feat"), str(tmp_path / "small.npz"), levels=1, k=2)  # 2 words: ~15 clips each
    assert not caplog.records
