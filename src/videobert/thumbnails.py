"""Thumbnails of test clips, for example tables and figures: the middle frame of a clip, from the video bytes.

Feature shards keep no pixels (`keep_video` false), so a clip is named by a `Clip` (its sample key, its
index and its span in seconds, as the feature shard's `json.clips` gives them) and its frame is read
from a *thumbnail source*: a folder of shards whose samples hold the video bytes under the same key
(the raw shards of `videobert data shards`, or feature shards written with `--keep_video true`).
Only the clips shown in examples are decoded: a video is read from its shard once and each requested
frame is found by seeking to the keyframe before it and decoding forward, so the frame equals the one
`video.iter_clips` puts in the middle of the clip (the frame nearest to the clip's middle time).
A clip that cannot be shown (no source, a key missing from it, an undecodable video) has no thumbnail:
the caller draws an empty cell, and the reason is logged once.
"""
from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from .shards import VIDEO_EXTS, sample_key
from .video import _to_square

log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning the first time this process sees it (one missing source must not flood the log)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class Clip(NamedTuple):
    """One clip of a video: the shard sample's key, the clip's index and span (s) in its feature row order.
    (A NamedTuple, so it travels through Lightning's batch transfer and `all_gather_object` unchanged.)"""

    video: str
    index: int
    start: float
    end: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2

    def as_json(self) -> dict:
        return {"video": self.video, "clip": self.index, "start": self.start, "end": self.end}


def clips_of(key: str, meta: dict, indices) -> list[Clip]:
    """`Clip`s of a video for clip indices (spans from the feature shard's `json.clips`)."""
    return [Clip(key, int(i), float(meta["clips"][i][0]), float(meta["clips"][i][1])) for i in indices]


def spread(items: list, n: int) -> list:
    """At most `n` items, evenly spaced, first and last kept (a strip that still shows the whole step)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, n)]


def frames_at(video: bytes, times: list[float], size: int, name: str) -> list[np.ndarray]:
    """The (size, size, 3) uint8 frame nearest to each time (s from the stream's start), as iter_clips sees it."""
    out = []
    with av.open(io.BytesIO(video)) as container:
        if not container.streams.video:
            raise ValueError(f"{name}: no video stream")
        stream = container.streams.video[0]
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for t in times:
            container.seek(max(0, int((t0 + t) / stream.time_base)), stream=stream, backward=True)
            before = None  # the last frame at or before t; a tie goes to the later frame, as in video._nearest
            for frame in container.decode(stream):
                ft = float(frame.time) - t0 if frame.time is not None else None
                if ft is None or ft < t:
                    before = (ft, frame) if ft is not None else before
                    continue
                if before is not None and t - before[0] < ft - t:
                    frame = before[1]
                break
            else:
                if before is None:
                    raise ValueError(f"{name}: no frame near {t:.2f} s")
                frame = before[1]
            out.append(_to_square(frame, size))
    return out


class ThumbnailSource:
    """Clip thumbnails from a folder of shards that hold each video's bytes under its sample key."""

    def __init__(self, shards: str | Path, size: int = 96):
        self.folder, self.size = Path(shards), size
        self._where: dict[str, tuple[Path, str]] | None = None  # key -> (tar file, video member name)
        self._cache: dict[Clip, np.ndarray | None] = {}

    def _index(self) -> dict[str, tuple[Path, str]]:
        """Read the member names of every shard once (tar headers only; the video bytes are skipped)."""
        if self._where is None:
            self._where = {}
            tars = sorted(self.folder.glob("*.tar")) if self.folder.is_dir() else []
            if not tars:
                warn_once(f"thumbnails: {self.folder} is not a folder of .tar shards; examples have no images")
            for tar in tars:
                try:
                    with tarfile.open(tar) as f:
                        for m in f.getmembers():
                            base = m.name.rsplit("/", 1)[-1]
                            key, _, ext = base.partition(".")
                            if f".{ext.lower()}" in VIDEO_EXTS:
                                self._where[key] = (tar, m.name)
                except (tarfile.TarError, OSError) as err:
                    warn_once(f"thumbnails: cannot read {tar} ({err}); its videos have no thumbnails")
        return self._where

    def __call__(self, clips: list[Clip]) -> list[np.ndarray | None]:
        """The middle frame of each clip, or None where it cannot be had (logged once per reason)."""
        todo: dict[str, list[Clip]] = {}
        for c in clips:
            if c not in self._cache:
                todo.setdefault(c.video, []).append(c)
        for video, wanted in todo.items():
            frames = self._decode(video, sorted(set(wanted), key=lambda c: c.middle))
            self._cache.update(zip(sorted(set(wanted), key=lambda c: c.middle), frames))
        return [self._cache[c] for c in clips]

    def _decode(self, video: str, clips: list[Clip]) -> list[np.ndarray | None]:
        where = self._index().get(video) or self._index().get(sample_key(video))
        if where is None:
            warn_once(f"thumbnails: video {video!r} is not in {self.folder} (give the raw shards of the test split)")
            return [None] * len(clips)
        tar, member = where
        try:
            with tarfile.open(tar) as f:
                data = f.extractfile(member).read()
            return frames_at(data, [c.middle for c in clips], self.size, f"{tar}:{member}")
        except (tarfile.TarError, OSError, ValueError, av.FFmpegError) as err:
            warn_once(f"thumbnails: {tar}:{member} cannot be decoded ({err}); its clips have no thumbnails")
            return [None] * len(clips)


def read_feature_shards(tars: list[str | Path], max_videos: int | None = None) -> list[tuple[str, np.ndarray, dict]]:
    """(key, features (T, D) float32, json) of the videos in local feature shards (.tar files), in shard order."""
    import json

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
    from .tasks.figures import example_grid

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
    from data_modules.videobert import _urls

    try:
        urls = [u for s in dm._shard_sets("test") for u in _urls(s.urls)]
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
    from .tasks.figures import publish  # (figures imports this module)

    img = visual_words_figure(test, vocab.centroids[-1], source, words, per_word)
    return publish(trainer, {"visual_words": img}, prefix="media/")[0]
