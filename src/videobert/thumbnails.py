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
