"""A folder of videos + captions (matched by file stem) -> WebDataset tar shards, one sample per video.

Sample keys (video2dataset-compatible): `__key__` (the sanitized stem), `mp4` (or the source container's
extension) holding the video bytes, `json` ({"video_id", "duration", "sentences": [...]}) and `txt`
(the transcript). Bad inputs are reported by file name and skipped; a summary is printed at the end.
A shard is written to a temp name and renamed when complete, so a rerun skips finished shards.
`index.json` beside the shards records the sample count of each shard.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import webdataset as wds

from .captions import CaptionError, read_captions
from .video import VideoError, probe_duration

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov")
CAPTION_EXTS = (".vtt", ".srt")
MIN_SECONDS = 1.5  # one clip


def sample_key(stem: str) -> str:
    """WebDataset splits member names at the first dot, so a key must not contain one."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def _find_caption(video: Path) -> Path | None:
    for ext in CAPTION_EXTS:
        if video.with_suffix(ext).exists():
            return video.with_suffix(ext)
    return None


def check_video(video: Path, min_seconds: float = MIN_SECONDS) -> dict:
    """The sample's `json` for one video, or raise CaptionError/VideoError saying why it cannot be used."""
    caption = _find_caption(video)
    if caption is None:
        raise CaptionError(f"{video}: no caption file ({' or '.join(video.stem + e for e in CAPTION_EXTS)})")
    cues = read_captions(caption)
    duration = probe_duration(str(video), name=str(video))
    if duration < min_seconds:
        raise VideoError(f"{video}: {duration:.2f} s is shorter than one {min_seconds} s clip")
    return {"video_id": video.stem, "duration": duration, "source": video.name, "sentences": cues}


def make_sample(video: Path, meta: dict) -> dict:
    """The shard sample of a checked video: its bytes under its container's extension, json and txt."""
    return {"__key__": sample_key(video.stem), video.suffix[1:].lower(): video.read_bytes(), "json": meta,
            "txt": "\n".join(c["text"] for c in meta["sentences"])}


def write_shard(path: Path, samples) -> int:
    """Write samples to `path` atomically (temp name, then rename). Returns the sample count."""
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with wds.TarWriter(str(tmp)) as sink:
        for sample in samples:
            sink.write(sample)
            n += 1
    os.replace(tmp, path)
    return n


def update_index(out_dir: Path, counts: dict[str, int]) -> None:
    index_path = out_dir / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index.update(counts)
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(index.items())), indent=1))
    os.replace(tmp, index_path)


def build_shards(videos: str, out: str, samples_per_shard: int = 32, prefix: str = "shard") -> list[Path]:
    """Build shards `{out}/{prefix}-NNNNNN.tar` from every video in `videos` that has a caption.

    Videos are checked first (caption present and non-empty, decodable, at least one clip long);
    each bad one is reported with its file name and the reason, then skipped.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise FileNotFoundError(f"{videos}: no videos ({', '.join(VIDEO_EXTS)})")
    good, skipped = [], Counter()
    for video in found:
        try:
            good.append((video, check_video(video)))
        except (CaptionError, VideoError) as err:
            skipped[type(err).__name__] += 1
            print(f"skip {err}")
    paths, counts = [], {}
    for i in range(0, len(good), samples_per_shard):
        path = out_dir / f"{prefix}-{i // samples_per_shard:06d}.tar"
        paths.append(path)
        if not path.exists():
            counts[path.name] = write_shard(path, (make_sample(v, m) for v, m in good[i:i + samples_per_shard]))
    update_index(out_dir, counts)
    print(f"shards: {len(good)} videos in {len(paths)} shards ({len(paths) - len(counts)} already done) -> "
          f"{out_dir}; skipped {sum(skipped.values())} ({dict(skipped) or 'none'})")
    return paths
