"""`videobert predict` over a folder of videos (corpus mp4s, a real mp4, a broken file), in one process and
on 2 gloo ranks: every video written once, the feature stage's visual words, a counted skip for the bad one."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wandb

from videobert.cli import lightning_main
from videobert.vq import VisualVocab

from .conftest import tiny_data_args
from .test_api import _shard_features, sample_videos
from .test_ddp import clean_env

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model.hidden_size=32", "--model.num_layers=2", "--model.num_heads=2", "--model.intermediate_size=64"]


@pytest.fixture(scope="module")
def videos(quickstart_cache, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict_in")
    for mp4 in sorted((quickstart_cache / "corpus/test").glob("*.mp4"))[:2]:
        shutil.copy(mp4, folder / mp4.name)
    shutil.copy(sample_videos() / "carphone_pristine.mp4", folder / "carphone.mp4")
    (folder / "broken.avi").write_bytes(b"RIFF" + b"\0" * 300)
    return folder


def _args(cache, pretrained, videos, root) -> list[str]:
    return ["predict", "--config", str(ROOT / "experiments/quickstart.yaml"), *MODEL,
            *[f"--data.init_args.{k}={v}" for k, v in tiny_data_args(cache).items()],
            f"--data.init_args.predict_videos={videos}", f"--ckpt_path={pretrained}",
            f"--trainer.default_root_dir={root}", "--trainer.logger=false", "--trainer.callbacks=[]",
            "--trainer.enable_progress_bar=false"]


def _read(root: Path) -> tuple[list[dict], list[dict], Path]:
    out = next(root.glob("*-predict/predictions"))
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    return rows, json.loads((out / "skipped.json").read_text()), out


def test_predict_writes_every_video_once_with_the_training_time_words(quickstart_cache, pretrained, videos, tmp_path):
    lightning_main(_args(quickstart_cache, pretrained, videos, tmp_path / "one"))
    wandb.finish()
    rows, skipped, out = _read(tmp_path / "one")
    assert [r["video"] for r in rows] == sorted(p.stem for p in videos.iterdir() if p.suffix != ".avi")
    assert [s["video"] for s in skipped] == ["broken"] and "broken.avi" in skipped[0]["error"]
    shards = _shard_features(quickstart_cache / "features/test")
    truth = json.loads((quickstart_cache / "corpus/test/ground_truth.json").read_text())
    for row in rows:
        clips, hidden = np.load(out / f"{row['video']}.clips.npy"), np.load(out / f"{row['video']}.video.npy")
        assert clips.shape == (len(row["clips"]), 32) and hidden.shape == (32,)
        assert all(z["verb"] in truth["verbs"] and z["noun"] in truth["nouns"] for z in row["zero_shot"])
        if row["video"] in shards:  # (a corpus video: the feature stage's words, clip for clip)
            assert row["visual_words"] == VisualVocab.load(quickstart_cache / "visual_vocab-2x6.npz").words(shards[row["video"]][0]).tolist()
            assert row["clips"] == shards[row["video"]][1]["clips"]

    proc = subprocess.run([sys.executable, "-m", "videobert.cli", *_args(quickstart_cache, pretrained, videos,
                                                                         tmp_path / "two"),
                           "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
                          env={**clean_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    two, skipped_two, _ = _read(tmp_path / "two")
    assert [r["video"] for r in two] == [r["video"] for r in rows] and len(skipped_two) == 1  # each video once
    assert [r["visual_words"] for r in two] == [r["visual_words"] for r in rows]

