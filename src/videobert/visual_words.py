"""The paper's figure of visual words: for a few centroids, the clips nearest to each (their middle frames).

Drawn at the end of fit from the DataModule's local test feature shards, its visual vocabulary and its
thumbnail source (see thumbnails.py); saved as `visual_words.png` in the run folder and logged to W&B.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from .streaming import shard_urls
from .tasks.figures import example_grid, publish
from .thumbnails import Clip, ThumbnailSource, clips_of, warn_once


def read_feature_shards(tars: list[str | Path], max_videos: int | None = None) -> list[tuple[str, np.ndarray, dict]]:
    """(key, features (T, D) float32, json) of the videos in local feature shards (.tar files), in shard order."""
    videos: dict[str, dict] = {}
    for tar in tars:
        with tarfile.open(tar) as f:
            for m in f:
                key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                if ext in ("features.npy", "json") and (max_videos is None or key in videos or len(videos) < max_videos):
                    data = f.extractfile(m).read()
                    videos.setdefault(key, {})[ext] = (np.load(io.BytesIO(data), allow_pickle=False) if ext != "json"
                                                       else json.loads(data))
    return [(k, v["features.npy"].astype(np.float32), v["json"]) for k, v in videos.items()
            if "features.npy" in v and "json" in v]


def _squared_distances(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(clips, centroids) squared Euclidean distances."""
    return (centroids * centroids).sum(1)[None] - 2 * feats @ centroids.T + (feats * feats).sum(1)[:, None]


def nearest_per_word(videos: list[tuple[str, np.ndarray, dict]], centroids: np.ndarray, words: int = 12,
                     per_word: int = 8, chunk_floats: int = 1 << 24) -> list[tuple[int, int, list[Clip]]]:
    """The `words` visual words most used by these clips, each with its use count and the `per_word` clips
    nearest to its (leaf) centroid: [(word, clips assigned, nearest clips)]. The clips are assigned in chunks
    of at most `chunk_floats` distances (a full clips x 20,736-word matrix would take gigabytes); the nearest
    clips are then found among the distances to the chosen words alone."""
    feats = np.concatenate([f for _, f, _ in videos])
    refs = [c for key, f, meta in videos for c in clips_of(key, meta, range(len(f)))]
    step = max(1, chunk_floats // len(centroids))
    assigned = np.concatenate([_squared_distances(feats[i:i + step], centroids).argmin(1)
                               for i in range(0, len(feats), step)])
    counts = np.bincount(assigned, minlength=len(centroids))
    chosen = [int(w) for w in np.argsort(-counts, kind="stable")[:words] if counts[w]]
    d = _squared_distances(feats, centroids[chosen])  # (clips, chosen words)
    return [(w, int(counts[w]), [refs[i] for i in np.argsort(d[:, j], kind="stable")[:per_word]])
            for j, w in enumerate(chosen)]


def visual_words_figure(features: list[str | Path], centroids: np.ndarray, source: ThumbnailSource, words: int = 12,
                        per_word: int = 8, max_videos: int = 200):
    """The paper's figure of visual words: per row, one centroid's nearest clips (their middle frames).
    `features`: local feature shards (.tar files) whose videos `source` holds; `centroids`: the leaf
    centroids (visual vocabulary size, D). Returns a PIL image."""
    videos = read_feature_shards(features, max_videos)
    if not videos:
        raise FileNotFoundError(f"{[str(f) for f in features][:3]}: no feature shards with features.npy and json")
    rows = [{"visual word": f"word {w}: {n} clips", "nearest clips": clips}
            for w, n, clips in nearest_per_word(videos, centroids, words, per_word)]
    wanted = [c for r in rows for c in r["nearest clips"]]
    frames = dict(zip(wanted, source(wanted)))
    return example_grid(rows, frames, f"visual words: the {per_word} clips nearest to {len(rows)} centroids "
                                      f"(of {len(centroids)}), from {len(videos)} videos")


def local_test_shards(dm) -> list[Path]:
    """The local .tar files of the DataModule's test split, resolved as its stream resolves them (folders, brace
    patterns, lists of shard sets); `pipe:` and remote URLs are left out."""
    try:
        urls = [u for s in dm._shard_sets("test") for u in shard_urls(s.urls)]
    except (FileNotFoundError, ValueError) as err:
        warn_once(f"no visual-words figure: the test shards cannot be resolved ({err})")
        return []
    return [Path(u) for u in urls if u.endswith(".tar") and Path(u).is_file()]


def publish_visual_words(trainer, words: int = 12, per_word: int = 8) -> Path | None:
    """`visual_words_figure` for the trainer's DataModule (its local test feature shards, visual vocabulary and
    thumbnail source), saved as `<default_root_dir>/visual_words.png` and logged to W&B as `media/visual_words`.
    Call it on every rank (e.g. at the end of fit); rank 0 draws. None when there is nothing to draw."""
    dm = trainer.datamodule
    if not trainer.is_global_zero:
        return None
    source = dm.thumbnail_source() if hasattr(dm, "thumbnail_source") else None
    vocab = getattr(dm, "vocab", None)
    if source is None or vocab is None or not hasattr(dm, "_shard_sets") or dm._paths().get("test") is None:
        warn_once("no visual-words figure: it needs a visual vocabulary, data.test_shards and data.thumbnails")
        return None
    test = local_test_shards(dm)
    if not test:
        warn_once("no visual-words figure: data.test_shards has no local .tar shards (remote or `pipe:` only)")
        return None
    img = visual_words_figure(test, vocab.centroids[-1], source, words, per_word)
    return publish(trainer, {"visual_words": img}, prefix="media/")[0]
