"""`videobert data verify-features`: two extractions of the same clips agree (cosine 1, exit 0); a perturbed set
and an extraction with other settings are named and fail (exit 1)."""
import io
import json
import tarfile

import numpy as np
import pytest

from videobert.cli import main
from videobert.corpus import make_corpus
from videobert.features import extract_features
from videobert.shards import build_shards


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The same raw shards extracted twice with the built-in extractor, and once at 10 fps."""
    root = tmp_path_factory.mktemp("parity")
    make_corpus(str(root / "videos"), num_videos=3, seed=4, workers=1)
    build_shards(str(root / "videos"), str(root / "shards"), samples_per_shard=2)
    for name, fps in (("a", 20.0), ("b", 20.0), ("slow", 10.0)):
        extract_features(str(root / "shards"), str(root / name), fps=fps, workers=1, trainer=None)
    return root


def _perturb(src, dst, video_id, rng):
    """A copy of the feature shards `src` where one video's features are replaced by unrelated ones."""
    dst.mkdir()
    for tar in sorted(src.glob("*.tar")):
        with tarfile.open(tar) as tf, tarfile.open(dst / tar.name, "w") as out:
            members = [(m, tf.extractfile(m).read()) for m in tf if m.isfile()]
            metas = {m.name.split(".")[0]: json.loads(b) for m, b in members if m.name.endswith(".json")}
            for m, data in members:
                key = m.name.split(".")[0]
                if m.name.endswith(".features.npy") and metas[key]["video_id"] == video_id:
                    arr = np.load(io.BytesIO(data))
                    buf = io.BytesIO()
                    np.save(buf, rng.normal(size=arr.shape).astype(arr.dtype))
                    data = buf.getvalue()
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "verify-features", *argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_two_extractions_of_the_same_clips_agree(extracted, tmp_path, capsys):
    code, out, err = _run(["--shards", str(extracted / "a"), "--reference", str(extracted / "b"),
                           "--out", str(tmp_path / "report.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["videos"] == 3 and report["median_cosine"] == pytest.approx(1, abs=1e-6)
    assert report["p5_cosine"] == pytest.approx(1, abs=1e-6) and not report["provenance_differences"]
    assert not report["clip_count_mismatches"] and "verify-features: ok (3 videos" in out


def test_a_perturbed_video_is_named_and_fails(extracted, tmp_path, capsys):
    _perturb(extracted / "b", tmp_path / "bad", "video00001", np.random.default_rng(0))
    code, out, err = _run(["--shards", str(extracted / "a"), "--reference", str(tmp_path / "bad"),
                           "--min_cosine", "0.99"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "5th percentile cosine" in err and "worst: video00001 (" in err
    worst = out.split("worst videos: ")[1].split(",")[0].split()
    assert worst[0] == "video00001" and abs(float(worst[1])) < 0.5  # unrelated features: cosine near 0
    assert "per-video cosine: median 1.0000" in out  # (the other two still agree)


def test_other_extraction_settings_show_as_clip_counts_and_provenance(extracted, capsys):
    code, out, err = _run(["--shards", str(extracted / "a"), "--reference", str(extracted / "slow")], capsys)
    assert code == 1 and "3 videos with other clip counts" in err
    assert "provenance differs: feature_fps: [20.0] vs [10.0] in the reference" in out
    assert "clip count differs: video00000:" in out


def test_a_missing_reference_is_one_line(extracted, capsys):
    code, _, err = _run(["--shards", str(extracted / "a"), "--reference", "nowhere"], capsys)
    assert code == 2 and "--reference nowhere: no such folder" in err


def test_a_reextracted_sample_agrees(extracted, capsys):
    code, out, err = _run(["--shards", str(extracted / "a"), "--reextract", "2", "--raw", str(extracted / "shards")],
                          capsys)
    assert code == 0, err
    assert "extracting 2 videos of" in out and "(builtin, 20.0 fps, 30 frames per clip)" in out
    assert "videos in both sets: 2 (only in shards: 1," in out and "verify-features: ok (2 videos" in out
