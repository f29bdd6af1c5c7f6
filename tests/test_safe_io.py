"""Shared caches under concurrency, and a full disk: every writer turns ENOSPC into one line, nothing partial."""
import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videobert.safe_io import DiskFull, atomic_path, folder_lock

ROOT = Path(__file__).resolve().parents[1]


def run_jobs(kind: str, root: Path, n: int, timeout: int) -> tuple[list[str], str]:
    """N jobs of tests/concurrent_build.py started at once on one cache: their digests of it when done, and
    their output."""
    from tests.test_ddp import clean_env

    env = {**clean_env(), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "tests/concurrent_build.py", kind, str(root), str(i), str(n)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    digests = [next(line.split()[1] for line in out.splitlines() if line.startswith("DIGEST")) for out, _ in outs]
    return digests, "".join(out for out, _ in outs)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial")) or ".tmp." in p.name]


def test_concurrent_jobs_on_one_folder_all_succeed_and_see_identical_files(tmp_path):
    digests, out = run_jobs("stages", tmp_path, 3, timeout=240)
    assert len(set(digests)) == 1, digests  # every job saw the same complete files
    assert out.count("corpus: 3 videos") == 1 and out.count("reused") == 2  # built once, reused twice
    assert out.count("(0 already done)") == 1 and out.count("(3 already done)") == 2  # shards: likewise
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_concurrent_quickstart_caches(tmp_path):
    """Four jobs prepare one empty quickstart cache at once (sweep agents on one machine): all succeed and
    read identical files, built once."""
    digests, out = run_jobs("quickstart", tmp_path, 4, timeout=600)
    assert len(set(digests)) == 1, digests
    assert out.count("corpus: 4 videos") == 1 and out.count("features: 2 of 2 shards to extract") == 1
    assert not leftovers(tmp_path)


def test_folder_lock_makes_a_second_holder_wait(tmp_path):
    from filelock import FileLock, Timeout

    with folder_lock(tmp_path / "out"):
        with pytest.raises(Timeout):
            FileLock(str(tmp_path / "out.lock")).acquire(timeout=0.05)
    FileLock(str(tmp_path / "out.lock")).acquire(timeout=0.05)


class FullFile:
    """A file that takes `limit` bytes, then fails as a full disk does."""

    def __init__(self, path, limit: int = 3000):
        self.f, self.left = open(path, "wb", buffering=0), limit

    def write(self, data) -> int:
        if len(data) > self.left:
            self.f.write(bytes(data)[:self.left])
            self.left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_after(limit: int = 3000):
    """A stand-in for a writer call `fn(obj, file, ...)`: writes `limit` bytes to the file, then ENOSPC."""
    def fake(*args, **kwargs):
        target = next(a for a in args if isinstance(a, (str, Path)) or hasattr(a, "write"))
        f = open(target, "wb") if isinstance(target, (str, Path)) else target
        f.write(b"\0" * limit)
        raise OSError(errno.ENOSPC, "No space left on device")
    return fake


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and not p.name.endswith(".lock"))


def test_atomic_path_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(DiskFull) as err:
        with atomic_path(tmp_path / "out.bin") as tmp:
            FullFile(tmp, 1234).write(b"x" * 5000)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "1.2 kB written so far" in message
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_shards_vocab_and_tokenizer_then_a_rerun_completes(tmp_path, monkeypatch):
    import webdataset as wds

    import videobert.shards as shards
    from videobert.testing import make_feature_shards, make_text_and_vocab

    monkeypatch.setattr(shards, "tar_writer", lambda path: wds.TarWriter(FullFile(path)))
    with pytest.raises(DiskFull, match=f"{tmp_path / 'f'}: disk full .* written so far"):
        make_feature_shards(tmp_path / "f", [3, 3])
    assert visible(tmp_path / "f") == []  # no shard under its final name, no temp file
    monkeypatch.undo()
    make_feature_shards(tmp_path / "f", [3, 3])  # the rerun after space is freed
    monkeypatch.setattr(np, "savez", full_after())
    with pytest.raises(DiskFull, match="disk full"):
        make_text_and_vocab(tmp_path, tmp_path / "f")
    assert not (tmp_path / "visual_vocab.npz").exists() and not leftovers(tmp_path)
    monkeypatch.undo()
    make_text_and_vocab(tmp_path, tmp_path / "f")
    assert (tmp_path / "visual_vocab.npz").is_file() and (tmp_path / "tokenizer/vocab.txt").is_file()


