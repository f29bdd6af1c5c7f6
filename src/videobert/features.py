"""Raw shards -> feature shards: one feature row per 1.5 s clip (paper: 30 frames at 20 fps).

A `Trainer.predict` loop, so `--trainer.devices N --trainer.strategy ddp` (and `num_nodes`) spread it
over GPUs and machines. Each input shard belongs to one (rank, DataLoader worker) reader, which decodes
its videos into chunks of clips; the model runs the extractor on them (under the Trainer's precision);
`FeatureWriter` assembles each video's features and writes the rank's output shards atomically (temp
name, then rename). A rerun skips finished output shards, so a killed job resumes where it stopped.

Output samples keep the input's `txt` (and, with `keep_video`, the video bytes) and add `features.npy`
((T, D) float16); `json` gains `clips` ([[start, end], ...] seconds), `sentences` (normalised cues,
also for video2dataset shards that only have `txt` or subtitles), `feature_extractor`, `feature_fps`, `feature_clip_frames` and `provenance` (videobert.provenance: the
extractor's weights, decoder versions, frame size and crop, dtype; also once in index.json). A
video that cannot be decoded is reported by shard and key, counted and left out; an unreadable shard
likewise.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import webdataset as wds
from lightning.pytorch.callbacks import BasePredictionWriter

from .captions import CaptionError, sentences_from_meta
from .cli_errors import UsageError
from .extractors import make_extractor
from .provenance import describe, feature_provenance, fingerprint, shard_set_provenance
from .safe_io import DiskFull, folder_lock, full_message, is_full, sweep_temps, unique_tmp, write_text
from .shards import VIDEO_EXTS, count_sentences, tar_writer, update_index
from .streaming import assign_slots
from .video import VideoError, iter_clips


@dataclass(frozen=True)
class TrainerOptions:
    """The Trainer settings that matter for extraction (`--trainer.devices 2 --trainer.strategy ddp`)."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"


def _video_bytes(sample: dict) -> bytes:
    for ext in VIDEO_EXTS:
        if ext[1:] in sample:
            return sample[ext[1:]]
    raise VideoError(f"no video member ({', '.join(e[1:] for e in VIDEO_EXTS)})")


class ClipReader(torch.utils.data.IterableDataset):
    """Per (rank, worker): its input shards, as a stream of items for the model and the writer.

    Items (`kind`): `clips` (a chunk of one video: uint8 (n, T, S, S, 3), or its `features` when a CPU
    extractor runs here in the worker), `video` (the video is complete: its output sample minus the
    features), `drop` (the video failed: discard its chunks), `shard` (the shard is complete) and
    `shard_failed` (it could not be read)."""

    def __init__(self, jobs: list[tuple[str, str]], rank: int, world: int, size: int, fps: float,
                 clip_frames: int, chunk: int, cpu_extractor=None):
        super().__init__()
        self.jobs, self.rank, self.world = jobs, rank, world
        self.size, self.fps, self.clip_frames, self.chunk = size, fps, clip_frames, chunk
        self.cpu_extractor = cpu_extractor

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        sizes = [Path(src).stat().st_size for src, _ in self.jobs]  # balance readers by bytes, not shard count
        for i in assign_slots(sizes, self.world * workers)[self.rank * workers + worker]:
            yield from self._shard(*self.jobs[i])

    def _shard(self, src: str, dst: str):
        try:
            for sample in wds.tarfile_to_samples()([{"url": src}]):
                yield from self._video(sample, src, dst)
        except (tarfile.TarError, OSError) as err:  # a corrupt tar is reported and left out; the job goes on
            yield {"kind": "shard_failed", "dst": dst, "error": f"{src}: {type(err).__name__}: {err}"}
            return
        yield {"kind": "shard", "dst": dst}

    def _chunk(self, dst: str, key: str, frames: list[np.ndarray]) -> dict:
        clips = np.stack(frames)
        if self.cpu_extractor is not None:
            return {"kind": "clips", "dst": dst, "key": key, "features": self.cpu_extractor(clips)}
        return {"kind": "clips", "dst": dst, "key": key, "clips": torch.from_numpy(clips)}

    def _video(self, sample: dict, src: str, dst: str):
        key = sample["__key__"]
        name = f"{src}:{key}"
        pending, spans = [], []
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
            clips = iter_clips(_video_bytes(sample), fps=self.fps, clip_frames=self.clip_frames, size=self.size,
                               name=name)
            for start, end, frames in clips:
                spans.append([round(start, 3), round(end, 3)])
                pending.append(frames)
                if len(pending) == self.chunk:
                    yield self._chunk(dst, key, pending)
                    pending = []
            if not spans:
                raise VideoError(f"{name}: shorter than one clip")
            if pending:
                yield self._chunk(dst, key, pending)
            txt = sample["txt"].decode("utf-8") if "txt" in sample else None
            meta["sentences"] = sentences_from_meta(meta, txt, spans[-1][1], name)
        except (VideoError, CaptionError, ValueError, UnicodeDecodeError) as err:
            msg = str(err) if name in str(err) else f"{name}: {err}"
            yield {"kind": "drop", "dst": dst, "key": key, "error": msg}
            return
        meta.update(clips=spans, fps=self.fps)
        keep = {k: v for k, v in sample.items() if not k.startswith("__") and k != "json"}
        yield {"kind": "video", "dst": dst, "key": key, "sample": {"__key__": key, **keep, "json": meta}}


