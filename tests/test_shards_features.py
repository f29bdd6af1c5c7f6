import io
import json
import shutil

import av
import numpy as np
import webdataset as wds

from videobert.corpus import make_corpus, write_mp4
from videobert.features import extract_features
from videobert.shards import build_shards


def _members(tar):
    return list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))


def test_shards_report_bad_inputs_and_resume(tmp_path, capsys):
    src = tmp_path / "videos"
    make_corpus(str(src), num_videos=4, seed=1, workers=1)
    shutil.copy(src / "video00000.mp4", src / "no.caption.mp4")  # missing caption (and a dotted stem)
    shutil.copy(src / "video00000.mp4", src / "empty.mp4")
    (src / "empty.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n \n")
    (src / "broken.mp4").write_bytes(b"garbage" * 100)
    shutil.copy(src / "video00001.vtt", src / "broken.vtt")
    shutil.copy(src / "video00002.vtt", src / "latin1.srt")
    shutil.copy(src / "video00002.mp4", src / "latin1.mp4")
    (src / "latin1.srt").write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("latin-1"))
    with open(src / "video00003.mp4", "rb") as f:  # a truncated mp4 that still has a caption
        (src / "trunc.mp4").write_bytes(f.read()[:300])
    shutil.copy(src / "video00003.vtt", src / "trunc.vtt")
    write_mp4(src / "short.mp4", [np.full((32, 32, 3), 99, np.uint8)] * 20, fps=20, size=32)  # 1 s < one clip
    shutil.copy(src / "video00003.vtt", src / "short.vtt")

    paths = build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=3)
    out = capsys.readouterr().out
    for name in ("no.caption.mp4", "empty.vtt", "broken.mp4", "latin1.srt", "trunc.mp4", "short.mp4"):
        assert name in out, name
    assert "shorter than one 1.5 s clip" in out and "skipped 6" in out
    samples = [s for p in paths for s in _members(p)]
    assert sorted(s["__key__"] for s in samples) == [f"video{i:05d}" for i in range(4)]
    meta = json.loads(samples[0]["json"])
    assert set(meta) >= {"video_id", "duration", "sentences"} and samples[0]["mp4"][4:8] == b"ftyp"
    index = json.loads((tmp_path / "shards/index.json").read_text())
    assert {k: v["samples"] for k, v in index.items()} == {"shard-000000.tar": 3, "shard-000001.tar": 1}
    sentences = [len(json.loads(s["json"])["sentences"]) for s in samples]
    assert sum(v["sentences"] for v in index.values()) == sum(sentences)

    mtimes = [p.stat().st_mtime_ns for p in paths]
    build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=3)
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # finished shards are skipped
    assert "2 already done" in capsys.readouterr().out
    assert not list((tmp_path / "shards").glob("*.tmp"))


def test_features_one_row_per_clip(tmp_path, capsys):
    src = tmp_path / "videos"
    truth = make_corpus(str(src), num_videos=3, seed=2, workers=1) / "ground_truth.json"
    build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=2)
    (tmp_path / "shards/zz-corrupt.tar").write_bytes(b"not a tar file" * 100)
    paths = extract_features(str(tmp_path / "shards"), str(tmp_path / "feats"), workers=1)
    assert "1 shards unreadable" in capsys.readouterr().out and len(paths) == 2
    videos = json.loads(truth.read_text())["videos"]
    for s in (s for p in paths for s in _members(p)):
        feats = np.load(io.BytesIO(s["features.npy"]))
        meta = json.loads(s["json"])
        assert feats.dtype == np.float16 and feats.ndim == 2
        assert len(feats) == len(meta["clips"]) == round(videos[meta["video_id"]]["duration"] / 1.5)
        assert meta["clips"][1] == [1.5, 3.0] and "mp4" not in s and "txt" in s
    index = json.loads((tmp_path / "feats/index.json").read_text())
    assert {k: v["samples"] for k, v in index.items() if k.endswith(".tar")} == {"shard-000000.tar": 2,
                                                                                 "shard-000001.tar": 1}
    prov = index["provenance"]  # once per shard set, and in every sample
    assert all(json.loads(s["json"])["provenance"] == prov for p in paths for s in _members(p))
    assert prov["extractor"]["name"] == "builtin" and len(prov["extractor"]["weights_sha256"]) == 64
    assert (prov["fps"], prov["clip_frames"], prov["frame_size"], prov["dtype"]) == (20.0, 30, 32, "float16")
    assert prov["pyav"] == av.__version__ and prov["ffmpeg"]["libavcodec"] and prov["videobert"] == "0.1.0"
