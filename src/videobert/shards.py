"""A folder of videos + captions -> WebDataset tar shards, one sample per video.

Captions are matched by file stem (`<stem>.vtt`, `.srt` or `.json`), or looked up by stem in one
corpus-wide caption file (HowTo100M `caption.json`, YouCook2 annotations; see captions.py).

Sample keys (video2dataset-compatible): `__key__` (the sanitized stem), `mp4` (or the source container's
extension) holding the video bytes, `json` ({"video_id", "duration", "sentences": [...]}) and `txt`
(the transcript). Bad inputs are reported by file name and skipped; a summary is printed at the end.
A shard is written to a temp name and renamed when complete, so a rerun skips finished shards; jobs that
build one folder at once take turns (a lock beside it), so the second reuses the first one's shards.
`index.json` beside the shards records the sample count of each shard.
"""
from __future__ import annotations

import json
import re
import tarfile
import time
from collections import Counter
from pathlib import Path

import webdataset as wds

from .captions import CaptionError, read_caption_index, read_captions
from .safe_io import atomic_path, folder_lock, sweep_temps, write_text
from .video import VideoError, probe_duration

# containers PyAV (FFmpeg) decodes; a member of a shard keeps its source's extension as its key (video2dataset
# style: `mp4`, `avi`, ...). UCF101 and HMDB51 are AVI, camcorders write MTS/M2TS, older web video FLV/3GP/WMV.
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv",
              ".f4v", ".3gp", ".3g2", ".ogv", ".wmv", ".asf", ".vob", ".mxf", ".divx", ".y4m")
CAPTION_EXTS = (".vtt", ".srt", ".json")  # .json: HowTo100M per-video lists or a YouCook2 per-video object
MIN_SECONDS = 1.5  # one clip


