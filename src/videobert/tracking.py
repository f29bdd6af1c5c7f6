"""What a run records about itself, whatever logger it uses (W&B, CSV, both).

- `SaveRunConfig`: `config.yaml` (the resolved experiment: yaml files + command-line overrides) and
  `run.json` (git commit and dirty flag, package versions, world size, derived sizes) in the run folder,
  and the same, as the run's config, in every logger.
- `RunRecord`: derived sizes once training starts (global batch, tokens per step, steps per epoch), the
  run id inside every checkpoint (so `--ckpt_path` resumes the same W&B run), and, on W&B, the lineage:
  the shards used as an input artifact, the tokenizer and visual vocabulary logged as artifacts of the run;
  at the end of fit, `curves.png` (loss/accuracy/throughput curves from the metrics CSV) and
  `visual_words.png` (the clips nearest to the most-used visual words; W&B `media/visual_words`).
- `Throughput`: `perf/samples_per_s` and `perf/data_wait_fraction` (time between the end of a step and the
  start of the next, i.e. waiting for the loader, over the whole step time).

Metric names are listed in docs/metrics.md.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn

PACKAGES = ("torch", "lightning", "torchmetrics", "wandb", "webdataset", "omegaconf", "jsonargparse", "numpy",
            "tokenizers", "av", "faiss-cpu", "transformers", "videobert")


def git_state(where: Path) -> dict:
    """The commit of the code that runs, and whether the checkout has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


