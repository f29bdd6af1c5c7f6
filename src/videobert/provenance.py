"""Where a feature set came from: the record `videobert data features` writes into every feature sample's json
(`provenance`) and once per shard set into index.json (key `provenance`).

It holds the extractor (name, spec, settings, feature size; a transformers model's id and revision; a
sha256 of the weights, or of the settings of the weight-free built-in extractor), the decoder (PyAV and
FFmpeg library versions), the clip settings (fps, frames per clip), the frame size and crop, the stored dtype
and this package's version. `fingerprint` names what makes two feature sets comparable: everything but our
and PyAV's version numbers.
"""
from __future__ import annotations

import hashlib
import json

from .cli_errors import UsageError

CROP = "short side resized to frame_size, centre square"
DTYPE = "float16"


def weights_sha256(model) -> str:
    """The sha256 of a module's state dict (names, shapes, dtypes and bytes, in name order)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def extractor_record(model, spec: str) -> dict:
    """The extractor part of the provenance record."""
    settings = {k: list(v) if isinstance(v, tuple) else v for k in ("version", "weights", "floors", "segments")
                if isinstance(v := getattr(model, k, None), (int, float, str, tuple))}
    record = {"name": model.name, "spec": spec, "settings": settings, "dim": int(model.dim)}
    config = getattr(getattr(model, "model", None), "config", None)
    if config is not None:  # a transformers encoder: its hub id (or folder) and the commit it was read at
        record["model_id"] = getattr(config, "_name_or_path", None) or spec.removeprefix("hf:")
        record["revision"] = getattr(config, "_commit_hash", None)
    if any(True for _ in model.state_dict()):
        record["weights_sha256"] = weights_sha256(model)
    else:  # weight-free: its settings are its weights
        record["weights_sha256"] = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return record


def feature_provenance(model, spec: str, fps: float, clip_frames: int) -> dict:
    """The whole record for features extracted by `model` (made from `spec`) at `fps`, `clip_frames`."""
    import av

    from . import __version__ as ours

    libs = getattr(av, "library_versions", {}) or {}
    return {"extractor": extractor_record(model, spec), "pyav": av.__version__,
            "ffmpeg": {lib: ".".join(map(str, v)) for lib, v in sorted(libs.items())},
            "fps": float(fps), "clip_frames": int(clip_frames), "frame_size": int(model.size), "crop": CROP,
            "dtype": DTYPE, "videobert": ours}


def fingerprint(provenance: dict | None) -> str | None:
    """A short id of what makes features comparable (the record without our and PyAV's version numbers)."""
    if not provenance:
        return None
    kept = {k: v for k, v in provenance.items() if k not in ("videobert", "pyav", "ffmpeg")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def shard_set_provenance(folder) -> dict | None:
    """The provenance record of a local feature shard set (its index.json), None when it has none."""
    from pathlib import Path

    index = Path(str(folder)) / "index.json"
    try:
        return json.loads(index.read_text()).get("provenance") if index.is_file() else None
    except (OSError, ValueError):
        return None


def describe(provenance: dict | None) -> str:
    """One short phrase naming a provenance record: extractor, weights, clip settings, fingerprint."""
    if not provenance:
        return "unknown provenance (features extracted before provenance was recorded)"
    ex = provenance.get("extractor", {})
    weights = ex.get("model_id") or ex.get("name")
    return (f"extractor {ex.get('spec')} ({weights}, weights sha256 {str(ex.get('weights_sha256'))[:12]}) at "
            f"{provenance.get('fps')} fps, {provenance.get('clip_frames')} frames per clip, "
            f"{provenance.get('frame_size')} px [{fingerprint(provenance)}]")


def _local_folders(spec) -> list[str]:
    """The local folders of a shard spec: a folder, or the folders of a list of shard sets."""
    from pathlib import Path

    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    out = []
    for s in specs:
        url = s.get("urls") if isinstance(s, dict) else getattr(s, "urls", s)
        if isinstance(url, (str, Path)) and Path(str(url)).is_dir():
            out.append(str(url))
    return out


def check_provenance(shards: dict, visual_vocab: str | None, allow: bool = False) -> None:
    """Refuse shard sets of different provenance in one run, or a visual vocabulary fit on other features
    (`shards`: {split: a shard spec}; sets or vocabularies without a record pass). `allow` lets them through."""
    from pathlib import Path

    if allow:
        return
    records = [(f"{split} shards {folder}", p) for split, spec in shards.items() if spec
               for folder in _local_folders(spec) if (p := shard_set_provenance(folder))]
    first = records[0] if records else None
    for name, record in records[1:]:
        if fingerprint(record) != fingerprint(first[1]):
            raise UsageError(f"{first[0]}: {describe(first[1])}; but {name}: {describe(record)}. Features of "
                             "different provenance do not mix (set data.allow_mixed_provenance=true to train anyway)")
    sidecar = Path(str(visual_vocab)).with_suffix(".json") if visual_vocab else None
    fitted = None
    if first and sidecar is not None and sidecar.is_file():
        try:
            fitted = json.loads(sidecar.read_text()).get("features_provenance")
        except (OSError, ValueError):
            fitted = None
    if fitted and fingerprint(fitted) != fingerprint(first[1]):
        raise UsageError(f"data.visual_vocab {visual_vocab} was fit on features of {describe(fitted)}; but {first[0]}: "
                         f"{describe(first[1])} (refit it with `videobert data vocab`, or set "
                         "data.allow_mixed_provenance=true to train anyway)")