def test_full_disk_in_checkpoints_and_export(tmp_path, monkeypatch):
    import torch

    import videobert.pretrained as pretrained
    from videobert.model import VideoBert, VideoBertConfig
    from videobert.runs import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": 1}, tmp_path / "ckpt/last.ckpt")
    monkeypatch.setattr(torch, "save", full_after())
    with pytest.raises(DiskFull, match=f"{tmp_path / 'ckpt'}: disk full"):
        io.save_checkpoint({"a": 2}, tmp_path / "ckpt/last.ckpt")
    assert visible(tmp_path / "ckpt") == ["last.ckpt"] and torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True) == {"a": 1}
    assert not leftovers(tmp_path)  # the previous checkpoint is kept whole
    monkeypatch.undo()
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[>]\na\n")
    model = VideoBert(VideoBertConfig(text_vocab_size=7, visual_vocab_size=4, hidden_size=8, num_layers=1,
                                      num_heads=2, intermediate_size=16, max_positions=8, feature_dim=3))
    monkeypatch.setattr(pretrained, "save_file", full_after())
    with pytest.raises(DiskFull, match=f"{tmp_path / 'export'}: disk full .*needed"):
        pretrained.export(model, tmp_path / "export", tmp_path / "vocab.txt", None)
    assert "model.safetensors" not in visible(tmp_path / "export") and not leftovers(tmp_path)
    monkeypatch.undo()
    pretrained.export(model, tmp_path / "export", tmp_path / "vocab.txt", None)
    assert "model.safetensors" in visible(tmp_path / "export")


def test_cli_prints_a_full_disk_as_one_line(tmp_path, monkeypatch, capsys):
    import videobert.cli as cli
    import videobert.safe_io as safe_io

    def full(argv):
        with safe_io.atomic_path(tmp_path / "x.tar") as tmp:
            FullFile(tmp, 10).write(b"x" * 100)

    monkeypatch.setattr(cli, "data_main", full)
    monkeypatch.setattr(sys, "argv", ["videobert", "data", "shards"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and err.startswith(f"videobert: {tmp_path}: disk full")


def test_full_disk_in_features_and_predictions_then_a_rerun_completes(tmp_path, monkeypatch):
    import webdataset as wds

    import videobert.features as features
    from videobert.corpus import make_corpus
    from videobert.predict import PredictionWriter
    from videobert.shards import build_shards

    make_corpus(str(tmp_path / "videos"), num_videos=2, seed=3, size=32, workers=1)
    build_shards(str(tmp_path / "videos"), str(tmp_path / "raw"), samples_per_shard=1)
    (tmp_path / "feat").mkdir()
    (tmp_path / "feat/.shard-000000.tar.123-abcdef01.tmp").write_bytes(b"left by a killed job")
    monkeypatch.setattr(features, "tar_writer", lambda path: wds.TarWriter(FullFile(path, 1500)))
    with pytest.raises(DiskFull, match=f"{tmp_path / 'feat'}: disk full .* written so far"):
        features.extract_features(str(tmp_path / "raw"), str(tmp_path / "feat"), workers=0, trainer=None)
    assert visible(tmp_path / "feat") == [] and not leftovers(tmp_path / "feat")
    monkeypatch.undo()
    done = features.extract_features(str(tmp_path / "raw"), str(tmp_path / "feat"), workers=0, trainer=None)
    assert [p.name for p in done] == ["shard-000000.tar", "shard-000001.tar"] and not leftovers(tmp_path / "feat")

    writer, trainer = PredictionWriter(tmp_path / "run"), type("T", (), {"global_rank": 0})()
    monkeypatch.setattr(np, "save", full_after(100))
    with pytest.raises(DiskFull, match=f"{tmp_path / 'run/predictions'}: disk full"):
        writer.write_on_batch_end(trainer, None, {"video": "v", "clip_embeddings": np.zeros(3),
                                                  "video_embedding": np.zeros(3)}, None, None, 0)
    assert visible(tmp_path / "run/predictions") == []


def test_a_finished_vocabulary_is_reused_until_its_shards_or_settings_change(tmp_path, capsys):
    from videobert.testing import make_feature_shards
    from videobert.vq import build_vocab

    make_feature_shards(tmp_path / "f", [3, 3])
    for _ in range(2):
        build_vocab(str(tmp_path / "f"), str(tmp_path / "v.npz"), levels=1, k=4)
    assert capsys.readouterr().out.count("reused") == 1
    build_vocab(str(tmp_path / "f"), str(tmp_path / "v.npz"), levels=1, k=5)  # another setting: fitted again
    make_feature_shards(tmp_path / "f", [3, 4])  # other shards: fitted again
    build_vocab(str(tmp_path / "f"), str(tmp_path / "v.npz"), levels=1, k=5)
    assert "reused" not in capsys.readouterr().out
