"""The visual vocabulary: hierarchical k-means (faiss) over clip features.

`levels` rounds of k-means with `k` centroids each (paper: 4 x 12 = 20,736 visual words): the root
splits all features into k clusters, each cluster is split again, and so on. A feature's word is the
path of nearest centroids, read as a base-k number. Saved as one .npz file.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import faiss
import numpy as np
import webdataset as wds

log = logging.getLogger(__name__)


class VisualVocab:
    """Maps (N, D) features to visual-word ids in [0, k ** levels)."""

    def __init__(self, centroids: list[np.ndarray], k: int, counts: np.ndarray | None = None):
        """`counts`: (k ** levels,) training clips per word, of the clips the vocabulary was fit on (for
        training-data baselines such as "always the most frequent word"; None in files from before)."""
        self.centroids = [c.astype(np.float32) for c in centroids]  # level l: (k ** (l + 1), D)
        self.counts = None if counts is None else np.asarray(counts, np.int64)
        self.k, self.levels, self.dim = k, len(centroids), centroids[0].shape[1]
        self._sq = [(c * c).sum(1) for c in self.centroids]  # |c|^2: distances as |c|^2 - 2 c.x, as faiss

    @property
    def size(self) -> int:
        return self.k ** self.levels

    def words(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {x.shape} do not match the visual vocabulary (dim {self.dim})")
        return np.concatenate([self._descend(x[i:i + 4096]) for i in range(0, len(x), 4096)] or [np.zeros(0, np.int64)])

    def _descend(self, x: np.ndarray) -> np.ndarray:
        node = np.zeros(len(x), np.int64)
        for cents, sq in zip(self.centroids, self._sq):
            if len(cents) == self.k:  # the root's children: one matmul
                dist = sq[None] - 2 * x @ cents.T
            else:  # (n, k, D): the children of each point's current node
                dist = sq.reshape(-1, self.k)[node] - 2 * np.einsum("nkd,nd->nk", cents.reshape(-1, self.k, self.dim)[node], x)
            node = node * self.k + dist.argmin(1)
        return node

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.stem + ".tmp.npz")
        extra = {} if self.counts is None else {"counts": self.counts}
        np.savez(tmp, k=self.k, **extra, **{f"level{i}": c for i, c in enumerate(self.centroids)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "VisualVocab":
        """A vocabulary file `save` wrote, or a factorised one (`videobert.factorised.FactorisedVocab`)."""
        with np.load(path, allow_pickle=False) as f:
            if "columns" in f.files:
                from .factorised import FactorisedVocab

                return FactorisedVocab.from_npz(f)
            levels = sorted(int(n[5:]) for n in f.files if n.startswith("level"))
            return cls([f[f"level{i}"] for i in levels], int(f["k"]), f["counts"] if "counts" in f.files else None)


def _kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    if len(x) == 0:
        raise ValueError("k-means on an empty set")
    if len(x) <= k:  # too few points to split: every point is a centroid, the rest repeat them
        return x[np.arange(k) % len(x)]
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, nredo=5, max_points_per_centroid=len(x),
                      min_points_per_centroid=1, verbose=False)  # best of 5 restarts: fewer bad local optima
    km.train(x)  # on every point of this node: faiss would otherwise sample 256 * k silently
    return km.centroids


def hierarchical_kmeans(x: np.ndarray, levels: int, k: int, niter: int = 20, seed: int = 0) -> VisualVocab:
    x = np.ascontiguousarray(x, np.float32)
    assign = np.zeros(len(x), np.int64)
    centroids = []
    for level in range(levels):
        cents = np.empty((k ** (level + 1), x.shape[1]), np.float32)
        for node in range(k ** level):
            members = x[assign == node]
            parent = centroids[-1][node:node + 1] if centroids else x.mean(0, keepdims=True)
            cents[node * k:(node + 1) * k] = _kmeans(members, k, niter, seed + node) if len(members) else parent
        centroids.append(cents)
        assign = VisualVocab(centroids, k).words(x)
    return VisualVocab(centroids, k)


def load_features(shards: list[str], max_points: int, seed: int = 0) -> np.ndarray:
    """All clip features of the shards, or a uniform random sample of `max_points` rows."""
    # every shard, whatever the process: (wds.WebDataset would split shards by rank under DDP, in prepare_data)
    samples = wds.tarfile_to_samples()({"url": u} for u in shards)
    rows = [np.load(io.BytesIO(s["features.npy"])) for s in samples if "features.npy" in s]
    if not rows:
        raise ValueError(f"no clip features in {shards[0]} ... ({len(shards)} shards)")
    x = np.concatenate(rows).astype(np.float32)
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    return x


def build_vocab(features: str, out: str, levels: int = 4, k: int = 12, max_points: int = 500_000,
                niter: int = 20, seed: int = 0, groups: list[list[int]] | None = None) -> Path:
    """Fit the visual vocabulary on the feature shards in the folder `features`; save it to `out` (.npz).
    `groups`: [[start, end], ...] feature columns, one vocabulary (levels x k) each: factorised visual words
    (`videobert.factorised`), e.g. the built-in extractor's appearance and motion `[[0, 104], [104, 165]]`."""
    shards = sorted(str(p) for p in Path(features).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"{features}: no .tar feature shards")
    x = load_features(shards, max_points, seed)
    if groups:
        from .factorised import FactorisedVocab, parse_groups

        cols = parse_groups(groups, x.shape[1])
        vocab = FactorisedVocab([hierarchical_kmeans(np.ascontiguousarray(x[:, a:b]), levels, k, niter, seed + g)
                                 for g, (a, b) in enumerate(cols)], cols)
    else:
        vocab = hierarchical_kmeans(x, levels, k, niter, seed)
    vocab.counts = np.bincount(vocab.words(x), minlength=vocab.size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    vocab.save(out)
    usage = word_usage(vocab.counts)
    shape = f"{len(groups)} groups x " if groups else ""
    print(f"vocab: {shape}{levels} x {k} = {vocab.size} visual words from {len(x)} clip features (dim {x.shape[1]}) -> "
          f"{out}\nvocab: {usage['words_used']} words used; training clips per used word: median "
          f"{usage['median_clips']:g}, {usage['share_below']:.0%} of them fewer than {FEW_CLIPS}")
    if usage["share_below"] > 0.5:
        log.warning("vocab: most used visual words (%.0f%%) stand for fewer than %d training clips: each inherits "
                    "the narration of a handful of clips; fewer words (levels x k) suit %d clips better",
                    100 * usage["share_below"], FEW_CLIPS, len(x))
    (Path(out).with_suffix(".json")).write_text(json.dumps(
        {"levels": levels, "k": k, "groups": groups, "points": len(x), "dim": x.shape[1], "seed": seed, **usage}))
    return Path(out)


FEW_CLIPS = 5  # a word standing for fewer training clips than this is mostly noise for zero-shot labelling


def word_usage(counts: np.ndarray) -> dict:
    """How the training clips spread over the words: words used, median clips per used word, the share of used
    words with fewer than FEW_CLIPS clips."""
    used = counts[counts > 0]
    return {"words_used": int(len(used)), "median_clips": float(np.median(used)) if len(used) else 0.0,
            "share_below": float((used < FEW_CLIPS).mean()) if len(used) else 0.0}
