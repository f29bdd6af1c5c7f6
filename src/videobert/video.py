"""Video decoding with PyAV: any container and frame rate -> fixed-fps clips of fixed size.

Frames are resampled to `fps` by timestamp (target time n / fps takes the decoded frame nearest to it,
which also handles variable frame rate), turned upright as a player shows them (the display-matrix
rotation, in steps of 90 degrees; flips are ignored), resized so the short side is `size` and
centre-cropped to a square. Only the first video stream is decoded; audio and other streams are ignored.
Only one clip is held in memory, so long videos stream through.
"""
from __future__ import annotations

import io
import itertools
from collections.abc import Iterator

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
    # frame.rotation is counter-clockwise degrees (FFmpeg's av_display_rotation_get); players (ffplay's
    # autorotate) show the picture turned by it, so np.rot90 (counter-clockwise for k > 0) does the same.
    rgb = np.rot90(rgb, k=round(frame.rotation / 90) % 4)
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return rgb[top:top + size, left:left + size]


def _nearest(frames: Iterator[av.VideoFrame], t0: float, fps: float, size: int) -> Iterator[np.ndarray]:
    """Decoded frames (display order) -> one image per target time n / fps: the nearest frame's.

    The last frame also stands for targets up to half a target period after it; a frame without a
    timestamp is placed one target period after the previous one.
    """
    n, last_t, last = 0, -1 / fps, None
    for frame in itertools.chain(frames, [None]):
        t = float(frame.time) - t0 if frame is not None and frame.time is not None else last_t + 1 / fps
        image = None
        while last is not None and n / fps < (last_t + t) / 2:  # target n is nearer to `last` than to `frame`
            image = image if image is not None else _to_square(last, size)
            yield image
            n += 1
        last_t, last = t, frame


def iter_clips(source: str | bytes, fps: float = 20.0, clip_frames: int = 30, size: int = 32,
               name: str = "video", min_fill: float = 0.5) -> Iterator[tuple[float, float, np.ndarray]]:
    """Yield (start_s, end_s, frames[clip_frames, size, size, 3] uint8) for consecutive clips.

    A trailing partial clip is kept (padded with its last frame) when it holds at least `min_fill`
    of a clip, and dropped otherwise.
    """
    clip_s = clip_frames / fps
    buf: list[np.ndarray] = []
    n = 0
    with _open(source, name) as container:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            for image in _nearest(container.decode(stream), t0, fps, size):
                buf.append(image)
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
