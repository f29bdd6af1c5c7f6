"""The training stream in one process: modes, URLs, mixing, index, reseeding and bad samples."""
import io
import json
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from data_modules import VideoBertDataModule
from videobert.streaming import assign_slots, worker_batches
from videobert.testing import make_feature_shards, make_text_and_vocab, synthetic_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    a = make_feature_shards(root / "a", [3, 1, 4, 2], sentences=3, prefix="a")
    b = make_feature_shards(root / "b", [4, 4], sentences=3, seed=1, prefix="b")
    vocab_txt, npz = make_text_and_vocab(root, root / "a")
    return root, a, b, vocab_txt, npz


def dm_for(data, train, **kw) -> VideoBertDataModule:
    root, _, _, vocab_txt, npz = data
    args = dict(train_shards=train, val_shards=str(root / "b"), tokenizer=vocab_txt, visual_vocab=npz, batch_size=4,
                num_workers=0, video_shuffle=4, sequence_shuffle=8, max_text_tokens=12, max_visual_words=6)
    dm = VideoBertDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["keys"]]


def test_slots_are_balanced_and_epoch_length_follows_openclip():
    bins = assign_slots([9, 5, 3, 2, 1], 2)
    assert sorted(i for b in bins for i in b) == list(range(5))
    assert sorted(sum([9, 5, 3, 2, 1][i] for i in b) for b in bins) == [10, 10]
    # resampled: ceil(100 / (4 x 2)) = 13 per rank -> 7 per worker with 2 workers
    assert worker_batches("resampled", [50, 50], batch_size=4, world=2, workers=2) == 7
    assert worker_batches("resampled", [50, 50], 4, 2, 2, batches_per_epoch=10) == 5
    assert worker_batches("exact", [9, 5, 3, 2, 1], batch_size=4, world=1, workers=2) == 3  # ceil(10 / 4)


def test_exact_mode_reads_every_sample_once_and_knows_its_length(data):
    _, a, *_ = data
    loader = dm_for(data, str(data[0] / "a"), mode="exact").train_dataloader()
    assert len(loader) == 8  # 10 videos x 3 sentences = 30 sequences -> ceil(30 / 4)
    keys = keys_of(loader)
    assert len(keys) == 32 and set(keys) == set(a)  # 30 real sequences, then 2 padding from the same reader
    assert sorted(keys[:30]) == sorted(k for k in a for _ in range(3))


def test_pipe_urls_with_an_index_and_remote_sets_without_one(data):
    root, a, *_ = data
    remote = [{"urls": f"pipe:cat {root}/a/a-{{000000..000003}}.tar", "index": str(root / "a/index.json")}]
    assert set(keys_of(dm_for(data, remote, mode="exact").train_dataloader())) == set(a)
    with pytest.raises(ValueError, match="has no `index`"):
        dm_for(data, [{"urls": f"pipe:cat {root}/a/a-{{000000..000003}}.tar"}], mode="exact").train_dataloader()
    loader = dm_for(data, [{"urls": f"pipe:cat {root}/a/a-{{000000..000003}}.tar"}], batches_per_epoch=3).train_dataloader()
    assert len(keys_of(loader)) == 12  # resampled with an explicit epoch length needs no index


def test_weighted_mix_of_shard_sets(data):
    root = data[0]
    sets = [{"urls": str(root / "a"), "weight": 3.0}, {"urls": str(root / "b"), "weight": 1.0}]
    keys = keys_of(dm_for(data, sets, batches_per_epoch=100, sequence_shuffle=0).train_dataloader())
    share = np.mean([k.startswith("a") for k in keys])
    assert share == pytest.approx(0.75, abs=0.05)
    with pytest.raises(ValueError, match="weights apply to resampled mode only"):
        dm_for(data, sets, mode="exact").train_dataloader()


def test_missing_index_is_rebuilt(data, tmp_path):
    make_feature_shards(tmp_path / "c", [2, 3], sentences=5, prefix="c")
    written = json.loads((tmp_path / "c/index.json").read_text())
    (tmp_path / "c/index.json").unlink()
    assert len(dm_for(data, str(tmp_path / "c"), mode="exact").train_dataloader()) == 7  # ceil(25 / 4)
    assert json.loads((tmp_path / "c/index.json").read_text()) == written
    make_feature_shards(tmp_path / "new", [6], sentences=2, prefix="c")  # a shard replaced by another file:
    (tmp_path / "new/c-000000.tar").replace(tmp_path / "c/c-000000.tar")  # its stale entry is recounted
    assert len(dm_for(data, str(tmp_path / "c"), mode="exact").train_dataloader()) == 7  # ceil((12 + 15) / 4)
    assert json.loads((tmp_path / "c/index.json").read_text())["c-000000.tar"]["sentences"] == 12


def test_stream_repeats_from_seed_and_is_reseeded_by_step(data):
    dm = dm_for(data, str(data[0] / "a"), batches_per_epoch=4)
    first, again = keys_of(dm.train_dataloader()), keys_of(dm.train_dataloader())
    assert first == again
    dm.set_epoch(0, 500)  # e.g. resumed at step 500: not a replay of the epoch's first batches
    assert keys_of(dm.train_dataloader().dataset) != first
    dm.set_epoch(1, 0)
    assert keys_of(dm.train_dataloader().dataset) != first


