"""Raw shards -> feature shards: one feature row per 1.5 s clip (paper: 30 frames at 20 fps).

Each output sample keeps the input's keys and adds `features.npy` ((T, D) float16) and, in `json`,
`clips` ([[start, end], ...] seconds) and `feature_extractor`. Shards are processed in parallel
processes; each output shard is written atomically and skipped when it already exists. A sample whose
video cannot be decoded is reported by key and shard, counted, and left out.
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import webdataset as wds

from .extractors import make_extractor
from .shards import VIDEO_EXTS, update_index, write_shard
from .video import VideoError, iter_clips


def clip_features(video: bytes, extractor, fps: float, clip_frames: int, name: str, batch: int = 64):
    """(features (T, D) float16, clips [[start, end], ...]) for one video's bytes."""
    feats, spans, pending = [], [], []
    for start, end, frames in iter_clips(video, fps=fps, clip_frames=clip_frames, size=extractor.size, name=name):
        spans.append([round(start, 3), round(end, 3)])
        pending.append(frames)
        if len(pending) == batch:
            feats.append(extractor(np.stack(pending)))
            pending = []
    if pending:
        feats.append(extractor(np.stack(pending)))
    if not feats:
        raise VideoError(f"{name}: shorter than one clip")
    return np.concatenate(feats).astype(np.float16), spans


def _video_bytes(sample: dict) -> bytes:
    for ext in VIDEO_EXTS:
        if ext[1:] in sample:
            return sample[ext[1:]]
    raise VideoError(f"sample {sample.get('__key__')}: no video member ({', '.join(e[1:] for e in VIDEO_EXTS)})")


def _feature_samples(src: str, extractor_name: str, fps: float, clip_frames: int, errors: list):
    extractor = make_extractor(extractor_name)
    for sample in wds.WebDataset(src, shardshuffle=False, empty_check=False):
        name = f"{src}:{sample['__key__']}"
        try:
            meta = json.loads(sample["json"])
            feats, spans = clip_features(_video_bytes(sample), extractor, fps, clip_frames, name)
        except (VideoError, KeyError, ValueError) as err:
            errors.append(str(err))
            print(f"skip {err}")
            continue
        meta.update(clips=spans, feature_extractor=extractor_name, fps=fps)
        buf = io.BytesIO()
        np.save(buf, feats)
        out = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
        out.update({"features.npy": buf.getvalue(), "json": json.dumps(meta).encode()})
        yield out


def _one_shard(job: tuple) -> tuple[str, int | None, int]:
    """-> (shard name, samples written or None if the shard itself is unreadable, samples skipped)."""
    src, dst, extractor_name, fps, clip_frames = job
    errors: list[str] = []
    try:
        n = write_shard(Path(dst), _feature_samples(src, extractor_name, fps, clip_frames, errors))
    except Exception as err:  # a corrupt tar must not stop the other shards; it is reported and left out
        Path(dst + ".tmp").unlink(missing_ok=True)
        print(f"skip shard {src}: {type(err).__name__}: {err}")
        return Path(dst).name, None, len(errors)
    return Path(dst).name, n, len(errors)


def extract_features(shards: str, out: str, extractor: str = "builtin", fps: float = 20.0,
                     clip_frames: int = 30, workers: int = 2) -> list[Path]:
    """Extract features for every `*.tar` in the folder `shards` into `out` (same shard names)."""
    make_extractor(extractor)  # fail fast on an unknown name
    srcs = sorted(Path(shards).glob("*.tar"))
    if not srcs:
        raise FileNotFoundError(f"{shards}: no .tar shards")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(s), str(out_dir / s.name), extractor, fps, clip_frames) for s in srcs
            if not (out_dir / s.name).exists()]
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        done = list(pool.map(_one_shard, jobs))
    update_index(out_dir, {name: n for name, n, _ in done if n is not None})
    failed = [name for name, n, _ in done if n is None]
    print(f"features: {len(jobs) - len(failed)} shards extracted ({len(srcs) - len(jobs)} already done, "
          f"{len(failed)} unreadable), {sum(n or 0 for _, n, _ in done)} videos, "
          f"{sum(e for _, _, e in done)} skipped -> {out_dir}")
    return [out_dir / s.name for s in srcs if (out_dir / s.name).exists()]
