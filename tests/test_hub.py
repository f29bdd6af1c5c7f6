"""The Hugging Face Hub round trip, with no network: the model card's model-index equals the results json; a
model loaded by repo id from a Hub cache (HF_HUB_OFFLINE=1) answers exactly as its folder; `push` uploads the
export folder (the upload intercepted)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videobert.cli import main
from videobert.model import VideoBert, VideoBertConfig
from videobert.pretrained import export
from videobert.testing import make_feature_shards, make_text_and_vocab

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESULTS = {"verb_top1": 0.8125, "verb_top1_ci_low": 0.71, "verb_top1_ci_high": 0.8912, "verb_top5": 1.0,
           "verb_top5_ci_low": 0.9566, "verb_top5_ci_high": 1.0, "steps": 48, "verb_top1_chance": 0.1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny exported model with an extractor record and zero-shot results."""
    root = tmp_path_factory.mktemp("hub")
    make_feature_shards(root / "train", [4], dim=16)
    vocab_txt, npz = make_text_and_vocab(root, root / "train", k=6)
    torch.manual_seed(0)
    text_size = sum(1 for _ in open(vocab_txt)) + 1
    model = VideoBert(VideoBertConfig(text_size, 6, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                      max_positions=48)).eval()
    from videobert.extractors import make_extractor
    from videobert.provenance import feature_provenance

    extractor = {"spec": "builtin", "fps": 20.0, "clip_frames": 30, "max_visual_words": 6,
                 "provenance": feature_provenance(make_extractor("builtin"), "builtin", 20.0, 30)}
    return export(model, root / "videobert-tiny", vocab_txt, npz, extractor=extractor,
                  results={"zero_shot": RESULTS}, data="synthetic-shards")


def test_model_card_model_index_equals_the_results_json(folder):
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "videobert" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "video-classification" and "videobert" in data["tags"]
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    figures = {k: v for k, v in RESULTS.items() if f"{k}_ci_low" in RESULTS}
    expected = {**figures, **{f"{k}_ci_{e}": RESULTS[f"{k}_ci_{e}"] for k in figures for e in ("low", "high")}}
    assert metrics == expected  # every figure with its interval, exactly the json's numbers
    assert {r.dataset_name for r in card.data.eval_results} == {"synthetic-shards"}
    assert all(r.task_type == "video-classification" and r.dataset_split == "test" for r in card.data.eval_results)
    assert "| verb_top1 | 0.8125 | 0.7100 - 0.8912 |" in card.text and "| steps | 48 | |" in card.text
    assert "`builtin` at 20.0 fps, 30 frames per clip" in card.text and 'from_pretrained("ORG/videobert-tiny")' in card.text
    assert "| hidden_size | 16 |" in card.text and 'videobert search --index my_index "crack the egg"' in card.text
    prov = json.loads((folder / "extractor.json").read_text())["provenance"]  # (carried into the card)
    assert f"- extractor weights: sha256 `{prov['extractor']['weights_sha256']}`" in card.text
    assert f"- decoder: PyAV {prov['pyav']}, FFmpeg libavcodec {prov['ffmpeg']['libavcodec']}" in card.text


def _hub_cache(folder: Path, cache: Path, repo: str) -> Path:
    """The Hugging Face cache layout: models--ORG--NAME/snapshots/<commit>/... and refs/main."""
    base = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, base / "snapshots" / COMMIT)
    (base / "refs").mkdir()
    (base / "refs/main").write_text(COMMIT)
    return base / "snapshots" / COMMIT


PROBE = """
import json, sys
import numpy as np
from videobert.api import VideoBertPipeline
from videobert.pretrained import bert_folder
from videobert.hub import model_folder
repo, local = sys.argv[1], sys.argv[2]
feats = np.random.default_rng(0).normal(size=(9, 16)).astype(np.float32)
out = {}
for name, src in (("hub", repo), ("folder", local)):
    vb = VideoBertPipeline.from_pretrained(src)
    out[name] = {"folder": str(vb.folder), "text": vb.embed_text("stir the egg now").tolist(),
                 "video": vb.embed_video(feats).tolist(), "words": vb.visual_words(feats).tolist(),
                 "rows": vb.classify(feats, ["stir", "roll", "cut"], ["egg", "dough"], spans=[(0.0, 6.0)])}
out["bert_folder"] = str(bert_folder(repo))
try:
    model_folder("ORG/not-cached")
except FileNotFoundError as err:
    out["missing"] = str(err)
print(json.dumps(out))
"""


