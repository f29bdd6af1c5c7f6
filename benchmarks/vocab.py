"""The visual vocabulary at the paper's 4 x 12 = 20,736 words: our hierarchical k-means against hkmeans-minibatch.

    python benchmarks/vocab.py [--n 300000] [--dim 1024] [--threads 1] [--ours_n 1000000]
    python benchmarks/vocab.py --smoke   # tiny, seconds (the tests run it)

Data: synthetic clip features, a Gaussian mixture with a hierarchy of its own (4 levels of 16 children with
Dirichlet(1) weights, offsets halving per level, unit noise; not the vocabulary's 12, so k-means has to cut it),
`--n` rows of `--dim` (S3D's 1024).
Reference: hkmeans-minibatch 1.0.2, the sklearn `MiniBatchKMeans` package the community VideoBERT used, run as
shipped (`hkmeans()` over .npy files of 500 rows in a tmpfs folder, its 15 epochs per node; the timed fit
includes its own sorting of the vectors into per-node files). It raises on a node without points; such nodes
are patched as ours treats them (the parent's centroid), and counted. Its tree is read back from the centroids
of every node.
Equal error: the quantisation error of both (mean squared distance from each feature to the centroid of its
word) must lie within 2%. Ours runs a ladder of settings (restarts, iterations, points per centroid) and the
cheapest one within 2% of the reference is compared (if none is, the closest); the ladder ends at our defaults.
Assignment: clips/s of `VisualVocab.words` (the greedy path down the tree) against a flat faiss search over the
20,736 leaf centroids (`IndexFlatL2`: the globally nearest leaf, 432x the distances); how often both give the
same word, and the error of each.
Threads: one by default. On this shared 2-core machine, with another job holding a core, two OpenMP threads
made sklearn 27x and faiss 10x slower than one (spin-waiting): the ratio would measure the neighbour.

Measured (2 cores, no GPU, 1 thread, December 2026): see docs/data.md, "Visual vocabulary at scale".
Needs hkmeans-minibatch (in `.[dev]`; pip install hkmeans-minibatch==1.0.2).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from videobert.vq import POINTS_PER_CENTROID, VisualVocab, hierarchical_kmeans  # noqa: E402

TOLERANCE = 0.02  # equal error: within 2%
# (nredo, niter, points_per_centroid), cheapest first; the last is our default
LADDER = [(1, 2, 64), (1, 5, 128), (1, 10, 256), (1, 20, 256), (2, 20, 512), (5, 20, POINTS_PER_CENTROID)]


def mixture(n: int, dim: int, depth: int = 4, branch: int = 16, scale: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 features from a tree of Gaussians: `depth` levels of `branch` children each."""
    rng = np.random.default_rng(seed)
    centres, weights = np.zeros((1, dim), np.float32), np.ones(1)
    for level in range(depth):
        offsets = rng.standard_normal((len(centres), branch, dim), np.float32) * np.float32(scale / 2 ** level)
        centres = (centres[:, None] + offsets).reshape(-1, dim)
        weights = (weights[:, None] * rng.dirichlet(np.ones(branch), len(weights))).reshape(-1)
    leaf = rng.choice(len(centres), n, p=weights / weights.sum())
    x = np.empty((n, dim), np.float32)
    for i in range(0, n, 1 << 16):  # (in blocks: no float64 temporaries of the whole set)
        block = leaf[i:i + (1 << 16)]
        x[i:i + len(block)] = centres[block] + rng.standard_normal((len(block), dim), np.float32)
    return x


def quantisation_error(leaves: np.ndarray, words: np.ndarray, x: np.ndarray) -> float:
    """Mean squared distance from each feature to the leaf centroid of its word."""
    blocks = range(0, len(x), 65536)
    return sum(float(((x[i:i + 65536] - leaves[words[i:i + 65536]]) ** 2).sum()) for i in blocks) / len(x)


