"""The visual vocabulary: hierarchical k-means (faiss) over clip features.

`levels` rounds of k-means with `k` centroids each (paper: 4 x 12 = 20,736 visual words): the root
splits all features into k clusters, each cluster is split again, and so on. A feature's word is the
path of nearest centroids, read as a base-k number. Saved as one .npz file.

Each node trains faiss k-means (`niter` 20 iterations, best of `nredo` 5 restarts) on its points, or on a
uniform sample of k x `points_per_centroid` (1024) of them where it has more (faiss alone would sample 256 x k
silently; `build_vocab` prints how many nodes were sampled); then every point descends to its nearest child.
The quickstart's 2 x 24 fit on 3,683 clips samples nothing: its centroids and words are bit for bit those of
the fit before sampling (checked on data/quickstart).

Cost (`benchmarks/vocab.py`, 2-core CPU, no GPU, one thread; 4 x 12 = 20,736 words on 300,000 x 1024
synthetic clip features): hkmeans-minibatch, the community VideoBERT's sklearn MiniBatchKMeans, 74.3 s at
quantisation error 991.1; ours at equal error (best of 1, 2 iterations, <= 64 points per centroid) 5.5 s at
989.7: 13.6x; ours at its defaults 58.3 s at 957.8 (3.4% lower). On 1,000,000 x 1024: 11.9 s at that
setting, 164 s at the defaults. `words`: 72,600 clips/s, 31x faiss's flat search over the 20,736 leaves
(which takes the globally nearest leaf: the same word for 85.5% of clips). Details: docs/data.md.
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np
import webdataset as wds

from .factorised import FactorisedVocab, parse_groups
from .provenance import shard_set_provenance
from .safe_io import atomic_path, folder_lock, write_text

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
        return np.concatenate([self._words(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)] or [np.zeros(0, np.int64)])

    def _words(self, x: np.ndarray) -> np.ndarray:
        node = np.zeros(len(x), np.int64)
        for cents, sq in zip(self.centroids, self._sq):
            node = node * self.k + _nearest_child(x, node, cents, sq, self.k)
        return node

    def save(self, path: str | Path) -> None:
        extra = {} if self.counts is None else {"counts": self.counts}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # (a file object: savez adds no .npz to its name)
            np.savez(f, k=self.k, **extra, **{f"level{i}": c for i, c in enumerate(self.centroids)})

    @classmethod
    def load(cls, path: str | Path) -> "VisualVocab":
        """A vocabulary file `save` wrote, or a factorised one (`videobert.factorised.FactorisedVocab`)."""
        with np.load(path, allow_pickle=False) as f:
            if "columns" in f.files:
                return FactorisedVocab.from_npz(f, cls)
            levels = sorted(int(n[5:]) for n in f.files if n.startswith("level"))
            return cls([f[f"level{i}"] for i in levels], int(f["k"]), f["counts"] if "counts" in f.files else None)


CHUNK = 1 << 18  # rows per block in `words`: bounds the per-node copies, amortises the per-node loop over many rows
POINTS_PER_CENTROID = 1024  # a node trains k-means on at most k x this many of its points (a uniform sample above)


def _nodes(node: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(node id, indices of its points in their original order) for each node that has points: one stable sort
    instead of a `node == n` scan of all points per node."""
    order = np.argsort(node, kind="stable")
    cuts = np.flatnonzero(np.diff(node[order])) + 1
    return [(int(node[idx[0]]), idx) for idx in np.split(order, cuts) if len(idx)]


def _nearest_child(x: np.ndarray, node: np.ndarray, cents: np.ndarray, sq: np.ndarray, k: int) -> np.ndarray:
    """The index (0..k-1) of the nearest of the k children of each point's node, on distances |c|^2 - 2 c.x as
    faiss: one (m, D) x (D, k) matmul per node present (gathering each point's (k, D) block, as this did before,
    moves k times the data)."""
    child = np.empty(len(x), np.int64)
    for n, idx in _nodes(node):
        rows = x if len(idx) == len(x) else x[idx]  # (the root: every point, no copy)
        c, s = cents[n * k:(n + 1) * k], sq[n * k:(n + 1) * k]
        dist = s[None] - 2 * rows @ c.T
        if len(cents) > k > 1:  # below the root (the root: a plain matmul, as before)
            _settle_near_ties(dist, rows, c, s)
        child[idx] = dist.argmin(1)
    return child