def test_a_repo_id_loads_from_the_hub_cache_offline_exactly_as_the_folder(folder, tmp_path):
    repo = "videobert-org/videobert-tiny"
    snapshot = _hub_cache(folder, tmp_path / "cache", repo)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf_home")}
    run = subprocess.run([sys.executable, "-c", PROBE, repo, str(folder)], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(out["hub"]["folder"]).resolve() == snapshot.resolve()  # read from the cache, not the folder
    assert Path(out["bert_folder"]).resolve() == snapshot.resolve()  # (model.init_from resolves repo ids the same way)
    for key in ("text", "video", "words", "rows"):
        assert out["hub"][key] == out["folder"][key], key
    assert "ORG/not-cached: no such local folder, and not loadable from the Hugging Face Hub" in out["missing"]


def test_a_local_folder_wins_over_a_repo_id_of_the_same_spelling(folder, tmp_path, monkeypatch):
    from videobert.hub import model_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    shutil.copytree(folder, tmp_path / "org/model")
    assert model_folder("org/model") == Path("org/model")  # (no Hub call: nothing to intercept)
    with pytest.raises(FileNotFoundError, match=r"model=\./nowhere: no such folder"):
        model_folder("./nowhere")


def test_push_uploads_the_export_folder(folder, monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    main(["push", "--folder", str(folder), "--repo", "videobert-org/videobert-tiny"])
    (_, repo, create), (_, repo2, upload) = calls
    assert repo == repo2 == "videobert-org/videobert-tiny" and create["exist_ok"] and not create["private"]
    assert upload["folder_path"] == str(folder) and upload["repo_type"] == "model"
    assert sorted(upload["allow_patterns"]) == sorted(p.name for p in folder.iterdir())  # the whole export
    assert "README.md" in upload["allow_patterns"] and "token" not in upload  # (huggingface_hub finds it)
    out = capsys.readouterr()
    assert "pushed 7 files to https://huggingface.co/videobert-org/videobert-tiny" in out.out
    assert "hf_secret_token_value" not in out.out + out.err


@pytest.mark.parametrize("argv, message", [
    (["--folder", "nowhere", "--repo", "a/b"], "--folder nowhere: no such folder"),
    (["--folder", "{folder}", "--repo", "no-org"], "--repo no-org: expected a Hugging Face Hub repo id ORG/NAME"),
])
def test_push_mistakes_are_one_line(folder, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["push", *[a.format(folder=folder) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and message in err


def test_export_finds_the_test_results_of_its_checkpoint(tmp_path, monkeypatch):
    """`videobert export` puts the results of every `videobert test` run of that checkpoint on the card; runs
    of another checkpoint are left out. A relative ckpt_path is read from where the test ran."""
    from videobert.hub import find_results

    exp = tmp_path / "runs/quickstart"
    ckpt = exp / "20261203-1/checkpoints/last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (exp / "latest").symlink_to("20261203-1")
    for run, named, task in (("20261203-2-test", "runs/quickstart/latest/checkpoints/last.ckpt", "zero_shot"),
                             ("20261203-3-test", str(ckpt), "retrieval"),
                             ("20261203-4-test", "runs/other/last.ckpt", "forecasting")):
        (exp / run).mkdir()
        (exp / run / "config.yaml").write_text(f"ckpt_path: {named}\n")
        (exp / run / f"{task}_results.json").write_text(json.dumps({**RESULTS, "task": task}))
    monkeypatch.chdir(tmp_path / "runs")  # (not where the tests ran: the folder above runs/ is tried too)
    found = find_results(exp / "latest/checkpoints/last.ckpt")
    assert sorted(found) == ["retrieval", "zero_shot"] and found["zero_shot"]["verb_top1"] == RESULTS["verb_top1"]
