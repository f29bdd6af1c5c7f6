"""DDP correctness of the data path: 2 CPU processes (gloo), each run in a clean subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videobert.testing import make_feature_shards, make_text_and_vocab

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SIZES = [1, 2, 3, 5, 9]  # videos per shard: deliberately uneven
VAL_SIZES = [1, 6, 2]  # 2 sentences each: readers of 12 and 6 sequences -> 3 and 2 batches of 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    train = make_feature_shards(root / "train", TRAIN_SIZES, sentences=3, prefix="train")
    val = make_feature_shards(root / "val", VAL_SIZES, sentences=2, seed=1, prefix="val")
    make_text_and_vocab(root, root / "train")
    return root, train, val


def clean_env() -> dict:
    """No distributed variables inherited from the parent, the repo importable, W&B offline."""
    drop = {"MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PL_", "TORCHELASTIC", "VIDEOBERT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    env["WANDB_MODE"] = "offline"
    return env


def run_ddp(script: list[str], timeout: int = 300) -> None:
    proc = subprocess.run([sys.executable, *script], env=clean_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def read_ranks(prefix: Path) -> list[dict]:
    return [json.loads(Path(f"{prefix}.rank{r}.json").read_text()) for r in (0, 1)]


def test_exact_mode_every_sample_once_equal_batches(shards, tmp_path):
    root, train_keys, val_keys = shards
    run_ddp(["tests/ddp_stream.py", str(root), "exact", str(tmp_path / "out")])
    ranks = read_ranks(tmp_path / "out")
    # uneven shards, equal batches per rank: the fullest reader has 27 sequences -> 7 batches x 2 workers x 2 epochs
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 28
    for epoch in (0, 1):
        seen = [{k for b, e in zip(r["train"], r["epochs"]) if e == epoch for k in b} for r in ranks]
        assert seen[0] | seen[1] == set(train_keys)  # every video's sentences reached training this epoch
        assert not seen[0] & seen[1]  # and no video was read by both ranks
    orders = [[k for b, e in zip(ranks[0]["train"], ranks[0]["epochs"]) if e == epoch for k in b] for epoch in (0, 1)]
    assert orders[0] != orders[1]  # a new shuffle every epoch
    val = [{k for b in r["val"] for k in b} for r in ranks]
    assert val[0] | val[1] == set(val_keys) and not val[0] & val[1]  # every validation sample once per rank set
    assert sorted(len(r["val"]) for r in ranks) == [2 * 2, 2 * 3]  # uneven validation (2 epochs), and no hang


def test_resampled_mode_equal_batches_different_streams(shards, tmp_path):
    root, train_keys, _ = shards
    run_ddp(["tests/ddp_stream.py", str(root), "resampled", str(tmp_path / "out")])
    ranks = read_ranks(tmp_path / "out")
    assert [len(r["train"]) for r in ranks] == [12, 12]  # batches_per_epoch=6 (3 per worker) x 2 epochs
    assert ranks[0]["steps"] == ranks[1]["steps"] == 12
    assert ranks[0]["train"] != ranks[1]["train"]  # each rank and worker draws its own shards
    assert {k for r in ranks for b in r["train"] for k in b} <= set(train_keys)


def test_feature_extraction_two_processes(tmp_path):
    import webdataset as wds

    from videobert.corpus import make_corpus
    from videobert.shards import build_shards

    make_corpus(str(tmp_path / "videos"), num_videos=5, seed=3, workers=1)
    build_shards(str(tmp_path / "videos"), str(tmp_path / "raw"), samples_per_shard=1)
    (tmp_path / "raw/zz-corrupt.tar").write_bytes(b"not a tar" * 50)
    cmd = ["-m", "videobert.cli", "data", "features", "--shards", str(tmp_path / "raw"), "--out",
           str(tmp_path / "feat"), "--workers", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp"]
    run_ddp(cmd)
    outs = sorted((tmp_path / "feat").glob("*.tar"))
    assert [p.name for p in outs] == [f"shard-{i:06d}.tar" for i in range(5)]  # the corrupt one left out
    keys = [s["__key__"] for p in outs for s in wds.WebDataset(str(p), shardshuffle=False, empty_check=False)]
    assert sorted(keys) == [f"video{i:05d}" for i in range(5)]  # each video in exactly one output shard
    index = json.loads((tmp_path / "feat/index.json").read_text())
    shards = sorted(k for k in index if k.endswith(".tar"))  # (besides them: the set's provenance)
    assert shards == [p.name for p in outs] and not list((tmp_path / "feat").glob("*.part"))
    assert not list((tmp_path / "feat").glob("*.tmp"))


def test_the_quickstart_config_fits_and_tests_on_two_ranks_with_fewer_eval_shards_than_readers(quickstart_cache,
                                                                                                tmp_path):
    """The quickstart yaml itself under 2-process DDP (its tiny cache: val and test are one shard each, fewer
    than the 2 readers): validation and test split the samples of the shards they have."""
    from .conftest import tiny_data_args

    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()]
    common = ["--config", "experiments/quickstart.yaml", *data, "--model.hidden_size=32", "--model.num_layers=1",
              "--model.num_heads=2", "--model.intermediate_size=64", "--trainer.accelerator=cpu",
              "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    val_index = json.loads((quickstart_cache / "features/val/index.json").read_text())
    assert len([k for k in val_index if k.endswith(".tar")]) == 1  # (the case)
    run_ddp(["-m", "videobert.cli", "fit", *common, "--trainer.max_steps=4", "--trainer.val_check_interval=2",
             "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0",
             "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: "
             "{save_last: true}}]"])
    ckpt = next((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))
    run_ddp(["-m", "videobert.cli", "test", *common, f"--ckpt_path={ckpt}", "--trainer.callbacks=[]"])
    results = json.loads(next((tmp_path / "runs").glob("*-test/zero_shot_results.json")).read_text())
    truth = json.loads((quickstart_cache / "corpus/test/ground_truth.json").read_text())
    steps = sum(s["verb"] is not None for v in truth["videos"].values() for s in v["steps"])
    assert results["steps"] == steps  # every test step once over both ranks
