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


def _plain_fit(x, levels, k, niter=20, seed=0):
    """The fit as it was before the per-level sort and the sample: a scan of all points per node, every point of
    each node trained on, words by gathering each point's (k, D) block of children."""
    from videobert.vq import _kmeans

    x = x.astype(np.float32)
    assign, centroids = np.zeros(len(x), np.int64), []
    for level in range(levels):
        cents = np.empty((k ** (level + 1), x.shape[1]), np.float32)
        for node in range(k ** level):
            members = x[assign == node]
            parent = centroids[-1][node:node + 1] if centroids else x.mean(0, keepdims=True)
            cents[node * k:(node + 1) * k] = _kmeans(members, k, niter, seed + node) if len(members) else parent
        centroids.append(cents)
        assign = _plain_words(centroids, k, x)
    return centroids


def _plain_words(centroids, k, x):
    node = np.zeros(len(x), np.int64)
    for cents in centroids:
        sq = (cents * cents).sum(1)
        if len(cents) == k:
            dist = sq[None] - 2 * x @ cents.T
        else:
            dist = sq.reshape(-1, k)[node] - 2 * np.einsum("nkd,nd->nk", cents.reshape(-1, k, x.shape[1])[node], x)
        node = node * k + dist.argmin(1)
    return node


def test_fit_below_the_sample_size_is_the_plain_per_node_fit_bit_for_bit():
    """Coarse (exactly tied) features, as the quickstart's: the sorted fit and the matmul descent give the same
    centroids and words as the plain loop, and a clip's word does not depend on the batch it comes in."""
    x = (np.random.default_rng(1).integers(0, 4, (1500, 12)) / 4).astype(np.float32)
    vocab = hierarchical_kmeans(x, levels=3, k=5, seed=0)  # every node far below 5 x 1024 points: no sample
    plain = _plain_fit(x, 3, 5)
    assert all(np.array_equal(a, b) for a, b in zip(vocab.centroids, plain))
    words = vocab.words(x)
    assert np.array_equal(words, _plain_words(plain, 5, x))
    assert np.array_equal(np.concatenate([vocab.words(x[i:i + 7]) for i in range(0, len(x), 7)]), words)


def test_sampled_fit_logs_its_sample_and_keeps_the_quantisation_error(caplog):
    """k-means on k x 128 points of each big node, then every point assigned: the error stays within 2% of the fit
    on all points (an anisotropic Gaussian: no cluster structure whose local optima would swamp the comparison)."""
    import logging

    from threadpoolctl import threadpool_limits

    x = (np.random.default_rng(0).normal(size=(6000, 16)) * np.linspace(0.5, 2, 16)).astype(np.float32)

    def error(vocab):
        return float(((x - vocab.centroids[-1][vocab.words(x)]) ** 2).sum(1).mean())
    # (one OpenMP thread: with another job on one of 2 cores, faiss's 2 spinning threads took 15 s here, not 0.1)
    with caplog.at_level(logging.INFO, logger="videobert.vq"), threadpool_limits(1):
        sampled = hierarchical_kmeans(x, levels=2, k=6, seed=0, points_per_centroid=128)  # nodes over 768 points
        full = hierarchical_kmeans(x, levels=2, k=6, seed=0, points_per_centroid=None)
    assert "vocab level 1/2: 1 nodes, 1 of them over 768 points trained on a sample of 768" in caplog.text
    assert "vocab level 2/2: 6 nodes, 6 of them over 768" in caplog.text
    assert abs(error(sampled) / error(full) - 1) < 0.02, (error(sampled), error(full))
