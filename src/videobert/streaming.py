"""Feature shards -> batches, correct under DDP and DataLoader workers.

Every (rank, worker) pair is a *slot*. Two modes:

- `resampled` (pretraining default): each slot draws shards with replacement (in proportion to their
  size), forever; the epoch is a fixed number of batches. Several shard sets can be mixed: the next video comes from set i with
  probability weight_i / sum(weights).
- `exact`: the shards are dealt to the slots once (largest first, to the slot with the fewest sequences),
  so no sample is read by two slots and every sample is read once per epoch. Slots get unequal amounts of
  data; a slot that runs out early starts its own shards again (padding, as DistributedSampler pads) until
  it has produced the same number of batches as every other slot, so no rank waits for another.

Each slot's randomness (shard draws and order, shuffle buffers, masking) is seeded from
(seed, rank, worker, epoch, step at which the iterator started): runs repeat exactly, shuffles differ per
rank, worker and epoch, and a run resumed from a checkpoint is reseeded by its step instead of replaying
the batches of the epoch's start. `StreamState` carries epoch and step into persistent workers.

A bad sample (corrupt tar member, undecodable npy, missing key, wrong feature dimension) is skipped,
counted and logged; each batch carries the counts (`data_stats`) of its slot since the previous batch.

`StreamLoader` is the DataLoader for a stream: a worker hands each batch over with its tensors as numpy
arrays, pickled through the pipe (~0.3 ms a batch), instead of one shared-memory segment per tensor
(~4 ms a batch of 6 small tensors on 2 cores); they become tensors again in the main process.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from .safe_io import NoReadableData

log = logging.getLogger(__name__)
MODES = ("resampled", "exact")


@dataclass
class ShardSet:
    """One source of shards. `urls`: a folder, a brace pattern (`/data/feat-{000000..000099}.tar`) or
    webdataset `pipe:` URLs; `weight`: its share of videos in resampled mode; `index`: the index.json
    of a remote set (a local set's index lies beside its shards and is rebuilt when missing)."""

    urls: str
    weight: float = 1.0
    index: str | None = None


def shard_urls(spec: str) -> list[str]:
    """A folder (all its .tar files) or a webdataset URL pattern (brace expansion, `pipe:` commands)."""
    path = Path(spec)
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
        if not urls:
            raise FileNotFoundError(f"{spec}: no .tar shards")
        return urls
    if not any(c in spec for c in "{:") and not path.exists():
        raise FileNotFoundError(f"{spec}: no such shard folder or file")
    return list(wds.shardlists.expand_urls(spec))


# a DataModule's hparams (saved in every checkpoint) may hold ShardSets: let `torch.load(weights_only=True)`,
# Lightning's default when resuming, rebuild them (plain data: strings and a float)
torch.serialization.add_safe_globals([ShardSet])

class StreamState:
    """Epoch and start step shared with DataLoader workers (also persistent ones) through shared memory."""

    def __init__(self):
        self._epoch, self._step = mp.Value("q", 0), mp.Value("q", 0)

    def set(self, epoch: int, step: int) -> None:
        self._epoch.value, self._step.value = epoch, step

    def get(self) -> tuple[int, int]:
        return self._epoch.value, self._step.value


class SkipCounter:
    """A webdataset handler that skips a bad sample or shard, logs why and counts it. `max_in_a_row`
    skips with no good sample between them stop the stream (all shards unreadable: fail, do not spin)."""

    def __init__(self, log_first: int = 20, max_in_a_row: int = 1000):
        self.skipped = self.videos = self.videos_total = self._logged = self._in_a_row = 0
        self.log_first, self.max_in_a_row = log_first, max_in_a_row

    def good(self) -> None:
        self.videos += 1
        self.videos_total += 1
        self._in_a_row = 0

    def handler(self, exn: Exception) -> bool:
        self.skipped += 1
        self._in_a_row += 1
        if self._in_a_row > self.max_in_a_row:
            raise NoReadableData(f"{self._in_a_row} bad samples or shards in a row, nothing readable left; the last: "
                                 f"{exn}") from None
        if self._logged < self.log_first:
            self._logged += 1
            log.warning("skipped a bad sample: %s: %s", type(exn).__name__, exn)
        return True

    def take(self) -> torch.Tensor:
        """(videos read, samples skipped) since the previous call."""
        out = torch.tensor([self.videos, self.skipped], dtype=torch.long)
        self.videos = self.skipped = 0
        return out


def assign_slots(sizes: list[int], slots: int) -> list[list[int]]:
    """Deal items (shard indices) to `slots` bins, largest first, each to the bin with the least so far."""
    bins, totals = [[] for _ in range(slots)], [0] * slots
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        j = min(range(slots), key=lambda j: (totals[j], j))
        bins[j].append(i)
        totals[j] += sizes[i]
    return [sorted(b) for b in bins]


def worker_batches(mode: str, sequences: list[int], batch_size: int, world: int, workers: int,
                   batches_per_epoch: int | None = None) -> int:
    """Batches each worker of each rank yields per epoch (rank total: this x workers).

    resampled: `batches_per_epoch` per rank if given, else one pass worth of sequences (as OpenCLIP:
    ceil(sequences / global batch), rounded up to a multiple of the workers). exact: enough for the
    fullest slot to emit all its sequences."""
    workers = max(1, workers)
    if mode == "exact":
        bins = assign_slots(sequences, world * workers)
        return max(1, -(-max(sum(sequences[i] for i in b) for b in bins) // batch_size))
    per_rank = batches_per_epoch or -(-sum(sequences) // (batch_size * world))
    return max(1, -(-per_rank // workers))


class ShardStream(torch.utils.data.IterableDataset):
    """The per-slot pipeline: shards -> samples -> decode -> shuffle -> sequences -> shuffle -> batches.

    `sets`: [(urls, sequence counts per url, weight)]. `decode(sample) -> video` may raise (a counted skip);
    `build(videos, rng) -> sequences`; `collate(list, rng) -> batch`. `batches`: per worker, None = one pass;
    `pad`: in exact mode, a worker that runs out starts its shards again until it has made `batches`."""

    def __init__(self, sets, decode, build, collate, batch_size: int, mode: str, batches: int | None,
                 rank: int, world: int, seed: int, state: StreamState, pad: bool = False, video_shuffle: int = 0,
                 sequence_shuffle: int = 0, keep_members=("json", "features.npy")):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        self.sets, self.decode, self.build, self.collate = sets, decode, build, collate
        self.batch_size, self.mode, self.batches = batch_size, mode, batches
        self.rank, self.world, self.seed, self.state, self.pad = rank, world, seed, state, pad
        self.length: int | None = None  # batches per epoch of the whole loader (all workers), when known
        self.video_shuffle, self.sequence_shuffle, self.keep = video_shuffle, sequence_shuffle, keep_members

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("this stream has no fixed length")
        return self.length

    def _slot(self) -> tuple[int, int, np.random.Generator]:
        """(slot, slots, the slot's generator). Exact mode seeds by the epoch alone: a resumed epoch deals and
        shuffles as it did, and its loader skips the batches already trained (`StreamLoader.position`)."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, step = self.state.get()
        slot = self.rank * workers + worker
        rng = np.random.default_rng([self.seed, self.rank, worker, epoch, 0 if self.mode == "exact" else step])
        return slot, self.world * workers, rng

    def _exact_passes(self, slot: int, slots: int, rng: np.random.Generator, skips: SkipCounter):
        """The slot's sequences, pass after pass; each pass has its own shuffle buffers, so a padding
        pass can never overtake the end of the real one."""
        urls = [u for s in self.sets for u in s[0]]
        sizes = [n for s in self.sets for n in s[1]]
        share = None
        if sum(n > 0 for n in sizes) < slots and not self.pad:  # (evaluation, fewer shards than readers: every
            mine, share = [u for u, n in zip(urls, sizes) if n > 0], (slot, slots)  # reader reads them all and
        else:  # keeps every slots-th sample, so each sample is still read once over all readers)
            mine = [urls[i] for i in assign_slots(sizes, slots)[slot]]
        while True:  # a second pass is padding, only reached when the slot must keep producing batches
            before = skips.videos_total
            order = range(len(mine)) if share else rng.permutation(len(mine))  # (a shared order for the split)
            yield from self._sequences(self._videos((mine[i] for i in order), skips, share), rng)
            if not self.pad:
                return
            if skips.videos_total == before:
                raise NoReadableData(f"reader {slot}: no usable sample in {mine} (see the skipped-sample warnings)")

    def _sequences(self, videos, rng: np.random.Generator):
        """Videos -> shuffled videos -> sequences -> shuffled sequences."""
        if self.video_shuffle > 1:
            videos = wds.filters.shuffle(self.video_shuffle, self.video_shuffle,
                                         seed=int(rng.integers(2**62)))(videos)
        sequences = self.build(videos, rng)
        if self.sequence_shuffle > 1:
            sequences = wds.filters.shuffle(self.sequence_shuffle, self.sequence_shuffle,
                                            seed=int(rng.integers(2**62)))(sequences)
        return sequences

    def _videos(self, urls, skips: SkipCounter, share: tuple[int, int] | None = None):
        """Decoded videos of `urls`; with `share` = (slot, slots), only every slots-th sample from the slot-th."""
        samples = wds.tarfile_to_samples(handler=skips.handler, select_files=self._wanted)(
            {"url": u} for u in urls)
        for i, sample in enumerate(samples):
            if share is not None and i % share[1] != share[0]:
                continue
            try:
                video = self.decode(sample)
            except Exception as exn:  # noqa: BLE001 -- any bad sample is a counted skip, by design
                skips.handler(exn)
                continue
            skips.good()
            yield video

    def _wanted(self, name: str) -> bool:
        return name.split("/")[-1].split(".", 1)[-1] in self.keep

    def __iter__(self):
        slot, slots, rng = self._slot()
        skips = SkipCounter()
        if self.mode == "exact":
            sequences = self._exact_passes(slot, slots, rng, skips)
        else:
            streams = [self._videos(_draw_forever(urls, counts, rng), skips) for urls, counts, _ in self.sets]
            weights = np.array([w for _, _, w in self.sets], np.float64)
            sequences = self._sequences(_mix(streams, weights / weights.sum(), rng), rng)
        made, batch = 0, []
        for seq in sequences:
            batch.append(seq)
            if len(batch) == self.batch_size:
                yield _pack({**self.collate(batch, rng), "data_stats": skips.take()})
                made, batch = made + 1, []
                if made == self.batches:
                    return
        if batch:  # one pass (evaluation): the last, partial batch
            yield _pack({**self.collate(batch, rng), "data_stats": skips.take()})


class _Packed(dict):
    """A batch in transit from a worker: its tensors as numpy arrays under `tensors`, the rest as is."""


def _pack(batch: dict) -> _Packed:
    tensors = {k: v.numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return _Packed({k: v for k, v in batch.items() if k not in tensors}, tensors=tensors)


def _unpack(batch):
    if not isinstance(batch, _Packed):
        return batch
    out = {k: v for k, v in batch.items() if k != "tensors"}
    out.update((k, torch.from_numpy(v)) for k, v in batch["tensors"].items())
    return out


def _as_is(batch):
    return batch


class StreamLoader(torch.utils.data.DataLoader):
    """DataLoader of a `ShardStream` (batch_size=None): batches cross from workers as numpy (see above).

    Resumable: `position` (set by the DataModule) is called when an iteration's first batch is asked for,
    after a resumed fit has restored its loops; it sets the stream's epoch and step and returns how many of
    the epoch's batches were already trained, which are then read and dropped (worker w of W made batches
    w, w + W, ... : a DataLoader takes them from its workers in turn). Workers start only then, so they see the
    restored epoch. The position lives in the checkpoint's loop state; `state_dict` adds nothing."""

    def __init__(self, stream: "ShardStream", num_workers: int = 0, position=None):
        super().__init__(stream, batch_size=None, num_workers=num_workers, collate_fn=_as_is,
                         persistent_workers=num_workers > 0)
        self.position = position

    def __iter__(self):
        return self._lazy()

    def _lazy(self):
        skip = self.position() if self.position is not None else 0
        yield from itertools.islice(map(_unpack, super().__iter__()), skip, None)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def resume_position(trainer, set_epoch, mode: str, epoch_batches: int) -> int:
    """`StreamLoader.position` of a training loader: at an epoch's first batch (after a resumed fit restored its
    loops) the stream's epoch and step (`set_epoch`); in exact mode also the batches of this epoch already
    trained, to skip, so every remaining sample is read once. Resampled mode is reseeded by the restored step
    instead (no replay of the epoch's first batches) and skips nothing."""
    set_epoch(trainer.current_epoch, trainer.global_step)
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # (0 at a fresh epoch's first batch)
    if mode != "exact" or not 0 < done < epoch_batches:
        return 0
    if trainer.is_global_zero:
        print(f"train (exact): resuming epoch {trainer.current_epoch} after {done} of its {epoch_batches} batches "
              "per rank; the stream reads and skips them", flush=True)
    return done


def _draw_forever(urls: list[str], sizes: list[int], rng: np.random.Generator):
    """Shards with replacement, each with probability proportional to its size (empty ones never)."""
    p = np.asarray(sizes, np.float64)
    if p.sum() <= 0:
        raise NoReadableData(f"{urls[0]} ...: every shard of this set is empty (index.json says 0 sentences)")
    p /= p.sum()
    while True:
        yield urls[int(rng.choice(len(urls), p=p))]


def _mix(streams: list, probs: np.ndarray, rng: np.random.Generator):
    """Interleave iterators, drawing the next item's source by `probs`."""
    if len(streams) == 1:
        yield from streams[0]
        return
    while True:
        yield next(streams[int(rng.choice(len(streams), p=probs))])
