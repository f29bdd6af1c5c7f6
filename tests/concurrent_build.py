"""One of N jobs that build one cache at once; run by tests/test_safe_io.py in a subprocess.

Usage: python tests/concurrent_build.py KIND ROOT JOB N
  KIND `stages`: the corpus-to-shards stages without Lightning (write_mp4 on one file with no lock, then
  build_shards and train_wordpiece on one folder); `quickstart`: QuickstartDataModule.prepare_data() on a tiny
  cache. Every job waits at a barrier (a file per job under ROOT/.barrier) so all start together, then prints
  `DIGEST <sha256 of every file under ROOT>` as it sees the cache when done.
"""
import hashlib
import sys
import time
from pathlib import Path

import numpy as np


def barrier(root: Path, job: int, n: int) -> None:
    folder = root / ".barrier"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(job)).touch()
    deadline = time.time() + 120
    while len(list(folder.iterdir())) < n and time.time() < deadline:
        time.sleep(0.01)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".barrier" not in p.parts and not p.name.endswith(".lock"):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def stages(root: Path) -> None:
    from videobert.corpus import make_corpus, write_mp4
    from videobert.shards import build_shards
    from videobert.text import train_wordpiece

    frames = [np.full((32, 32, 3), 8 * i, np.uint8) for i in range(20)]
    write_mp4(root / "same.mp4", frames, 20, 32)  # (every job, one file, no lock: temp names must not clash)
    corpus = root / "corpus"
    make_corpus(str(corpus), num_videos=3, seed=5, size=32, workers=1)  # (the first job builds, the others reuse)
    build_shards(str(corpus), str(root / "shards"), samples_per_shard=1)
    train_wordpiece([p.read_text() for p in sorted(corpus.glob("*.vtt"))], root / "tokenizer", 200)


def quickstart(root: Path) -> None:
    from data_modules import QuickstartDataModule

    QuickstartDataModule(cache_dir=str(root / "cache"), train_videos=4, val_videos=2, test_videos=2, video_size=32,
                         samples_per_shard=2, vocab_levels=1, vocab_k=4, tokenizer_vocab_size=300).prepare_data()


if __name__ == "__main__":
    kind, root, job, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    barrier(root, job, n)
    {"stages": stages, "quickstart": quickstart}[kind](root)
    print("DIGEST", digest(root / ("cache" if kind == "quickstart" else "")))
