"""Run folders: every `videobert fit|validate|test|predict` gets `<experiment folder>/<run id>/`.

The experiment folder is `trainer.default_root_dir` (e.g. `runs/quickstart`), or `runs/<name of the first
--config file>` when the experiment sets none. The run folder holds `config.yaml` (the resolved experiment),
`run.json` (git commit, versions, world size, derived sizes), `checkpoints/`, `csv/` (the metrics CSV),
`wandb/` and the evaluation figures; `<experiment folder>/latest` links to the newest run that has a checkpoint
(`LinkLatest`: a fit that fails before its first checkpoint leaves `latest` on the previous one). A logger's
`save_dir` and a ModelCheckpoint's `dirpath` are taken relative to the run folder (unset = the run folder,
and `checkpoints/` for checkpoints); absolute and remote (`s3://...`) paths are left as they are.

The run id is shared by every process of a run (Lightning re-executes the command for each DDP rank):
`--run_id`, else the id Lightning's launcher exported to its ranks, else a sweep agent's `WANDB_RUN_ID`
(when `WANDB_SWEEP_ID` is set), else `slurm-<SLURM_JOB_ID>.<SLURM_STEP_ID>` (the tasks of one srun), else
`TORCHELASTIC_RUN_ID` (torchrun --rdzv-id), else `WANDB_RUN_ID`, else a new `<date>-<time>-<random>`; it is
also the W&B run id. An id from the environment gets `-<n>` for the n-th later run of the same process
(e.g. `videobert report`), and `-test` / `-validate` / `-predict` for those commands: an evaluation never
writes into a training run's folder.

Resume: `fit --ckpt_path last` continues the newest run of the experiment that has `checkpoints/last.ckpt`;
`fit --ckpt_path <file>` continues the run stored in that checkpoint. Both reuse its folder and its W&B run,
so the curves continue. Checkpoints are written atomically (`AtomicCheckpointIO`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import secrets
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .safe_io import disk_full

RUN_ENV = "VIDEOBERT_RUN_ID"  # how Lightning's re-executed DDP ranks learn the id their launcher chose
_PLACED = itertools.count()
LOGGER_DIRS = {"WandbLogger": "save_dir", "CSVLogger": "save_dir", "TensorBoardLogger": "save_dir"}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def shared_run_id(explicit: str | None) -> str:
    """The id every process of this run agrees on (see the module docstring for the order)."""
    if explicit:
        return explicit
    if _inherited():
        return os.environ[RUN_ENV]
    return _environment_run_id() or new_run_id()


def _environment_run_id() -> str | None:
    """The id a sweep agent, SLURM step, torchrun rendezvous or the user's WANDB_RUN_ID gives, if any."""
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):  # an agent's run, even inside a job
        return os.environ["WANDB_RUN_ID"]
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if job and step:  # the tasks of one `srun`; the next srun of the job is another run (a requeue: the same)
        return f"slurm-{job}.{step}"
    for var, prefix in (("TORCHELASTIC_RUN_ID", "torchrun-"), ("WANDB_RUN_ID", "")):
        value = os.environ.get(var)
        if value and value != "none":
            return prefix + value
    return None


def _inherited() -> bool:
    """True in a rank that Lightning's DDP launcher started: a child (with LOCAL_RANK) of the process that
    exported the run id. Any other process, e.g. a later `videobert` started by a script, chooses its own."""
    return (bool(os.environ.get(RUN_ENV)) and "LOCAL_RANK" in os.environ
            and os.environ.get(RUN_ENV + "_PID") == str(os.getppid()))


def latest_run(root: Path) -> Path | None:
    """The run folder under `root` whose checkpoints/last.ckpt is the newest."""
    lasts = [p for p in root.glob("*/checkpoints/last.ckpt") if p.parent.parent.name != "latest"]
    return max(lasts, key=lambda p: p.stat().st_mtime).parent.parent if lasts else None