class FeatureModule(L.LightningModule):
    """Runs the extractor on chunks of clips; everything else passes through to the writer."""

    def __init__(self, extractor: torch.nn.Module):
        super().__init__()
        self.extractor = extractor.eval()

    def predict_step(self, item: dict, batch_idx: int):
        if item["kind"] != "clips":
            return None
        if "features" in item:
            return np.asarray(item["features"], np.float32)
        with torch.no_grad():
            return self.extractor(item["clips"]).float().cpu().numpy()


class FeatureWriter(BasePredictionWriter):
    """Assembles each video's features and writes this rank's output shards (temp name, then rename)."""

    def __init__(self, out_dir: Path, extractor_name: str, keep_video: bool = False, fps: float = 20.0,
                 clip_frames: int = 30, provenance: dict | None = None):
        super().__init__(write_interval="batch")
        self.out_dir, self.extractor_name, self.keep_video = out_dir, extractor_name, keep_video
        self.provenance = provenance  # (videobert.provenance: in every sample's json and once in index.json)
        self.clip_settings = {"feature_fps": fps, "feature_clip_frames": clip_frames}  # (predict decodes alike)
        self.open: dict[str, tuple[wds.TarWriter, dict]] = {}  # dst -> (writer, index entry)
        self.pending: dict[tuple[str, str], list[np.ndarray]] = {}
        self.entries: dict[str, dict] = {}
        self.failed: list[str] = []
        self.skipped = 0

    def _writer(self, dst: str):
        if dst not in self.open:  # (a temp name of this process: two jobs never write one file)
            tmp = unique_tmp(dst)
            self.open[dst] = (tar_writer(tmp), {"samples": 0, "sentences": 0, "tmp": tmp})
        return self.open[dst]

    def _discard(self, dst: str) -> None:
        sink, entry = self.open.pop(dst)
        with contextlib.suppress(OSError):
            sink.close()
        entry["tmp"].unlink(missing_ok=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, item, batch_idx, dataloader_idx=0):
        try:
            self._on_item(item, prediction)
        except OSError as err:  # a full disk: no partial shard is left, finished ones are kept for a rerun
            if not is_full(err):
                raise
            written = sum(e["bytes"] for e in self.entries.values()) + sum(
                e["tmp"].stat().st_size for _, e in self.open.values() if e["tmp"].exists())
            for dst in list(self.open):
                self._discard(dst)
            raise DiskFull(full_message(self.out_dir, written)) from None

    def _on_item(self, item: dict, prediction) -> None:
        kind, dst = item["kind"], item["dst"]
        if kind == "clips":
            self.pending.setdefault((dst, item["key"]), []).append(prediction)
        elif kind == "drop":
            self.pending.pop((dst, item["key"]), None)
            self.skipped += 1
            print(f"skip {item['error']}")
        elif kind == "video":
            self._write_video(dst, item["sample"], np.concatenate(self.pending.pop((dst, item["key"]))))
        elif kind == "shard":
            sink, entry = self._writer(dst)  # (an input shard with no usable video gives an empty output shard)
            sink.close()
            os.replace(entry.pop("tmp"), dst)
            self.entries[Path(dst).name] = {**entry, "bytes": Path(dst).stat().st_size}
            del self.open[dst]
        elif kind == "shard_failed":
            if dst in self.open:
                self._discard(dst)
            self.failed.append(item["error"])
            print(f"skip shard {item['error']}")

    def _write_video(self, dst: str, sample: dict, features: np.ndarray) -> None:
        sink, entry = self._writer(dst)
        if not self.keep_video:
            sample = {k: v for k, v in sample.items() if "." + k not in VIDEO_EXTS}
        buf = io.BytesIO()
        np.save(buf, features.astype(np.float16))
        sample["json"].update(feature_extractor=self.extractor_name, **self.clip_settings)
        if self.provenance:
            sample["json"]["provenance"] = self.provenance
        sink.write({**sample, "features.npy": buf.getvalue(), "json": json.dumps(sample["json"]).encode()})
        entry["samples"] += 1
        entry["sentences"] += count_sentences(sample["json"])

    def on_predict_end(self, trainer, pl_module) -> None:
        self.finish(trainer.global_rank, trainer.is_global_zero, trainer.strategy.barrier)

    def finish(self, rank: int, is_zero: bool, barrier=lambda: None) -> None:
        """Each rank leaves its index entries in a part file; rank 0 merges them into index.json."""
        for dst in list(self.open):  # a shard whose end never came (only if the reader broke): not kept
            self._discard(dst)
        write_text(self.out_dir / f"index.json.rank{rank}.part",
                   json.dumps({"entries": self.entries, "failed": self.failed, "skipped": self.skipped}))
        barrier()
        if not is_zero:
            return
        parts = [json.loads(p.read_text()) for p in sorted(self.out_dir.glob("index.json.rank*.part"))]
        update_index(self.out_dir, {**{k: v for p in parts for k, v in p["entries"].items()},
                                    **({"provenance": self.provenance} if self.provenance else {})})
        for p in self.out_dir.glob("index.json.rank*.part"):
            p.unlink()
        print(f"features: {sum(len(p['entries']) for p in parts)} shards written, "
              f"{sum(e['samples'] for p in parts for e in p['entries'].values())} videos, "
              f"{sum(p['skipped'] for p in parts)} videos skipped, "
              f"{sum(len(p['failed']) for p in parts)} shards unreadable -> {self.out_dir}")