def _settle_near_ties(dist: np.ndarray, rows: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
    """Recompute with a per-row einsum (in place) the rows whose two nearest children are closer than the matmul's
    rounding can tell apart. BLAS rounds a row differently with the size of the batch around it, and the quickstart's
    features have exact float32 ties (0.5% of clips): so a clip's word never depends on its batch, and words stay
    those of the einsum this replaced. Any float32 dot of length D is off by at most gamma |c| |x|."""
    u = float(np.finfo(np.float32).eps) / 2
    gamma = rows.shape[1] * u / (1 - rows.shape[1] * u)
    norm, cmax = np.sqrt(np.einsum("nd,nd->n", rows, rows)), float(np.sqrt(s.max()))
    off = 4 * gamma * cmax * norm + 2 * u * (s.max() + 2 * cmax * norm)  # |matmul - einsum| bound, per distance, x2
    two = np.partition(dist, 1, axis=1)
    close = np.flatnonzero(two[:, 1] - two[:, 0] <= 2 * off)
    if len(close):
        dist[close] = s[None] - 2 * np.einsum("kd,nd->nk", c, rows[close])


def _kmeans(x: np.ndarray, k: int, niter: int, seed: int, nredo: int = 5) -> np.ndarray:
    if len(x) == 0:
        raise ValueError("k-means on an empty set")
    if len(x) <= k:  # too few points to split: every point is a centroid, the rest repeat them
        return x[np.arange(k) % len(x)]
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, nredo=nredo, max_points_per_centroid=len(x),
                      min_points_per_centroid=1, verbose=False)  # best of nredo restarts: fewer bad local optima
    km.train(x)  # on every point given: faiss would otherwise sample 256 * k silently (the caller samples)
    return km.centroids


