"""Any container PyAV decodes goes through shards and features: a corpus video re-encoded as AVI, WMV, FLV,
3GP, MPEG-TS, MPEG-2 and M4V gives the same clips and nearly the same features as its mp4."""
import io
import json

import av
import numpy as np
import pytest
import webdataset as wds

from videobert.corpus import make_corpus
from videobert.features import extract_features
from videobert.shards import VIDEO_EXTS, build_shards

# (extension, codec, frame size; h263 takes only its standard sizes)
CONTAINERS = [("avi", "mpeg4", 64), ("wmv", "wmv2", 64), ("flv", "flv", 64), ("3gp", "h263", 176),
              ("ts", "libx264", 64), ("mpg", "mpeg2video", 64), ("m4v", "libx264", 64)]


def transcode(src, dst, codec: str, size: int) -> None:
    """`src` re-encoded with `codec` into `dst` (its container from the extension), at the same times."""
    from PIL import Image

    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]  # (20 fps)
    rate = 25 if codec == "mpeg2video" else 20  # (MPEG-2 allows standard rates only: frames repeat in time)
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = (176, 144) if codec == "h263" else (size, size)
        stream.pix_fmt = "yuv420p"
        for j in range(len(frames) * rate // 20):
            img = np.asarray(Image.fromarray(frames[j * 20 // rate]).resize((stream.width, stream.height)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _features(folder):
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            out[s["__key__"]] = np.load(io.BytesIO(s["features.npy"])).astype(np.float32)
    return out


def test_every_container_pyav_decodes_goes_through_shards_and_features(tmp_path):
    assert {f".{ext}" for ext, _, _ in CONTAINERS} <= set(VIDEO_EXTS)
    src = tmp_path / "videos"
    make_corpus(str(src), num_videos=1, seed=3, workers=1)
    mp4 = src / "video00000.mp4"
    for ext, codec, size in CONTAINERS:
        transcode(mp4, src / f"as_{ext}.{ext}", codec, size)
        (src / f"as_{ext}.vtt").write_text((src / "video00000.vtt").read_text())
    paths = build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=4)
    members = {s["__key__"]: set(s) for p in paths for s in wds.WebDataset(str(p), shardshuffle=False)}
    for ext, _, _ in CONTAINERS:
        assert ext in members[f"as_{ext}"], ext  # (the source's extension is the member's key)
    extract_features(str(tmp_path / "shards"), str(tmp_path / "feats"), workers=1)
    feats = _features(tmp_path / "feats")
    ref = feats.pop("video00000")
    assert sorted(feats) == sorted(f"as_{ext}" for ext, _, _ in CONTAINERS)
    for key, f in feats.items():
        assert f.shape == ref.shape, key  # the same 1.5 s clips
        cos = (f * ref).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(ref, axis=1) + 1e-9)
        assert np.median(cos) > 0.9, (key, np.median(cos))  # (lossy re-encodes of the same frames)


def test_a_file_pyav_cannot_read_is_a_counted_skip_naming_it(tmp_path, capsys):
    src = tmp_path / "videos"
    make_corpus(str(src), num_videos=1, seed=3, workers=1)
    (src / "clip.avi").write_bytes(b"RIFF" + b"\0" * 400)
    (src / "clip.vtt").write_text((src / "video00000.vtt").read_text())
    build_shards(str(src), str(tmp_path / "shards"))
    out = capsys.readouterr().out
    assert "clip.avi" in out and "skipped 1" in out
    index = json.loads((tmp_path / "shards/index.json").read_text())
    assert sum(v["samples"] for v in index.values()) == 1
    with pytest.raises(FileNotFoundError, match="no videos"):
        build_shards(str(tmp_path / "shards"), str(tmp_path / "again"))  # (a folder of .tar is not of videos)