def sample_key(stem: str) -> str:
    """WebDataset splits member names at the first dot, so a key must not contain one."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def _find_caption(video: Path) -> Path | None:
    for ext in CAPTION_EXTS:
        if video.with_suffix(ext).exists():
            return video.with_suffix(ext)
    return None


def check_video(video: Path, min_seconds: float = MIN_SECONDS, cues: list[dict] | None = None) -> dict:
    """The sample's `json` for one video, or raise CaptionError/VideoError saying why it cannot be used.

    `cues`: the video's captions when they come from a corpus-wide file; otherwise the caption file
    beside the video is read.
    """
    if cues is None:
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


def count_sentences(meta) -> int:
    meta = json.loads(meta) if isinstance(meta, (bytes, str)) else meta
    return len(meta.get("sentences") or [])


def tar_writer(path: str | Path) -> wds.TarWriter:
    """A shard writer with whole-second member times: a float time would add a pax header to every member,
    which doubles the cost of reading the shard back."""
    return wds.TarWriter(str(path), mtime=int(time.time()))


def write_shard(path: Path, samples) -> dict:
    """Write samples to `path` atomically (a temp name of this process, then rename; a full disk is one line,
    with nothing left under either name). Returns its index entry."""
    entry = {"samples": 0, "sentences": 0}
    with atomic_path(path) as tmp, tar_writer(tmp) as sink:
        for sample in samples:
            sink.write(sample)
            entry["samples"] += 1
            entry["sentences"] += count_sentences(sample.get("json", {}))
    return {**entry, "bytes": path.stat().st_size}


def scan_shard(path: Path) -> dict:
    """The index entry of an existing shard, read from its `json` members (a shard that cannot be read
    is reported and counted as empty: the stream will skip it and count that)."""
    entry, size = {"samples": 0, "sentences": 0}, path.stat().st_size
    try:
        if size % 512:  # (a tar is whole 512-byte blocks: a shard cut short by a kill or a full disk is not)
            raise tarfile.ReadError(f"truncated: {size} bytes is not a whole number of 512-byte tar blocks")
        with tarfile.open(path) as tar:
            for member in tar:
                if member.offset_data + member.size > size:
                    raise tarfile.ReadError(f"truncated: {member.name} ends past the end of the file")
                if member.name.endswith(".json"):
                    entry["samples"] += 1
                    entry["sentences"] += count_sentences(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, ValueError) as err:
        print(f"index: {path} cannot be read ({type(err).__name__}: {err}); counted as empty")
        return {"samples": 0, "sentences": 0, "error": str(err)}
    return {**entry, "bytes": path.stat().st_size}


def update_index(out_dir: Path, entries: dict[str, dict]) -> None:
    """Merge {shard name: {"samples", "sentences"}} into `out_dir/index.json` (written atomically; concurrent
    writers take turns, so no job's entries are lost)."""
    index_path = out_dir / "index.json"
    with folder_lock(index_path, "index"):
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        index.update(entries)
        write_text(index_path, json.dumps(dict(sorted(index.items())), indent=1))


def load_index(folder: Path, names: list[str]) -> dict[str, dict]:
    """Index entries of the shards `names` in `folder`. Entries missing from index.json (or the whole
    file), or recorded for a file of another size, are rebuilt by reading the shards and written back;
    a shard that cannot be read counts as empty now and is not recorded, so it is read again next time."""
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    stale = [n for n in names if not isinstance(index.get(n), dict)
             or index[n].get("bytes", (folder / n).stat().st_size) != (folder / n).stat().st_size]
    if stale:
        print(f"index: counting {len(stale)} shard(s) in {folder} missing from or stale in {index_path.name}")
        fresh = {n: scan_shard(folder / n) for n in stale}
        update_index(folder, {n: e for n, e in fresh.items() if "error" not in e})
        index = {**json.loads(index_path.read_text()), **fresh} if index_path.exists() else fresh
    return {n: index[n] for n in names}


def _indexed_cues(index: dict[str, list[dict]], video: Path, captions: str) -> list[dict]:
    if video.stem not in index:
        raise CaptionError(f"{video}: no captions with words for {video.stem!r} in {captions}")
    return index[video.stem]


def read_labels(path: str) -> dict[str, dict]:
    """A per-video labels file: {video stem: {field: value, ...}} (e.g. `{"sentiment": "negative"}`)."""
    labels = json.loads(Path(path).read_text())
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise ValueError(f"{path}: expected a json object {{video stem: {{field: value}}}}")
    return labels


def build_shards(videos: str, out: str, samples_per_shard: int = 32, prefix: str = "shard",
                 captions: str | None = None, labels: str | None = None) -> list[Path]:
    """Build shards `{out}/{prefix}-NNNNNN.tar` from every video in `videos` that has a caption.

    Videos are checked first (caption present and non-empty, decodable, at least one clip long);
    each bad one is reported with its file name and the reason, then skipped.

    Args:
        videos: a folder of videos (mp4, webm, mkv, avi, mov), each with its caption file beside it.
        out: the folder for the shards (finished shards are kept: a rerun resumes).
        samples_per_shard: videos per shard.
        prefix: the shards' file name prefix.
        captions: a corpus-wide caption file (HowTo100M caption.json or YouCook2 annotations json), read
            once and looked up by video stem; without it, each video's caption file is found beside it.
        labels: a json file {video stem: {field: value}} whose fields are added to each video's `json`
            (per-video labels for fine-tuning tasks, e.g. sentiment); a video it does not name gets none.
    """
    out_dir = Path(out)
    with folder_lock(out_dir, "shards"):  # (a second job waits, then finds the shards done)
        sweep_temps(out_dir, "*.tar")  # (a killed job's)
        return _build_shards(Path(videos), out_dir, samples_per_shard, prefix, captions, labels)


def _build_shards(videos: Path, out_dir: Path, samples_per_shard: int, prefix: str, captions: str | None,
                  labels: str | None) -> list[Path]:
    found = sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith("."))
    if not found:
        raise FileNotFoundError(f"--videos {videos}: no videos ({', '.join(VIDEO_EXTS)})")
    index = read_caption_index(captions) if captions else None
    extra = read_labels(labels) if labels else {}
    good, skipped = [], Counter()
    for video in found:
        try:
            cues = None if index is None else _indexed_cues(index, video, captions)
            good.append((video, {**extra.get(video.stem, {}), **check_video(video, cues=cues)}))
        except (CaptionError, VideoError) as err:
            skipped[type(err).__name__] += 1
            print(f"skip {err}")
    if not good:
        raise FileNotFoundError(f"--videos {videos}: none of its {len(found)} videos is usable ({dict(skipped)}; "
                                "each is listed above with the reason)")
    out_dir.mkdir(parents=True, exist_ok=True)
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
