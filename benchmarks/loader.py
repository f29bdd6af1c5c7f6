"""Is the data path fast enough, and is its memory flat in the corpus size?

1. Speed, at the quickstart size (experiments/quickstart.yaml; builds data/quickstart on first use):
   - loader: sequences/s of the DataModule's train loader (2 workers), nothing else running;
   - model: sequences/s the quickstart model consumes (forward + backward + AdamW step, fp32) on
     batches already in memory;
   - the ratio loader / model (target >= 10: the model never waits), and the share of a real training
     loop's time spent waiting for data, with both running at once on this machine.
2. Memory: peak RSS (main process + workers) while streaming one exact epoch of a synthetic corpus the
   size of the quickstart's and one 10x larger (target: ratio ~1, flat).

Usage: python benchmarks/loader.py [--batches 150] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

from data_modules import QuickstartDataModule, VideoBertDataModule
from videobert.module import VideoBertModule
from videobert.testing import make_feature_shards, make_text_and_vocab

ROOT = Path(__file__).resolve().parents[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


class PeakRSS:
    def __enter__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def quickstart_parts(workers: int):
    cfg = yaml.safe_load((ROOT / "experiments/quickstart.yaml").read_text())
    data_args = {**cfg["data"]["init_args"], "num_workers": workers, "batches_per_epoch": 10_000}
    dm = QuickstartDataModule(**data_args)
    dm.prepare_data()
    dm.setup("fit")
    model = VideoBertModule(**cfg["model"], text_vocab_size=dm.vocab_sizes()[0], visual_vocab_size=dm.vocab_sizes()[1])
    return dm, model


def loader_rate(dm, batches: int) -> float:
    it = iter(dm.train_dataloader())
    for _ in range(10):  # workers started, buffers filled
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["input_ids"])
    return n / (time.perf_counter() - start)


def train_step(model, opt, batch) -> None:
    from videobert.losses import pretraining_losses

    losses, _ = pretraining_losses(model.model, batch)
    sum(losses.values()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def model_rate(dm, model, batches: int) -> float:
    it = iter(dm.train_dataloader())
    cached = [next(it) for _ in range(20)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for b in cached[:5]:
        train_step(model, opt, b)
    start, n = time.perf_counter(), 0
    for i in range(batches):
        b = cached[i % len(cached)]
        train_step(model, opt, b)
        n += len(b["input_ids"])
    return n / (time.perf_counter() - start)


def wait_fraction(dm, model, batches: int) -> float:
    """Training loop with the loader's workers running alongside: share of the time spent in next()."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(dm.train_dataloader())
    for _ in range(10):
        train_step(model, opt, next(it))
    waited, start = 0.0, time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - t
        train_step(model, opt, batch)
    return waited / (time.perf_counter() - start)


def stream_peak_rss(root: Path, videos: int, workers: int) -> tuple[float, int]:
    """Peak RSS (MB) while streaming one exact epoch over `videos` synthetic videos of quickstart size."""
    shard = 25
    make_feature_shards(root / "train", [shard] * (videos // shard), dim=165, clips=17, sentences=7)
    vocab_txt, npz = make_text_and_vocab(root, root / "train", levels=2, k=24)
    dm = VideoBertDataModule(train_shards=str(root / "train"), tokenizer=vocab_txt, visual_vocab=npz, mode="exact",
                             batch_size=64, num_workers=workers, max_text_tokens=32, max_visual_words=16)
    dm.setup("fit")
    with PeakRSS() as rss:
        n = sum(len(b["input_ids"]) for b in dm.train_dataloader())
    return rss.peak, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    dm, model = quickstart_parts(args.workers)
    loader = loader_rate(dm, args.batches)
    consume = model_rate(dm, model, max(20, args.batches // 5))
    wait = wait_fraction(dm, model, max(20, args.batches // 5))
    print(f"loader ({args.workers} workers):      {loader:9.0f} sequences/s")
    print(f"model (quickstart, fp32):  {consume:9.0f} sequences/s  ({torch.get_num_threads()} threads)")
    print(f"ratio loader / model:      {loader / consume:9.1f}x   (target >= 10x)")
    print(f"training loop waiting for data: {wait:.1%} of its time (loader and model sharing the machine)")
    if os.environ.get("SKIP_RSS"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, n_small = stream_peak_rss(Path(tmp) / "x1", 200, args.workers)
        large, n_large = stream_peak_rss(Path(tmp) / "x10", 2000, args.workers)
    print(f"peak RSS, one epoch of   200 videos ({n_small:6d} sequences): {small:7.0f} MB")
    print(f"peak RSS, one epoch of 2,000 videos ({n_large:6d} sequences): {large:7.0f} MB")
    print(f"ratio 10x corpus / 1x:     {large / small:9.2f}x   (target ~1, flat)")


if __name__ == "__main__":
    main()