class SaveRunConfig(SaveConfigCallback):
    """LightningCLI's config saver, writing into the run folder and logging the config to every logger."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            resumes = len(list(run_dir.glob("config*.yaml")))  # a resumed run keeps its first config
            name = "config.yaml" if not resumes else f"config.resume-{resumes}.yaml"
            self.parser.save(self.config, str(run_dir / name), skip_none=False, overwrite=True)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        run_dir = Path(trainer.default_root_dir)
        command = trainer.state.fn.value if trainer.state.fn else None
        record = {"run_id": run_dir.name, "run_dir": str(run_dir), "command": command,
                  "git": git_state(Path(__file__).resolve().parent), "versions": package_versions(),
                  "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "started": time.time()}
        path = run_dir / "run.json"
        if path.exists():  # a resume: the first record stays, each session is listed
            first = json.loads(path.read_text())
            session = {k: record[k] for k in ("command", "git", "world_size", "started")}
            record = {**first, "sessions": [*first.get("sessions", []), session]}
        _write_json(path, record)
        for logger in trainer.loggers:
            logger.log_hyperparams({"experiment": config, "run": record})


class RunRecord(L.Callback):
    """Derived sizes, the run id in checkpoints, and (on W&B) the data lineage. See the module docstring."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["videobert_run"] = {"run_id": self.run_dir.name, "run_dir": str(self.run_dir)}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        derived = self.derived(trainer)
        if not trainer.is_global_zero:
            return
        path = self.run_dir / "run.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        _write_json(path, {**record, "derived": derived})
        for logger in trainer.loggers:
            logger.log_hyperparams({"derived": derived})
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                try:
                    log_lineage(logger.experiment, trainer.datamodule)
                except Exception as err:  # noqa: BLE001 -- lineage is a record; it must not stop training
                    rank_zero_warn(f"W&B lineage artifacts not logged: {type(err).__name__}: {err}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .visual_words import publish_visual_words

        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()  # flush the CSV before it is plotted
            save_curves(self.run_dir)
        try:  # the paper's figure: clips nearest to some visual words (rank 0 draws; no collectives)
            publish_visual_words(trainer)
        except Exception as err:  # noqa: BLE001 -- a figure must never fail a finished training run
            rank_zero_warn(f"no visual-words figure: {type(err).__name__}: {err}")

    @staticmethod
    def derived(trainer: L.Trainer) -> dict:
        dm, accumulate = trainer.datamodule, trainer.accumulate_grad_batches
        per_device = getattr(getattr(dm, "hparams", {}), "get", lambda *_: None)("batch_size")
        out = {"world_size": trainer.world_size, "accumulate_grad_batches": accumulate,
               "steps_per_epoch": int(trainer.num_training_batches // accumulate)
               if trainer.num_training_batches != float("inf") else None}
        if per_device:
            out["global_batch_size"] = per_device * trainer.world_size * accumulate
            if hasattr(dm, "max_sequence_length"):  # padded length: an upper bound on the real tokens
                out["tokens_per_step_max"] = out["global_batch_size"] * dm.max_sequence_length()
        hp = getattr(trainer.lightning_module, "hparams", {})
        for key in ("text_vocab_size", "visual_vocab_size", "feature_dim"):  # (known once the model is built:
            if hp.get(key) is not None:  # the experiment config logged before holds null for them)
                out[key] = hp[key]
        return out


def log_lineage(run, datamodule) -> None:
    """Shards -> this run -> tokenizer, visual vocabulary (and the checkpoints WandbLogger logs with
    `log_model`). Offline, W&B cannot record an input, so the shards are logged as an artifact of the run
    and named in the others' metadata. Local shard folders are referenced (`file://`, not uploaded, no
    checksum pass over the corpus); other URLs are recorded in the artifact's metadata."""
    import wandb

    inputs = datamodule.inputs() if hasattr(datamodule, "inputs") else {}
    splits = {k: v for k, v in inputs.items() if k in ("train", "val", "test")}
    if splits:
        shards = wandb.Artifact(f"shards-{run.project or 'videobert'}", type="dataset",
                                metadata={k: json.loads(json.dumps(v, default=str)) for k, v in splits.items()})
        for split, spec in splits.items():
            for i, item in enumerate(spec if isinstance(spec, list) else [spec]):
                urls = item.get("urls") if isinstance(item, dict) else getattr(item, "urls", item)  # (or a ShardSet)
                local = Path(str(urls))
                if local.exists():  # (brace patterns and pipe: URLs: metadata only)
                    shards.add_reference(local.resolve().as_uri(), name=f"{split}/{i}", checksum=False)
                    _add_stamps(shards, local, f"stamps/{split}/{i}")  # (copies: the reference has no checksum)
        if run.offline:  # W&B marks inputs only online; offline, the shards are logged and named in metadata
            run.log_artifact(shards)
        else:
            run.use_artifact(shards)
    for key, kind in (("tokenizer", "tokenizer"), ("visual_vocab", "visual-vocabulary")):
        path = Path(str(inputs.get(key) or ""))
        if inputs.get(key) and path.is_file():
            art = wandb.Artifact(f"{kind}-{_slug(path.parent)}", type=kind,  # (one name per source: W&B versions it)
                                 metadata={"source": str(path), "shards": shards.name if splits else None})
            art.add_file(str(path))
            if key == "tokenizer" and path.with_name("tokenizer_config.json").is_file():
                art.add_file(str(path.with_name("tokenizer_config.json")))
            run.log_artifact(art)


def _slug(folder: Path) -> str:
    """A stable artifact name part for a data folder: its last two path parts (data/quickstart -> data-quickstart)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(folder.resolve().parts[-2:])).strip("-")


def _add_stamps(artifact, folder: Path, name: str) -> None:
    """The small files that change whenever the data is rebuilt: the shard index, and the build's settings stamp
    (in the folder or up to two folders above it, as the quickstart cache keeps it), so a rebuilt corpus gives
    a new version of the dataset artifact although its shards are references without a checksum."""
    if folder.is_dir() and (folder / "index.json").is_file():
        artifact.add_file(str(folder / "index.json"), name=f"{name}/index.json")
    for up in (folder, *list(folder.resolve().parents)[:2]):
        if (up / "settings.json").is_file():
            artifact.add_file(str(up / "settings.json"), name=f"{name}/settings.json")
            break


class Throughput(L.Callback):
    """Every `log_every_n_steps` batches, over those batches (all ranks): `perf/samples_per_s`,
    `perf/tokens_per_s` (real tokens), `perf/data_wait_fraction`, `perf/seq_len` (real tokens per sequence),
    `perf/flops_per_token` and `perf/mfu` (model FLOPs utilisation against `videobert.perf.peak_flops`).
    Tokens are counted on the device and read once per window (no host sync per step)."""

    def __init__(self):
        self._end, self._tokens, self._window = None, None, []  # (waited, total seconds, samples) per batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        waited = self._start - self._end if self._end is not None else 0.0
        has = isinstance(batch, dict) and "input_ids" in batch
        self._window.append((waited, waited + now - self._start, len(batch["input_ids"]) if has else 0))
        if has and "attention_mask" in batch:
            real = batch["attention_mask"].sum()
            self._tokens = real if self._tokens is None else self._tokens + real
        self._end = now
        if trainer._logger_connector.should_update_logs:  # (Lightning's own test: the loggers write this step)
            self._log(trainer, pl_module)

    def _log(self, trainer, pl_module) -> None:
        waited, total, samples = (sum(col) for col in zip(*self._window))
        tokens = float(self._tokens) if self._tokens is not None else 0.0  # (the window's one host read)
        self._window, self._tokens = [], None
        if total <= 0 or not samples:
            return
        world = trainer.world_size
        out = {"perf/samples_per_s": samples * world / total, "perf/data_wait_fraction": waited / total}
        encoder = next((m for m in pl_module.modules() if type(m).__name__ == "VideoBert"), None)
        if tokens and encoder is not None:
            from .perf import flops_per_token, peak_flops

            out["perf/tokens_per_s"] = tokens * world / total
            out["perf/seq_len"] = tokens / samples
            out["perf/flops_per_token"] = flops_per_token(encoder.cfg, tokens / samples)
            peak = peak_flops(pl_module.device)
            if peak:
                out["perf/mfu"] = out["perf/tokens_per_s"] * out["perf/flops_per_token"] / (peak * world)
        pl_module.log_dict(out, on_step=True, on_epoch=False, batch_size=1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end = None  # epoch boundaries and validation are not data waits

    def on_validation_start(self, trainer, pl_module) -> None:
        self._end = None


def save_curves(run_dir: Path, keys=("train/loss", "val/loss", "train/mlm_acc", "val/mlm_acc", "val/align_acc",
                                     "val/align_auroc", "perf/samples_per_s")) -> Path | None:
    """`<run>/curves.png` from every metrics CSV of the run (a resumed run has one per session)."""
    import csv

    from .plots import curves_figure

    rows = [r for f in sorted(run_dir.glob("csv/*/metrics.csv")) for r in csv.DictReader(open(f))]
    present = [k for k in keys if any(r.get(k) for r in rows)]
    if not present:
        return None
    image = curves_figure(rows, present)
    if image is None:
        return None
    path = run_dir / "curves.png"
    image.save(path)
    return path