def checkpoint_run_id(path: str | Path) -> str | None:
    """The run id stored in a checkpoint by `tracking.RunRecord`, else in the run.json of the run folder it
    sits in (None for checkpoints from elsewhere)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return (ckpt.get("videobert_run") or {}).get("run_id")
    except pickle.UnpicklingError:  # e.g. hparams holding classes that weights_only does not allow
        record = Path(path).resolve().parent.parent / "run.json"
        return json.loads(record.read_text()).get("run_id") if record.is_file() else None


def experiment_root(config, config_files: list) -> Path:
    if config.trainer.default_root_dir:
        if "://" in str(config.trainer.default_root_dir):
            raise ValueError(f"trainer.default_root_dir={config.trainer.default_root_dir}: run folders are local; "
                             "to keep checkpoints on remote storage give the ModelCheckpoint a remote dirpath")
        return Path(config.trainer.default_root_dir)
    name = Path(str(config_files[0])).stem if config_files else "videobert"
    return Path("runs") / name


def place_run(config, subcommand: str, explicit_id: str | None = None) -> Path:
    """Choose this run's folder and id, and point the trainer, its loggers and checkpoints at it (in the
    parsed config, before anything is instantiated). Returns the run folder."""
    root = experiment_root(config, [str(c) for c in (config.get("config") or [])])
    if explicit_id or _inherited():  # (a launched rank: its launcher already resolved any resume)
        run_id = shared_run_id(explicit_id)
    else:
        run_id = _resumed_id(config.get("ckpt_path"), subcommand, root) or _fresh_id(subcommand)
    os.environ[RUN_ENV], os.environ[RUN_ENV + "_PID"] = run_id, str(os.getpid())
    run_dir = (root / run_id).absolute()  # (W&B resolves a relative dir against its service process's cwd)
    config.trainer.default_root_dir = str(run_dir)
    _point_loggers(config, run_dir, run_id, subcommand)
    for cb in _as_list(config.trainer.callbacks):
        if _cls(cb) == "ModelCheckpoint":
            cb.init_args.dirpath = _inside(run_dir, cb.init_args.get("dirpath") or "checkpoints")
    return run_dir


def _resumed_id(ckpt: str | None, subcommand: str, root: Path) -> str | None:
    """The run a `fit --ckpt_path last|<file>` continues (None: a new run)."""
    if subcommand != "fit" or not ckpt:
        return None
    if ckpt == "last":
        previous = latest_run(root)
        return previous.name if previous else None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt}: no such checkpoint")
    return checkpoint_run_id(ckpt)


def _fresh_id(subcommand: str) -> str:
    """A new run's id: from the environment (`-<n>` for a later run of this process: report, a script) or new;
    `-test` etc. for evaluations, which never share a training run's folder."""
    placed, run_id = next(_PLACED), _environment_run_id()
    if run_id is None:
        run_id = new_run_id()
    elif placed:
        run_id += f"-{placed}"
    return run_id if subcommand == "fit" else f"{run_id}-{subcommand}"


def _point_loggers(config, run_dir: Path, run_id: str, subcommand: str) -> None:
    for logger in _as_list(config.trainer.logger):
        key = LOGGER_DIRS.get(_cls(logger))
        if key is None:
            continue
        args = logger.init_args
        args[key] = _inside(run_dir, args.get(key) or ".")
        if _cls(logger) == "WandbLogger":
            args.id = args.get("id") or run_id
            args.name = args.get("name") or run_id
            args.job_type = args.get("job_type") or subcommand
            args.resume = "allow"  # the same id continues the same W&B run


def link_latest(run_dir: Path) -> None:
    """`<experiment folder>/latest` -> this run (relative, so the folder can move)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        tmp.replace(link)
    except OSError:  # e.g. a filesystem without symlinks: `latest` is a convenience only
        tmp.unlink(missing_ok=True)


class LinkLatest(Callback):
    """Points `<experiment folder>/latest` at this run once one of its checkpoints is on disk (checked after
    each point where ModelCheckpoint saves, at the end of fit and on a crash), so `latest` always names a run
    that has a checkpoint."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.linked = Path(run_dir), False

    def _check(self, trainer) -> None:
        if self.linked or not trainer.is_global_zero:
            return
        saved = [getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")
                 for cb in trainer.checkpoint_callbacks]
        if any(p and "://" not in str(p) and Path(p).is_file() for p in saved):
            link_latest(self.run_dir)
            self.linked = True

    def on_train_batch_end(self, trainer, *args) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer, *args) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer, *args) -> None:
        self._check(trainer)

    def on_fit_end(self, trainer, *args) -> None:
        self._check(trainer)

    def on_exception(self, trainer, *args) -> None:
        self._check(trainer)


def _inside(run_dir: Path, path: str) -> str:
    """`path` relative to the run folder; absolute and remote (`s3://...`) paths stay as they are."""
    return str(path) if "://" in str(path) else str(run_dir / path)


def _as_list(value) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _cls(item) -> str:
    path = item.get("class_path", "") if hasattr(item, "get") else ""
    return str(path).rpartition(".")[2]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a `.partial` file beside the target, fsyncs it, then renames it over the target: a kill at any
    moment leaves either the previous checkpoint or the new one, never a torn file. (Lightning's own save goes
    through fsspec, which stages the file in the system temp dir and moves it, a copy across filesystems.)
    Partial files left by a killed process are removed at this process's first save in a folder."""

    def __init__(self):
        super().__init__()
        self._swept: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        if "://" in str(path):  # remote storage: its own semantics
            return super().save_checkpoint(checkpoint, path)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in self._swept:
            for stale in path.parent.glob(".*.partial"):
                stale.unlink(missing_ok=True)
            self._swept.add(path.parent)
        # named without "last" or ".ckpt": Lightning's `--ckpt_path last` picks any file with "last" in its name
        tmp = path.with_name("." + hashlib.sha1(path.name.encode()).hexdigest()[:12] + ".partial")
        try:
            with disk_full(path.parent, lambda: tmp.stat().st_size if tmp.exists() else 0):
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except BaseException:  # (a full disk: one line naming the folder, the previous checkpoint kept)
            tmp.unlink(missing_ok=True)
            raise