class _ReaderData(L.LightningDataModule):
    """Builds the reader once the process knows its rank (under DDP, inside each launched process)."""

    def __init__(self, jobs, model, fps: float, clip_frames: int, chunk: int, workers: int):
        super().__init__()
        self.jobs, self.model, self.fps, self.clip_frames, self.chunk, self.workers = (
            jobs, model, fps, clip_frames, chunk, workers)

    def loader(self, rank: int, world: int):
        cpu = self.model if getattr(self.model, "runs_on_cpu", False) else None  # numpy extractors: in workers
        reader = ClipReader(self.jobs, rank, world, self.model.size, self.fps, self.clip_frames, self.chunk,
                            cpu_extractor=cpu)
        return torch.utils.data.DataLoader(reader, batch_size=None, num_workers=self.workers)

    def predict_dataloader(self):
        return self.loader(self.trainer.global_rank, self.trainer.world_size)


def extract_features(shards: str, out: str, extractor: str = "builtin", fps: float = 20.0,
                     clip_frames: int = 30, clips_per_batch: int = 64, workers: int = 2, keep_video: bool = False,
                     trainer: TrainerOptions | None = TrainerOptions()) -> list[Path]:
    """Extract features for every `*.tar` in the folder `shards` into `out` (same shard names).

    Args:
        shards: a folder of video shards written by `videobert data shards`.
        out: the folder for the feature shards (finished shards are kept: a rerun resumes).
        extractor: `builtin` or `hf:<folder or hub name>` (a transformers video/image encoder).
        fps: frames per second the videos are decoded at.
        clip_frames: frames per clip (one feature row per clip).
        clips_per_batch: clips per forward pass of the extractor.
        workers: decoding processes per rank.
        keep_video: also copy the video bytes into the feature shards (off by default: training never reads
            pixels, and without them feature shards are ~10-100x smaller; the raw shards keep the video
            under the same shard name and key).
        trainer: devices, strategy, num_nodes, precision of the `Trainer.predict` loop; None runs the same
            loop in this process without a Trainer (for use inside another Trainer, e.g. the quickstart's
            `prepare_data`).
    """
    srcs = sorted(Path(shards).glob("*.tar"))
    if not srcs:
        raise FileNotFoundError(f"--shards {shards}: no .tar shards (expected the --out folder of `videobert data "
                                "shards`)")
    # one process: jobs writing one folder take turns (the second finds the shards done); a multi-process
    # job's ranks each run this, so there the output folder must be its own (docs/scale_out.md)
    single = trainer is None or (str(trainer.devices) == "1" and trainer.num_nodes == 1)
    with folder_lock(out, "features") if single else contextlib.nullcontext():
        if single:  # (holding the lock: a temp file here is a killed job's)
            sweep_temps(out, "*.tar")
        return _extract(srcs, Path(out), extractor, fps, clip_frames, clips_per_batch, workers, keep_video, trainer)