def hierarchical_kmeans(x: np.ndarray, levels: int, k: int, niter: int = 20, seed: int = 0, nredo: int = 5,
                        points_per_centroid: int | None = POINTS_PER_CENTROID) -> VisualVocab:
    """Fit `levels` x `k` visual words on (N, D) features. Each node trains faiss k-means (`niter` iterations, best
    of `nredo` restarts) on its points, or on a uniform sample of k x `points_per_centroid` of them where it has
    more (None: always all); then every point descends to its nearest child, as `VisualVocab.words` does."""
    x = np.ascontiguousarray(x, np.float32)
    cap = len(x) if points_per_centroid is None else k * points_per_centroid
    node, centroids = np.zeros(len(x), np.int64), []
    for level in range(levels):
        start, sampled = time.perf_counter(), 0
        parents = centroids[-1] if centroids else x.mean(0, keepdims=True)
        cents = np.repeat(parents, k, axis=0)  # a node without points keeps its parent's centroid
        for n, idx in _nodes(node):
            if len(idx) > cap:  # sorted: the sample keeps the points' order
                idx, sampled = np.sort(np.random.default_rng(seed + n).choice(idx, cap, replace=False)), sampled + 1
            cents[n * k:(n + 1) * k] = _kmeans(x[idx], k, niter, seed + n, nredo)
        centroids.append(cents)
        sq = (cents * cents).sum(1)
        node = np.concatenate([node[i:i + CHUNK] * k + _nearest_child(x[i:i + CHUNK], node[i:i + CHUNK], cents, sq, k)
                               for i in range(0, len(x), CHUNK)] or [node])
        log.info("vocab level %d/%d: %d nodes, %d of them over %d points trained on a sample of %d, %.1f s",
                 level + 1, levels, k ** level, sampled, cap, cap, time.perf_counter() - start)
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
                niter: int = 20, seed: int = 0, nredo: int = 5,
                points_per_centroid: int | None = POINTS_PER_CENTROID, groups: list[list[int]] | None = None) -> Path:
    """Fit the visual vocabulary on the feature shards in the folder `features`; save it to `out` (.npz).

    Args:
        features: a folder of feature shards written by `videobert data features`.
        out: the vocabulary file to write (.npz).
        levels: levels of the hierarchical k-means (the paper: 4).
        k: clusters per node (the paper: 12); the vocabulary has k ** levels visual words.
        max_points: at most this many clips are read from the shards (a uniform sample).
        niter: k-means iterations per node.
        seed: the random seed of sampling and k-means.
        nredo: k-means restarts per node (the best is kept).
        points_per_centroid: a node with more than k x this many clips trains its k-means on a uniform
            sample of that many (None: on all).
        groups: [[start, end], ...] feature columns, one vocabulary (levels x k) each: factorised visual
            words (`videobert.factorised`), e.g. the built-in extractor's appearance and motion
            `[[0, 104], [104, 165]]`.
    """
    shards = sorted(str(p) for p in Path(features).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"--features {features}: no .tar feature shards (expected the --out folder of "
                                "`videobert data features`)")
    build = {"levels": levels, "k": k, "groups": groups, "seed": seed, "niter": niter, "nredo": nredo,
             "points_per_centroid": points_per_centroid, "max_points": max_points,
             "shards": [[Path(p).name, Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in shards]}
    with folder_lock(out, "vocab"):  # (jobs fitting one file take turns; it is renamed into place whole)
        sidecar = Path(out).with_suffix(".json")
        if Path(out).is_file() and sidecar.is_file() and json.loads(sidecar.read_text()).get("build") == build:
            print(f"vocab: {out} was fitted on these shards with these settings; reused")
            return Path(out)
        return _build_vocab(shards, out, levels, k, max_points, niter, seed, nredo, points_per_centroid, groups,
                            build)


def _build_vocab(shards: list[str], out: str, levels: int, k: int, max_points: int, niter: int, seed: int, nredo: int,
                 points_per_centroid: int | None, groups: list[list[int]] | None, build: dict) -> Path:
    x = load_features(shards, max_points, seed)
    cols = [(0, x.shape[1])]
    if groups:
        cols = parse_groups(groups, x.shape[1])
    parts = [hierarchical_kmeans(np.ascontiguousarray(x[:, a:b]), levels, k, niter, seed + g, nredo, points_per_centroid)
             for g, (a, b) in enumerate(cols)]
    vocab = FactorisedVocab(parts, cols) if groups else parts[0]
    words = vocab.words(x)
    vocab.counts = np.bincount(words, minlength=vocab.size)
    cap = len(x) if points_per_centroid is None else k * points_per_centroid
    codes = vocab.codes(words) if groups else words[:, None]  # (each part's words, without assigning again)
    sampled = sum(_sampled_nodes(part, codes[:, g], cap) for g, part in enumerate(parts))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    vocab.save(out)
    usage = word_usage(vocab.counts)
    shape = f"{len(groups)} groups x " if groups else ""
    nodes = len(parts) * sum(k ** i for i in range(levels))
    print(f"vocab: {shape}{levels} x {k} = {vocab.size} visual words from {len(x)} clip features (dim {x.shape[1]}) -> "
          f"{out}\nvocab: {usage['words_used']} words used; training clips per used word: median "
          f"{usage['median_clips']:g}, {usage['share_below']:.0%} of them fewer than {FEW_CLIPS}\n"
          f"vocab: k-means ({niter} iterations, best of {nredo}) per node on all its clips up to {cap}, on a uniform "
          f"sample of {cap} above: {sampled} of {nodes} nodes sampled")
    if usage["share_below"] > 0.5:
        log.warning("vocab: most used visual words (%.0f%%) stand for fewer than %d training clips: each inherits "
                    "the narration of a handful of clips; fewer words (levels x k) suit %d clips better",
                    100 * usage["share_below"], FEW_CLIPS, len(x))
    write_text(Path(out).with_suffix(".json"), json.dumps(
        {"levels": levels, "k": k, "groups": groups, "points": len(x), "dim": x.shape[1], "seed": seed, "niter": niter,
         "nredo": nredo, "points_per_centroid": points_per_centroid, "sampled_nodes": sampled, **usage,
         "features_provenance": shard_set_provenance(Path(shards[0]).parent), "build": build}))  # (what a later job compares to reuse this file)
    return Path(out)


def _sampled_nodes(vocab: VisualVocab, words: np.ndarray, cap: int) -> int:
    """How many nodes of the tree held more than `cap` of the points (`words`: theirs), so their k-means
    trained on a sample."""
    counts = np.bincount(words, minlength=vocab.size)
    return sum(int((counts.reshape(vocab.k ** level, -1).sum(1) > cap).sum()) for level in range(vocab.levels))


FEW_CLIPS = 5  # a word standing for fewer training clips than this is mostly noise for zero-shot labelling


def word_usage(counts: np.ndarray) -> dict:
    """How the training clips spread over the words: words used, median clips per used word, the share of used
    words with fewer than FEW_CLIPS clips."""
    used = counts[counts > 0]
    return {"words_used": int(len(used)), "median_clips": float(np.median(used)) if len(used) else 0.0,
            "share_below": float((used < FEW_CLIPS).mean()) if len(used) else 0.0}
