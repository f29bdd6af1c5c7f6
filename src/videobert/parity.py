"""Do two feature shard sets of the same videos agree? `videobert data verify-features --shards A --reference B`.

For every video in both sets (matched by `video_id`, else by sample key): the cosine similarity of each clip's
feature row with the reference's, averaged over the video's clips; then the median and 5th percentile over
videos, the worst videos by name, the videos whose clip counts differ, the videos only one set has, and the
provenance fields (the extractor, its settings, fps, clip frames, dtype and feature size) that differ.
`--reextract N --raw SHARDS` extracts N of the videos again, as the shards record they were made, and
compares with that. The check fails (exit status 1) when the 5th percentile is under `min_cosine`, when clip counts or feature sizes
differ, or when the sets share no video: a re-extraction should match within float16 rounding.
"""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .cli_errors import UsageError
from .provenance import shard_set_provenance
from .safe_io import OneLineError, write_text

# json fields of a feature sample that say how its features were made
PROVENANCE = ("feature_extractor", "feature_fps", "feature_clip_frames", "fps", "provenance")


class ParityFailed(OneLineError):
    """Two feature sets that should agree do not."""


def read_features(folder: str | Path, option: str) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """({video: (clips, D) float32 features}, {video: its provenance fields}) of every `*.tar` in `folder`."""
    tars = sorted(Path(folder).glob("*.tar"))
    if not tars:
        raise UsageError(f"--{option} {folder}: no .tar shards; expected a folder written by `videobert data features`")
    feats, prov = {}, {}
    for tar in tars:
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(tar) as tf:
                for member in tf:
                    key, _, ext = member.name.partition(".")
                    if ext in ("features.npy", "json") and member.isfile():
                        samples.setdefault(key, {})[ext] = tf.extractfile(member).read()
        except (tarfile.TarError, OSError) as err:
            raise UsageError(f"--{option} {tar}: not a readable shard ({err})") from None
        for key, s in samples.items():
            if "features.npy" not in s:
                continue
            meta = json.loads(s["json"]) if "json" in s else {}
            arr = np.load(io.BytesIO(s["features.npy"]), allow_pickle=False)
            name = str(meta.get("video_id", key))
            feats[name] = arr.astype(np.float32)
            prov[name] = {**{k: meta[k] for k in PROVENANCE if k in meta}, "dtype": str(arr.dtype),
                          "feature_dim": int(arr.shape[1]) if arr.ndim == 2 else None}
    if not feats:
        raise UsageError(f"--{option} {folder}: no sample with features.npy; expected feature shards")
    return feats, prov


def video_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The mean over clips of the cosine similarity of matching rows (the shorter video's clips)."""
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), (np.abs(a - b).max(1) == 0).astype(float))
    return float(cos.mean()) if n else float("nan")


def compare(shards: str, reference: str, worst: int = 5) -> dict:
    """The parity report of `shards` against `reference` (see the module's docstring)."""
    fa, pa = read_features(shards, "shards")
    fb, pb = read_features(reference, "reference")
    common = sorted(set(fa) & set(fb))
    dims = sorted({name for name in common if fa[name].shape[1:] != fb[name].shape[1:]})
    cos = {name: video_cosine(fa[name], fb[name]) for name in common if name not in dims}
    values = np.array([v for v in cos.values() if np.isfinite(v)])
    differ = {}
    for field in sorted({k for p in (*pa.values(), *pb.values()) for k in p}):
        ours = sorted({json.dumps(p.get(field), sort_keys=True) for p in pa.values()})
        theirs = sorted({json.dumps(p.get(field), sort_keys=True) for p in pb.values()})
        if ours != theirs:
            differ[field] = {"shards": [json.loads(x) for x in ours], "reference": [json.loads(x) for x in theirs]}
    return {"videos": len(common), "only_in_shards": sorted(set(fa) - set(fb)),
            "only_in_reference": sorted(set(fb) - set(fa)),
            "median_cosine": float(np.median(values)) if len(values) else None,
            "p5_cosine": float(np.percentile(values, 5)) if len(values) else None,
            "worst": [[name, cos[name]] for name in sorted(cos, key=lambda n: cos[n])[:worst]],
            "clip_count_mismatches": {n: [len(fa[n]), len(fb[n])] for n in common if len(fa[n]) != len(fb[n])},
            "feature_size_mismatches": dims, "provenance_differences": differ}