def reference(x: np.ndarray, levels: int, k: int, seed: int, batch: int = 500,
              epochs: int = 15) -> tuple[VisualVocab, float, int]:
    """hkmeans-minibatch's fit: (its tree as a VisualVocab, seconds, nodes patched)."""
    import hkmeans_minibatch.hkmeans as hk

    shm = "/dev/shm" if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 3 * x.nbytes else None
    work = Path(tempfile.mkdtemp(prefix="vocab-bench-", dir=shm))
    tree, patched, fit, rng_state = {}, [0], hk.minibatch_kmeans, np.random.get_state()
    try:
        for d in ("in", "sorted", "centroids"):
            (work / d).mkdir()
        for j, i in enumerate(range(0, len(x), batch)):
            np.save(work / "in" / f"feat-{j:06d}.npy", x[i:i + batch])

        def recorded(root, prefix, k, batch_size, epochs):
            try:
                centroids, labels = fit(root, prefix, k, batch_size, epochs)
            except (AttributeError, ValueError):  # a node without points (or too few): it never fitted
                centroids, labels = _patch(root, prefix, k, tree)
                patched[0] += 1
            tree[prefix] = centroids
            return centroids, labels
        hk.minibatch_kmeans = recorded
        np.random.seed(seed)  # (its MiniBatchKMeans takes no seed: it draws from numpy's global one)
        start = time.perf_counter()
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            hk.hkmeans(str(work / "in"), "feat-", levels, k, batch, epochs, str(work / "sorted"), "vecs",
                       str(work / "centroids"))
        seconds = time.perf_counter() - start
    finally:
        hk.minibatch_kmeans = fit
        np.random.set_state(rng_state)
        shutil.rmtree(work, ignore_errors=True)
    return _tree_vocab(tree, levels, k, x.shape[1]), seconds, patched[0]


