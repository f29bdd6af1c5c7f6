"""What a `videobert fit|validate|test|predict` prints: a progress bar whose epoch count has a real end, where a
finished fit left its run folder, checkpoint and W&B run, and no warnings a user cannot act on."""
from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

# Warnings that name nothing a user of videobert can change (each is handled or decided on our side).
QUIET = (
    # run folders are new per run; ModelCheckpoint's dirpath is set inside one on purpose (see runs.py)
    r".*Checkpoint directory .* exists and is not empty.*",
    # an evaluation's run folder is new: the checkpoint's ModelCheckpoint state (best scores) is not needed there
    r".*The dirpath has changed from.*",
    # our streams give every worker its own shards and batch count, so their __len__ is exact
    r".*`IterableDataset` has `__len__` defined.*",
    # `videobert` hands LightningCLI its own command line as `args` (so in-process runs and the shell agree)
    r".*LightningCLI's args parameter is intended.*",
    # torch 2.13 vs Lightning internals
    r".*LeafSpec.*",
    # the built-in corpus is small: a DataLoader worker per core is not the bottleneck (measured in perf/)
    r".*does not have many workers which may be a bottleneck.*",
)


class _NoAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger" line (an advertisement, printed by every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_warnings() -> None:
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAdverts())


def drop_wandb_anonymous(trainer) -> None:
    """Lightning's WandbLogger hands wandb.init `anonymous=None`, which W&B 0.31 answers with a warning on every run
    ("The anonymous setting has no effect"): leave the setting out unless the user asked for it."""
    for logger in trainer.loggers:
        init = getattr(logger, "_wandb_init", None)
        if type(logger).__name__ == "WandbLogger" and isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)


def last_epoch(trainer) -> int | None:
    """The index of the last epoch this fit runs: from max_epochs, else from max_steps and the epoch length."""
    if trainer.max_epochs is not None and trainer.max_epochs >= 0:
        return trainer.max_epochs - 1
    batches = trainer.num_training_batches
    if trainer.max_steps and trainer.max_steps > 0 and batches and batches != float("inf"):
        return math.ceil(trainer.max_steps * trainer.accumulate_grad_batches / batches) - 1
    return None


class StepsRichProgressBar(RichProgressBar):
    """Lightning's rich bar, reading `Epoch 1/2` for a fit bounded by max_steps (Lightning's own: `Epoch 1/-2`)."""

    def _get_train_description(self, current_epoch: int) -> str:
        last = last_epoch(self.trainer)
        text = f"Epoch {current_epoch}" + (f"/{last}" if last is not None else "")
        return f"{text:{len(self.validation_description)}}"


def progress_bar():
    return StepsRichProgressBar() if _RICH_AVAILABLE else TQDMProgressBar()


def _shown(path: str | Path) -> str:
    """`path` relative to the working directory when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def wandb_line(trainer) -> str | None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            if getattr(run, "offline", False) or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
                folder = _shown(Path(run.dir).parent)
                return f"W&B run:    {folder} (offline; `wandb sync {folder}` uploads it)"
            return f"W&B run:    {run.url}"
    return None


def fit_summary(trainer, run_dir: Path) -> list[str]:
    """Where a finished fit left its results, one line each."""
    saved = [cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks]
    saved = [p for p in saved if p]
    lines = [f"run folder: {_shown(run_dir)}",
             f"checkpoint: {_shown(saved[0])}" if saved else "checkpoint: none saved (no ModelCheckpoint callback)"]
    wandb = wandb_line(trainer)
    return [*lines, wandb] if wandb else lines
