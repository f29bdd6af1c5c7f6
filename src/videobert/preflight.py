"""Checks on shard sets before the first batch: unreadable shards, and the layout against ranks x workers.

`readable_shards`: a shard its index could not read (truncated, not a tar) is a counted, logged skip naming
the file; a set with nothing readable left stops the run with one line naming the set.

`plan` + `report`: the DDP preflight. For each split (train, val, test) it counts the non-empty shards, the
samples (videos) and examples (sequences) and sets them against the readers (world size x DataLoader
workers): what each rank reads and how many batches it runs. It says, per split, which of three cases holds:

- `ok`: every reader has shards of its own (exact), or resampled mode, where every reader draws from all shards;
- `fallback`: an evaluation split with fewer shards than readers: every reader reads all of them and keeps
  every readers-th sample (each sample still read once over all readers);
- `fail`: a reader would have nothing to read (exact training with fewer non-empty shards than readers, or
  an evaluation split with fewer samples than readers): one line saying what to change.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from .safe_io import NoReadableData, OneLineError
from .shards import load_index
from .streaming import ShardSet, assign_slots

log = logging.getLogger(__name__)


def readable_shards(name: str, spec: str, urls: list[str], entries: list[dict], unit: str,
                    known: dict | None = None) -> tuple[list, list, dict]:
    """(urls, counts of `unit` per shard, {url: error} of the unreadable ones) of a set whose index entries are
    `entries`, logging each unreadable shard not in `known`; raises `NoReadableData` (one line) when no readable
    shard holds anything."""
    bad = {u: e["error"] for u, e in zip(urls, entries) if "error" in e}
    for url, error in bad.items():
        if url not in (known or {}):
            log.warning("%s: skipped an unreadable shard %s (%s)", name, url, " ".join(str(error).split()))
    keep = [(u, int(e.get(unit, 0))) for u, e in zip(urls, entries) if "error" not in e]
    if not any(n for _, n in keep):
        what = (f"{len(bad)} of {len(urls)} shard(s) unreadable ({', '.join(sorted(bad)[:3])}"
                f"{' ...' if len(bad) > 3 else ''})" if bad else f"{len(urls)} shard(s)")
        raise NoReadableData(f"data.{name}: shard set {spec} has nothing readable: {what}, none of the rest holds a "
                             f"{unit[:-1]} (index.json beside the shards)")
    return [u for u, _ in keep], [n for _, n in keep], bad


@dataclass
class SplitPlan:
    """One split against the readers: what the preflight prints and decides."""

    name: str
    mode: str
    shards: int  # non-empty shards
    samples: int | None  # videos (None: a remote set without an index)
    examples: int  # sequences (or the fine-tuning task's unit)
    readers: int  # ranks x workers
    batches_per_rank: list[int]
    examples_per_rank: list[int]
    verdict: str  # ok | fallback | fail
    why: str = ""

    def line(self, world: int, workers: int, batch_size: int) -> str:
        counts = f"{self.shards} shards, {self.samples if self.samples is not None else '?'} videos, {self.examples} examples"
        ranks = ", ".join(f"rank {r}: {e} examples in {b} batches" for r, (e, b) in
                          enumerate(zip(self.examples_per_rank, self.batches_per_rank)))
        return (f"preflight {self.name} ({self.mode}): {counts} for {world} rank(s) x {workers} worker(s) = {self.readers} "
                f"readers, batch {batch_size}; {ranks}: {self.verdict}{' - ' + self.why if self.why else ''}")


def _per_rank(counts: list[int], world: int, workers: int) -> list[int]:
    bins = assign_slots(counts, world * workers)
    return [sum(counts[i] for b in bins[r * workers:(r + 1) * workers] for i in b) for r in range(world)]


def plan_train(mode: str, counts: list[int], samples: int | None, batch_size: int, world: int, workers: int,
               worker_batches: int) -> SplitPlan:
    """Training: exact mode deals shards to readers (each reader pads to the same batch count); resampled
    mode draws `worker_batches` batches per worker from all shards."""
    workers, shards = max(1, workers), sum(n > 0 for n in counts)
    readers, batches = world * workers, [worker_batches * max(1, workers)] * world
    if mode == "resampled":
        return SplitPlan("train", mode, shards, samples, sum(counts), readers, batches,
                         [b * batch_size for b in batches], "ok", "every reader draws from all shards")
    per_rank = _per_rank(counts, world, workers)
    if shards < readers:
        return SplitPlan("train", mode, shards, samples, sum(counts), readers, batches, per_rank, "fail",
                         f"{shards} non-empty shards for {readers} readers; every reader needs one (write smaller "
                         "shards or use fewer workers or devices)")
    return SplitPlan("train", mode, shards, samples, sum(counts), readers, batches, per_rank, "ok",
                     "each sample once per epoch; readers with less data start their shards again (padding)")


def plan_eval(name: str, counts: list[int], samples: int | None, batch_size: int, world: int, workers: int,
              max_batches: int | None = None) -> SplitPlan:
    """Validation or test: one pass, split over the readers; ranks may run different numbers of batches."""
    workers, shards = max(1, workers), sum(n > 0 for n in counts)
    readers, total = world * workers, sum(counts)
    if shards >= readers:
        per_rank, verdict, why = _per_rank(counts, world, workers), "ok", "each reader reads its own shards"
    else:
        per_rank = [total // world + (r < total % world) for r in range(world)]  # (every readers-th sample)
        verdict, why = "fallback", (f"{shards} non-empty shards for {readers} readers: every reader reads all of "
                                    "them and keeps every readers-th sample")
        if samples is not None and samples < readers:
            verdict, why = "fail", (f"{samples} videos for {readers} readers; every reader needs one (fewer devices "
                                    "or workers, or more videos)")
    batches = [-(-e // batch_size) for e in per_rank]
    if max_batches is not None:
        batches = [min(b, max_batches) for b in batches]
    return SplitPlan(name, "exact", shards, samples, total, readers, batches, per_rank, verdict, why)


class LayoutError(OneLineError, ValueError):
    """A split whose shards cannot feed every rank and worker."""


STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


def announce(plans: list[SplitPlan], stage: str | None, world: int, workers: int, batch_size: int,
             rank_zero: bool = True) -> list[SplitPlan]:
    """Print every split's line on rank 0; raise `LayoutError` (on every rank alike) for a split this stage
    reads that cannot feed every reader. A split the stage does not read is reported, never fatal."""
    used = STAGE_SPLITS.get(stage or "", ("train", "val", "test"))
    for p in plans:
        note = "" if p.name in used else f" (not read by `{stage}`)"
        if rank_zero:
            print(p.line(world, max(1, workers) if p.name == "train" else 1, batch_size) + note, flush=True)
    failed = [p for p in plans if p.verdict == "fail" and p.name in used]
    if failed:
        p = failed[0]
        raise LayoutError(f"preflight: data.{p.name}_shards cannot feed every rank: {p.why}")
    return plans


def check(dm, stage: str | None = None) -> list[SplitPlan]:
    """The preflight of a `VideoBertDataModule` (set up, with a trainer): every configured split against world
    size x workers, printed on rank 0; a split this stage reads that cannot feed every rank raises `LayoutError`."""
    hp, (rank, world) = dm.hparams, dm._world()
    plans = []
    for name in ("train", "val", "test"):
        sets = dm._sets(name) if dm._paths()[name] is not None else []
        if not sets or any(c is None for _, c, _ in sets):  # (a remote set without an index: not counted)
            continue
        counts = [n for _, c, _ in sets for n in c]
        if name == "train":
            plans.append(plan_train(hp.mode, counts, dm._samples(sets), hp.batch_size, world, hp.num_workers,
                                    dm._epoch_batches(sets)))
        else:
            plans.append(plan_eval(name, counts, dm._samples(sets), hp.batch_size, world, 0,
                                   hp.val_batches if name == "val" else None))
    return announce(plans, stage, world, hp.num_workers, hp.batch_size, rank == 0)


def _shard_name(url: str) -> str:
    names = re.findall(r"[^/\s]+\.tar\b", url)
    if not names:
        raise ValueError(f"{url}: cannot tell the shard's file name (expected a name ending in .tar)")
    return names[-1]


def shard_entries(shard_set: ShardSet, urls: list[str]) -> list[dict] | None:
    """Each shard's index entry ({"samples", "sentences"}, or "error" for a shard that cannot be read); None if
    a remote set has no index."""
    names = [_shard_name(u) for u in urls]
    if shard_set.index:
        with wds.gopen(shard_set.index) as f:
            index = json.load(f)
        absent = [n for n in names if n not in index]
        if absent:
            raise KeyError(f"{shard_set.index}: no entry for {absent[:3]}{' ...' if len(absent) > 3 else ''}")
    elif all(Path(u).is_file() for u in urls):
        index = {}
        for folder in sorted({Path(u).parent for u in urls}):
            index.update(load_index(folder, [Path(u).name for u in urls if Path(u).parent == folder]))
    else:
        return None
    return [index[n] for n in names]
