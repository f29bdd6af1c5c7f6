"""Video decoding with PyAV: any container and frame rate -> fixed-fps clips of fixed size.

Frames are resampled to `fps` by timestamp (target time n / fps takes the first decoded frame later than
n / fps - 0.5 / fps: nearest-frame resampling, which also handles variable frame rate), resized so the short side is `size` and centre-cropped to a square.
Only one clip is held in memory, so long videos stream through.
"""
from __future__ import annotations

import io
from typing import Iterator

import av
import numpy as np


class VideoError(ValueError):
    """A video that cannot be decoded; the message names the source and the reason."""


def _open(source: str | bytes, name: str):
    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"{name}: cannot open video ({err})") from None


def probe_duration(source: str | bytes, name: str = "video") -> float:
    """Duration in seconds, read from the stream header or, failing that, by decoding."""
    with _open(source, name) as container:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        last = 0.0
        for frame in container.decode(stream):
            last = float(frame.time or 0.0)
        return last


def _to_square(frame: av.VideoFrame, size: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = frame.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return rgb[top:top + size, left:left + size]


def iter_clips(source: str | bytes, fps: float = 20.0, clip_frames: int = 30, size: int = 32,
               name: str = "video", min_fill: float = 0.5) -> Iterator[tuple[float, float, np.ndarray]]:
    """Yield (start_s, end_s, frames[clip_frames, size, size, 3] uint8) for consecutive clips.

    A trailing partial clip is kept (padded with its last frame) when it holds at least `min_fill`
    of a clip, and dropped otherwise.
    """
    clip_s = clip_frames / fps
    buf: list[np.ndarray] = []
    n, latest = 0, None
    with _open(source, name) as container:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) - t0 if frame.time is not None else n / fps
                latest = None
                while t + 0.5 / fps >= n / fps:  # this frame is the nearest one for target time n / fps
                    latest = latest if latest is not None else _to_square(frame, size)
                    buf.append(latest)
                    n += 1
                    if len(buf) == clip_frames:
                        start = (n - clip_frames) / fps
                        yield start, start + clip_s, np.stack(buf)
                        buf = []
        except av.FFmpegError as err:
            raise VideoError(f"{name}: decoding failed at {n / fps:.2f} s ({err})") from None
    if buf and len(buf) >= min_fill * clip_frames:
        start = (n - len(buf)) / fps
        buf += [buf[-1]] * (clip_frames - len(buf))
        yield start, start + clip_s, np.stack(buf)
