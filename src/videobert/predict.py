"""`videobert predict`: a trained model over a folder of anyone's videos (or feature shards), on one device or
many (`--trainer.devices N --trainer.strategy ddp`: each rank takes every N-th video, so each is read once).

    videobert predict --config experiments/quickstart.yaml --ckpt_path runs/quickstart/latest/checkpoints/last.ckpt \\
        --data.init_args.predict_videos path/to/videos

Per video, in `<run folder>/predictions/`: one line of `predictions.jsonl` ({video, source, clips: [[start,
end]], visual_words, zero_shot: [{start, end, verb, verb_score, noun, noun_score, verbs, nouns}]}) and
`<video>.clips.npy` (clips, hidden) / `<video>.video.npy` (hidden,) embeddings: plain json and numpy, no
need for this package to read them. Raw video goes through the extractor the training features were made
with (as `videobert.api`). A video that cannot be read is a counted skip, listed in `skipped.json`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from lightning.pytorch.callbacks import BasePredictionWriter

from .safe_io import atomic_path, disk_full, write_text
from .shards import VIDEO_EXTS


class PredictItems(torch.utils.data.IterableDataset):
    """This rank's share of the inputs: every `world`-th video file of a folder, or every `world`-th sample of
    a folder of feature shards, as {"video", "source", and "path" or "features" + "clips"}."""

    def __init__(self, videos: str | None, shards: str | None, rank: int, world: int):
        if (videos is None) == (shards is None):
            raise ValueError("videobert predict: set exactly one of data.predict_videos (a folder of videos) and "
                             "data.predict_shards (a folder of feature shards)")
        folder = Path(videos or shards)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder (data.predict_{'videos' if videos else 'shards'})")
        self.videos, self.rank, self.world = videos is not None, rank, world
        pattern = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (VIDEO_EXTS if videos else (".tar",))]
        if not pattern:
            raise FileNotFoundError(f"{folder}: no {'videos (' + ', '.join(VIDEO_EXTS) + ')' if videos else '.tar shards'}")
        self.files = pattern

    def __iter__(self):
        if self.videos:
            for path in self.files[self.rank::self.world]:
                yield {"video": path.stem, "source": str(path), "path": str(path)}
            return
        samples = wds.tarfile_to_samples()({"url": str(t)} for t in self.files)
        for i, sample in enumerate(samples):
            if i % self.world == self.rank:
                meta = json.loads(sample["json"])
                feats = np.load(io.BytesIO(sample["features.npy"])).astype(np.float32)
                yield {"video": sample["__key__"], "source": sample.get("__url__", "?"), "features": feats,
                       "clips": meta.get("clips")}


def extractor_record(samples) -> dict | None:
    """The extractor and clip settings the feature stage wrote into a sample's json (the first that has them)."""
    for sample in samples:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        if "feature_extractor" in meta:
            record = {"spec": meta["feature_extractor"], "fps": meta.get("feature_fps", 20.0),
                      "clip_frames": meta.get("feature_clip_frames", 30)}
            return {**record, "provenance": meta["provenance"]} if meta.get("provenance") else record
    return None


def pipeline_for(dm, model):
    """(`VideoBertPipeline` with the DataModule's tokenizer, visual vocabulary and training features' extractor,
    zero-shot verbs, nouns: `data.predict_labels`, else the ground truth's label words, else None)."""
    from .api import VideoBertPipeline

    hp = dm.hparams
    record = extractor_record(dm._train_samples()) if dm._paths().get("train") else None
    if record is None and hp.predict_videos:
        raise ValueError("videobert predict on raw video needs the extractor the model was trained with: no local "
                         "training feature shard names one; extract features and use data.predict_shards")
    pipe = VideoBertPipeline(model, dm.tokenizer, dm.vocab, record or {"spec": "builtin", "fps": 20.0, "clip_frames": 30},
                             str(next(model.parameters()).device), hp.max_visual_words)
    labels = hp.predict_labels or dm._paths().get("ground_truth")
    labels = json.loads(Path(labels).read_text()) if labels and Path(labels).is_file() else {}
    return pipe, labels.get("verbs"), labels.get("nouns")


def loader(items: PredictItems) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(items, batch_size=None, collate_fn=lambda item: item)


class PredictionWriter(BasePredictionWriter):
    """Writes each rank's predictions as they come; rank 0 merges the ranks' lines into predictions.jsonl."""

    def __init__(self, out_dir: str | Path):
        super().__init__(write_interval="batch")
        self.out = Path(out_dir) / "predictions"

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        with disk_full(self.out, lambda: _bytes(self.out)):  # (a full disk: one line; each .npy appears whole)
            self._write(trainer, prediction)

    def _write(self, trainer, prediction) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        if "error" in prediction:
            with open(self.out / f"skipped.rank{rank}.jsonl", "a") as f:
                f.write(json.dumps({"video": prediction["video"], "error": prediction["error"]}) + "\n")
            print(f"skip {prediction['error']}")
            return
        for name, key in (("clips", "clip_embeddings"), ("video", "video_embedding")):
            with atomic_path(self.out / f"{prediction['video']}.{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, prediction.pop(key))
        with open(self.out / f"predictions.rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(prediction) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return
        with disk_full(self.out, lambda: _bytes(self.out)):
            self._merge()

    def _merge(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = [json.loads(line) for p in sorted(self.out.glob("predictions.rank*.jsonl")) for line in open(p)]
        skipped = [json.loads(line) for p in sorted(self.out.glob("skipped.rank*.jsonl")) for line in open(p)]
        write_text(self.out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["video"])))
        write_text(self.out / "skipped.json", json.dumps(sorted(skipped, key=lambda r: r["video"]), indent=1))
        for part in [*self.out.glob("predictions.rank*.jsonl"), *self.out.glob("skipped.rank*.jsonl")]:
            part.unlink()
        print(f"predict: {len(rows)} videos -> {self.out}/predictions.jsonl; skipped {len(skipped)}")


def _bytes(folder: Path) -> int:
    """Bytes of the files in `folder` (what a prediction run has written so far)."""
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
