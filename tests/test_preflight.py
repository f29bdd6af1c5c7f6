"""Broken shards mid-run (truncated, unreadable, another dtype or dimension) and the DDP preflight's numbers."""
import io
import logging
import shutil

import numpy as np
import pytest
import webdataset as wds

from data_modules import VideoBertDataModule
from videobert.preflight import LayoutError, announce, plan_eval, plan_train
from videobert.safe_io import NoReadableData
from videobert.testing import make_feature_shards, make_text_and_vocab, synthetic_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    keys = make_feature_shards(root / "train", [3, 3, 3], sentences=2, prefix="t")
    make_feature_shards(root / "val", [2, 2], sentences=2, seed=1, prefix="v")
    vocab_txt, npz = make_text_and_vocab(root, root / "train")
    return root, keys, vocab_txt, npz


def dm_for(data, train: str, **kw) -> VideoBertDataModule:
    root, _, vocab_txt, npz = data
    args = dict(train_shards=train, val_shards=str(root / "val"), tokenizer=vocab_txt, visual_vocab=npz, batch_size=2,
                num_workers=0, video_shuffle=0, sequence_shuffle=0, max_text_tokens=12, max_visual_words=6)
    dm = VideoBertDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def truncate(path, size: int) -> None:
    """Cut a shard short (3 samples: the last one's features.npy is 512 bytes at 4608, its json at 5632)."""
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize("mode", ["exact", "resampled"])
def test_a_truncated_shard_among_several_is_a_named_counted_skip(data, tmp_path, mode, caplog):
    root, keys, *_ = data
    shutil.copytree(root / "train", tmp_path / "train")
    truncate(tmp_path / "train/t-000001.tar", 4700)  # (after its index entry was written: the size tells it changed)
    with caplog.at_level(logging.WARNING):
        dm = dm_for(data, str(tmp_path / "train"), mode=mode, batches_per_epoch=6)
        seen = {k for b in dm.train_dataloader() for k in b["keys"]}
    good = {k for k in keys if not k.startswith("t001")}
    assert seen <= good and (mode == "resampled" or seen == good)  # the run goes on with the other shards
    assert dm.skips["skipped"] == 1 and list(dm._bad_shards) == [str(tmp_path / "train/t-000001.tar")]
    assert sum("skipped an unreadable shard" in r.message and "t-000001.tar" in r.message for r in caplog.records) == 1


def test_the_only_shard_truncated_is_one_clear_line(data, tmp_path):
    (tmp_path / "train").mkdir()
    shutil.copy(data[0] / "train/t-000000.tar", tmp_path / "train")
    truncate(tmp_path / "train/t-000000.tar", 4608)  # (whole blocks: the last member ends past the end)
    with pytest.raises(NoReadableData) as err:
        dm_for(data, str(tmp_path / "train"))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"data.train: shard set {tmp_path / 'train'} has nothing readable")
    assert "1 of 1 shard(s) unreadable" in message and "t-000000.tar" in message


def test_a_shard_of_another_dtype_or_dimension_is_skipped_sample_by_sample(data, tmp_path):
    root, keys, *_ = data
    shutil.copytree(root / "train", tmp_path / "train")
    rng = np.random.default_rng(3)
    odd = []
    for key, dim, dtype in (("f32", 16, np.float32), ("dim9", 9, np.float16)):
        sample = synthetic_video(key, rng, dim, 12, 2)
        buf = io.BytesIO()
        np.save(buf, np.load(io.BytesIO(sample["features.npy"])).astype(dtype))
        odd.append({**sample, "features.npy": buf.getvalue()})
    with wds.TarWriter(str(tmp_path / "train/t-000003.tar")) as sink:
        for s in odd:
            sink.write(s)
    dm = dm_for(data, str(tmp_path / "train"), mode="exact", max_skip_rate=0.5)
    batches = list(dm.train_dataloader())
    assert {k for b in batches for k in b["keys"]} == set(keys)
    assert sum(int(b["data_stats"][1]) for b in batches) >= 2  # both odd samples: counted skips


def test_preflight_numbers_by_hand():
    # exact training: shards of 6, 4, 4, 2 sequences on 2 ranks x 2 workers = 4 readers, one shard each;
    # the fullest reader has 6 -> ceil(6 / 2) = 3 batches per worker, 6 per rank; rank 0 reads 6 + 4, rank 1 4 + 2
    p = plan_train("exact", [6, 4, 4, 2], 8, batch_size=2, world=2, workers=2, worker_batches=3)
    assert (p.shards, p.readers, p.examples, p.verdict) == (4, 4, 16, "ok")
    assert p.batches_per_rank == [6, 6] and p.examples_per_rank == [10, 6]
    p = plan_train("exact", [6, 4, 0], 5, batch_size=2, world=2, workers=2, worker_batches=3)
    assert p.verdict == "fail" and "2 non-empty shards for 4 readers" in p.why
    p = plan_train("resampled", [6, 4], 5, batch_size=2, world=2, workers=2, worker_batches=5)
    assert p.verdict == "ok" and p.batches_per_rank == [10, 10] and p.examples_per_rank == [20, 20]
    # evaluation (no workers): 3 shards for 2 ranks -> own shards; 1 shard -> the every-readers-th fallback
    p = plan_eval("val", [5, 3, 2], 5, batch_size=2, world=2, workers=0)
    assert p.verdict == "ok" and p.examples_per_rank == [5, 5] and p.batches_per_rank == [3, 3]
    p = plan_eval("val", [7], 4, batch_size=2, world=2, workers=0)
    assert p.verdict == "fallback" and p.examples_per_rank == [4, 3] and p.batches_per_rank == [2, 2]
    p = plan_eval("test", [3], 1, batch_size=2, world=2, workers=0)
    assert p.verdict == "fail" and "1 videos for 2 readers" in p.why


def test_preflight_prints_each_split_and_fails_in_one_line(capsys):
    plans = [plan_train("exact", [6, 4, 0], 5, 2, 2, 2, 3), plan_eval("val", [7], 4, 2, 2, 0)]
    with pytest.raises(LayoutError) as err:
        announce(plans, "fit", world=2, workers=2, batch_size=2)
    assert str(err.value) == ("preflight: data.train_shards cannot feed every rank: 2 non-empty shards for 4 readers; "
                              "every reader needs one (write smaller shards or use fewer workers or devices)")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("preflight train (exact): 2 shards, 5 videos, 10 examples for 2 rank(s) x 2 worker(s) = 4 readers")
    assert out[1].startswith("preflight val (exact): 1 shards") and "fallback" in out[1]
    announce(plans, "validate", 2, 2, 2, rank_zero=False)  # (validate reads val only: train's layout is no failure)
    assert capsys.readouterr().out == ""