def test_too_few_shards_for_the_readers_fails_at_start(data, tmp_path):
    make_feature_shards(tmp_path / "one", [5, 0], prefix="one")  # an empty shard does not count
    with pytest.raises(ValueError, match="1 non-empty shards for 1 rank\\(s\\) x 2 worker\\(s\\) = 2 readers"):
        dm_for(data, str(tmp_path / "one"), mode="exact", num_workers=2).train_dataloader()
    with pytest.raises(ValueError, match="max_sentences > 1"):
        dm_for(data, str(tmp_path / "one"), mode="exact", max_sentences=3)


def _write_bad_shard(path, dim: int):
    rng = np.random.default_rng(0)
    good = [synthetic_video(f"ok{i}", rng, dim, 12, 3) for i in range(3)]
    wrong_dim = synthetic_video("wrongdim", rng, dim + 1, 12, 3)
    no_features = {k: v for k, v in synthetic_video("nofeat", rng, dim, 12, 3).items() if k != "features.npy"}
    bad_npy = {**synthetic_video("badnpy", rng, dim, 12, 3), "features.npy": b"\x93NUMPY garbage"}
    with wds.TarWriter(str(path)) as sink:
        for s in [good[0], wrong_dim, no_features, good[1], bad_npy, good[2]]:
            sink.write(s)


def test_bad_samples_are_counted_skips_and_a_threshold_stops_the_run(data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    _write_bad_shard(bad / "x-000000.tar", dim=16)
    (bad / "x-000001.tar").write_bytes(b"this is not a tar archive" * 40)  # a corrupt tar
    with tarfile.open(bad / "x-000002.tar", "w") as tar:  # a sample with no json
        info = tarfile.TarInfo("t0.features.npy")
        info.size = 1000
        tar.addfile(info, io.BytesIO(b"\0" * 1000))
    dm = dm_for(data, str(bad), mode="exact", max_skip_rate=1.0)
    batches = list(dm.train_dataloader())
    assert {k for b in batches for k in b["keys"]} == {"ok0", "ok1", "ok2"}
    videos, skipped = np.sum([b["data_stats"].numpy() for b in batches], 0)
    assert skipped / (videos + skipped) == pytest.approx(4 / 7)  # per pass (padding repeats it): 3 good, and
    # wrong dimension, no features.npy, unreadable npy, no json; the corrupt tar is skipped before streaming:
    assert dm.skips["skipped"] == 1 and str(bad / "x-000001.tar") in dm._bad_shards  # counted once, by name

    strict = dm_for(data, str(bad), mode="exact", max_skip_rate=0.2, skip_check_after=5)
    with pytest.raises(RuntimeError, match="data.max_skip_rate=20.0%"):
        for batch in strict.train_dataloader():
            strict.count_skips(*batch["data_stats"].tolist())


def test_read_npy_equals_np_load_and_rejects_bad_bytes():
    from videobert.samples import read_npy

    arrays = [np.arange(12, dtype=np.float16).reshape(3, 4), np.asfortranarray(np.ones((2, 5))),
              np.zeros((0, 8), np.float32), np.arange(6, dtype=np.int64)]
    for arr in arrays:
        buf = io.BytesIO()
        np.save(buf, arr)
        out = read_npy(buf.getvalue())
        assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, np.load(io.BytesIO(buf.getvalue())))
    v2 = io.BytesIO()
    np.lib.format.write_array(v2, arrays[0], version=(2, 0))
    assert np.array_equal(read_npy(v2.getvalue()), arrays[0])
    good = io.BytesIO()
    np.save(good, np.ones((4, 4), np.float32))
    for bad, message in ((b"PK\x03\x04 a zip", "magic"), (good.getvalue()[:-8], "truncated"),
                         (good.getvalue()[:40], "EOF")):
        with pytest.raises(ValueError, match=message):
            read_npy(bad)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        read_npy(pickled.getvalue())


def test_stream_loader_hands_over_tensors_from_workers(data):
    batches = list(dm_for(data, str(data[0] / "a"), num_workers=2, batches_per_epoch=4).train_dataloader())
    assert len(batches) == 4 and all(isinstance(b["input_ids"], torch.Tensor) and b["input_ids"].dtype == torch.int64
                                     and b["attention_mask"].dtype == torch.bool and isinstance(b["keys"], list)
                                     for b in batches)


def test_checkpoints_holding_shard_sets_load_with_weights_only(tmp_path):
    """Lightning resumes with torch.load(weights_only=True); a DataModule configured with shard-set lists
    stores ShardSets in the checkpoint's hparams."""
    from videobert.streaming import ShardSet

    torch.save({"datamodule_hyper_parameters": {"train_shards": [ShardSet("a/", 3.0), ShardSet("b/")]}},
               tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert loaded["datamodule_hyper_parameters"]["train_shards"] == [ShardSet("a/", 3.0), ShardSet("b/")]