def _patch(root: str, prefix: str, k: int, tree: dict) -> tuple[np.ndarray, dict]:
    """A node hkmeans-minibatch could not fit: its points as centroids, or the parent's centroid if it has none."""
    files = [os.path.join(r, f) for r, _, names in os.walk(root) for f in names if prefix in f]  # (its matching)
    points = np.concatenate([np.load(f) for f in files]) if files else np.zeros((0, 0), np.float32)
    if len(points):
        centroids = points[np.arange(k) % len(points)]
    else:
        digits = prefix[len("vecs-"):-1].split("-")
        parent = "vecs-" + "".join(f"{d}-" for d in digits[:-1]) if len(digits) > 1 else "feat-"
        centroids = np.repeat(tree[parent][int(digits[-1])][None], k, 0)
    labels = {f: list(((np.load(f)[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)) for f in files}
    return centroids, labels


def _tree_vocab(tree: dict, levels: int, k: int, dim: int) -> VisualVocab:
    """hkmeans-minibatch names node (i, j, ...) by the file prefix vecs-i-j-...-; the root reads feat-."""
    centroids = []
    for level in range(levels):
        cents = np.empty((k ** (level + 1), dim), np.float32)
        for node in range(k ** level):
            digits = [(node // k ** p) % k for p in reversed(range(level))]
            cents[node * k:(node + 1) * k] = tree["vecs-" + "".join(f"{d}-" for d in digits) if level else "feat-"]
        centroids.append(cents)
    return VisualVocab(centroids, k)


def fit_ours(x: np.ndarray, levels: int, k: int, seed: int, setting: tuple) -> tuple[VisualVocab, float]:
    nredo, niter, per_centroid = setting
    start = time.perf_counter()
    vocab = hierarchical_kmeans(x, levels, k, niter=niter, seed=seed, nredo=nredo, points_per_centroid=per_centroid)
    return vocab, time.perf_counter() - start


def assignment(vocab: VisualVocab, x: np.ndarray, flat_rows: int) -> dict:
    """Clips/s of the tree descent and of a flat faiss search over the leaves (on the first `flat_rows`)."""
    start = time.perf_counter()
    words = vocab.words(x)
    tree_rate = len(x) / (time.perf_counter() - start)
    index = faiss.IndexFlatL2(vocab.dim)
    index.add(vocab.centroids[-1])
    sub = x[:flat_rows]
    start = time.perf_counter()
    flat = index.search(sub, 1)[1][:, 0]
    flat_rate = len(sub) / (time.perf_counter() - start)
    leaves = vocab.centroids[-1]
    return {"tree": tree_rate, "flat": flat_rate, "agree": float((words[:flat_rows] == flat).mean()),
            "tree_error": quantisation_error(leaves, words[:flat_rows], sub),
            "flat_error": quantisation_error(leaves, flat, sub)}


def setting_name(setting: tuple) -> str:
    nredo, niter, per_centroid = setting
    return f"best of {nredo}, {niter} iterations, <= {per_centroid} points/centroid"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300_000, help="features both fit on")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1, help="for faiss, sklearn and BLAS alike")
    ap.add_argument("--flat_rows", type=int, default=20_000, help="rows the flat faiss search assigns")
    ap.add_argument("--ours_n", type=int, default=0, help="also fit ours alone on this many features (0: no)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: 3,000 x 32, 2 x 6 words")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.dim, args.levels, args.k, args.flat_rows, args.ours_n = 3000, 32, 2, 6, 3000, 0
    from threadpoolctl import threadpool_limits

    faiss_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            return run(args)
    finally:
        faiss.omp_set_num_threads(faiss_threads)


def run(args: argparse.Namespace) -> dict:
    import hkmeans_minibatch

    x = mixture(args.n, args.dim, seed=args.seed)
    print(f"hierarchical k-means, {args.levels} x {args.k} = {args.k ** args.levels:,} visual words, {args.n:,} x "
          f"{args.dim} synthetic clip features (float32, {x.nbytes / 2 ** 30:.2f} GiB); {args.threads} "
          f"thread{'s' * (args.threads > 1)} of {os.cpu_count()} cores, no GPU; load average {os.getloadavg()[0]:.1f}")
    ref, ref_s, patched = reference(x, args.levels, args.k, args.seed)
    ref_err = quantisation_error(ref.centroids[-1], ref.words(x), x)
    print(f"reference hkmeans-minibatch {hkmeans_minibatch.__version__} (sklearn MiniBatchKMeans, batches of 500, "
          f"15 epochs per node): fit {ref_s:.1f} s, error {ref_err:.2f} ({patched} nodes without points patched)")
    tried = []
    for setting in LADDER:
        vocab, seconds = fit_ours(x, args.levels, args.k, args.seed, setting)
        err = quantisation_error(vocab.centroids[-1], vocab.words(x), x)
        tried.append((setting, vocab, seconds, err))
        print(f"ours ({setting_name(setting)}{'; our defaults' * (setting == LADDER[-1])}): fit {seconds:.1f} s, "
              f"error {err:.2f} ({100 * (err / ref_err - 1):+.1f}%)")
    within = [t for t in tried if abs(t[3] / ref_err - 1) <= TOLERANCE]
    pick = min(within, key=lambda t: t[2]) if within else min(tried, key=lambda t: abs(t[3] - ref_err))
    setting, vocab, seconds, err = pick
    print(f"at equal error ({'within' if within else 'NONE within'} {TOLERANCE:.0%}): ours ({setting_name(setting)}) "
          f"{err:.2f} vs reference {ref_err:.2f} ({100 * (err / ref_err - 1):+.1f}%); fit {seconds:.1f} s vs "
          f"{ref_s:.1f} s: ratio reference / ours {ref_s / seconds:.1f}x (target >= 10x)")
    a = assignment(vocab, x, args.flat_rows)
    print(f"assignment: VisualVocab.words {a['tree']:,.0f} clips/s (on {args.n:,}), faiss IndexFlatL2 over the "
          f"{len(vocab.centroids[-1]):,} leaves {a['flat']:,.0f} clips/s (on {min(args.flat_rows, args.n):,}): "
          f"{a['tree'] / a['flat']:.1f}x; same word for {100 * a['agree']:.1f}% of clips (the flat search takes the "
          f"nearest leaf, error {a['flat_error']:.2f}; the tree's path {a['tree_error']:.2f})")
    result = {"ref_seconds": ref_s, "ref_error": ref_err, "seconds": seconds, "error": err, "setting": setting,
              "within": bool(within), "ratio": ref_s / seconds, **{f"assign_{k}": v for k, v in a.items()}}
    if args.ours_n:
        big = mixture(args.ours_n, args.dim, seed=args.seed + 1)
        for s in (setting, LADDER[-1]):
            vocab, seconds = fit_ours(big, args.levels, args.k, args.seed, s)
            err = quantisation_error(vocab.centroids[-1], vocab.words(big), big)
            print(f"ours alone on {args.ours_n:,} x {args.dim} ({big.nbytes / 2 ** 30:.1f} GiB; {setting_name(s)}): "
                  f"fit {seconds:.1f} s, error {err:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share this machine: times move with it)")
    return result


if __name__ == "__main__":
    main()