def verify_features(shards: str, reference: str | None = None, min_cosine: float = 0.99, worst: int = 5,
                    out: str | None = None, reextract: int = 0, raw: str | None = None, seed: int = 0) -> dict:
    """Compare two feature shard sets of the same videos: per-video cosine similarity (median, 5th percentile,
    the worst videos), clip-count mismatches and provenance differences; exit status 1 when they disagree.

    Args:
        shards: a folder of feature shards (`videobert data features`), e.g. yours.
        reference: a folder of feature shards of the same videos, e.g. released ones or a re-extraction.
        min_cosine: the lowest 5th-percentile per-video cosine similarity that passes.
        worst: how many of the least similar videos to name.
        out: also write the report as json to this file.
        reextract: instead of a reference, extract this many videos of `raw` again, with the extractor and
            clip settings `shards` records, and compare with those.
        raw: the raw shards (`videobert data shards`) that `shards` was extracted from (for `reextract`).
        seed: which videos `reextract` picks.
    """
    if reextract:
        with tempfile.TemporaryDirectory(prefix="verify-features-") as tmp:
            reference = _reextract(shards, raw, reextract, seed, Path(tmp))
            return verify_features(shards, reference, min_cosine, worst, out)
    if reference is None:
        raise UsageError("give --reference (a feature shard set of the same videos) or --reextract N --raw SHARDS")
    report = compare(shards, reference, worst)
    for line in summary(report):
        print(line)
    if out:
        write_text(Path(out), json.dumps(report, indent=1))
    why = failures(report, min_cosine)
    if why:
        raise ParityFailed(f"verify-features: {shards} does not match {reference}: {'; '.join(why)}")
    print(f"verify-features: ok ({report['videos']} videos, 5th percentile cosine {report['p5_cosine']:.4f} "
          f">= {min_cosine})")
    return report


def _video_keys(tar: Path) -> set[str]:
    with tarfile.open(tar) as tf:
        return {m.name.split(".")[0] for m in tf if m.isfile()}


def _reextract(shards: str, raw: str | None, n: int, seed: int, tmp: Path) -> str:
    """Extract `n` videos of the raw shards `raw` again, as `shards` records it was made; returns the folder."""
    from .features import extract_features

    if raw is None or not Path(raw).is_dir():
        raise UsageError(f"--raw {raw}: expected the folder of raw shards (`videobert data shards`) for --reextract")
    prov = shard_set_provenance(shards) or {}
    spec, fps, frames = prov.get("extractor", {}).get("spec"), prov.get("fps"), prov.get("clip_frames")
    if not (spec and fps and frames):  # (no provenance in the index: the first sample's json says)
        first = next(iter(read_features(shards, "shards")[1].values()))
        spec = spec or first.get("feature_extractor", "builtin")
        fps, frames = fps or first.get("feature_fps", 20.0), frames or first.get("feature_clip_frames", 30)
    tars = sorted(Path(raw).glob("*.tar"))
    keys = sorted(set().union(*(_video_keys(tar) for tar in tars)))  # (tar headers only: no video is read)
    picked = {keys[i] for i in np.random.default_rng(seed).choice(len(keys), min(n, len(keys)), replace=False)}
    (tmp / "raw").mkdir()
    with tarfile.open(tmp / "raw/sample-000000.tar", "w") as out:  # (the picked videos' members, in tar order)
        for tar in tars:
            with tarfile.open(tar) as tf:
                for m in tf:
                    if m.isfile() and m.name.split(".")[0] in picked:
                        out.addfile(m, tf.extractfile(m))
    print(f"verify-features: extracting {len(picked)} videos of {raw} again ({spec}, {fps} fps, {frames} frames per clip)")
    extract_features(str(tmp / "raw"), str(tmp / "features"), extractor=spec, fps=fps, clip_frames=frames, workers=1,
                     trainer=None)
    return str(tmp / "features")


def failures(report: dict, min_cosine: float) -> list[str]:
    why = []
    if not report["videos"]:
        why.append("no video in both sets")
    if report["p5_cosine"] is not None and report["p5_cosine"] < min_cosine:
        names = ", ".join(f"{n} ({c:.3f})" for n, c in report["worst"] if c < min_cosine)
        why.append(f"5th percentile cosine {report['p5_cosine']:.4f} < {min_cosine} (worst: {names})")
    if report["clip_count_mismatches"]:
        why.append(f"{len(report['clip_count_mismatches'])} videos with other clip counts")
    if report["feature_size_mismatches"]:
        why.append(f"{len(report['feature_size_mismatches'])} videos with other feature sizes")
    return why


def summary(report: dict) -> list[str]:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"videos in both sets: {report['videos']} (only in shards: {len(report['only_in_shards'])}, only in "
             f"reference: {len(report['only_in_reference'])})",
             f"per-video cosine: median {fmt(report['median_cosine'])}, 5th percentile {fmt(report['p5_cosine'])}",
             "worst videos: " + (", ".join(f"{n} {c:.4f}" for n, c in report["worst"]) or "none")]
    for name, (a, b) in sorted(report["clip_count_mismatches"].items())[:10]:
        lines.append(f"clip count differs: {name}: {a} vs {b} in the reference")
    for field, d in report["provenance_differences"].items():
        lines.append(f"provenance differs: {field}: {d['shards']} vs {d['reference']} in the reference")
    return lines