def _extract(srcs: list[Path], out_dir: Path, extractor: str, fps: float, clip_frames: int, clips_per_batch: int,
             workers: int, keep_video: bool, trainer: TrainerOptions | None) -> list[Path]:
    model = make_extractor(extractor)
    provenance = feature_provenance(model, extractor, fps, clip_frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(s), str(out_dir / s.name)) for s in srcs if not (out_dir / s.name).exists()]
    before = shard_set_provenance(out_dir)
    if before and len(jobs) < len(srcs) and fingerprint(before) != fingerprint(provenance):
        raise UsageError(f"--out {out_dir}: holds features of {describe(before)}; this run extracts {describe(provenance)}"
                         ": use another --out (a shard set has one provenance)")
    print(f"features: {len(jobs)} of {len(srcs)} shards to extract ({len(srcs) - len(jobs)} already done)")
    writer = FeatureWriter(out_dir, model.name, keep_video, fps, clip_frames, provenance)
    module = FeatureModule(model)
    data = _ReaderData(jobs, model, fps, clip_frames, clips_per_batch, workers)
    if trainer is None:
        for i, item in enumerate(data.loader(0, 1)):
            writer.write_on_batch_end(None, module, module.predict_step(item, i), None, item, i)
        writer.finish(0, True)
    else:
        pl_trainer = L.Trainer(**asdict(trainer), logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, callbacks=[writer])
        with warnings.catch_warnings():  # items are not index-sampled batches, and most return nothing: expected
            warnings.filterwarnings("ignore", message=".*(batch indices|predict returned None).*")
            pl_trainer.predict(module, datamodule=data, return_predictions=False)
    return [out_dir / s.name for s in srcs if (out_dir / s.name).exists()]
