"""What the pretraining (`module.py`) and fine-tuning (`finetune.py`) LightningModules do alike around
their steps: reseed the training stream each epoch, count and log the videos the stream read and the bad
samples it skipped, AdamW with linear warmup and decay, and publishing a test task's results."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from .stats import with_intervals
from .tasks.figures import publish, publish_examples


def start_epoch(module) -> None:
    """Reseed the DataModule's stream (it reaches the stream before the epoch's iterator starts, epochs > 0)."""
    dm = module.trainer.datamodule
    if hasattr(dm, "set_epoch"):
        dm.set_epoch(module.current_epoch, module.global_step)


def log_data_stats(module, batch: dict, batch_idx: int) -> None:
    """The batch's `data_stats` (videos read, bad samples skipped by the stream), added up on the device with no
    host sync and no collective; every `log_every_n_steps` batches and at the epoch's last one, one all-reduce
    sums them over ranks for the DataModule (which may stop the run: every rank flushes at the same batches
    and sees the same sums, so all stop at once), logged per epoch as `data/videos` and
    `data/skipped_samples`. Call it from `training_step` on every rank."""
    if "data_stats" not in batch:
        return
    stats = batch["data_stats"].to(module.device, torch.float32, non_blocking=True)
    module._data_counts = stats if getattr(module, "_data_counts", None) is None else module._data_counts + stats
    trainer, every = module.trainer, max(1, module.trainer.log_every_n_steps)
    if (batch_idx + 1) % every and batch_idx + 1 != trainer.num_training_batches:
        return
    videos, skipped = trainer.strategy.reduce(module._data_counts, reduce_op="sum").tolist()  # (one sync per flush)
    module._data_counts = None
    if hasattr(trainer.datamodule, "count_skips"):
        trainer.datamodule.count_skips(videos, skipped)
    module.log_dict({"data/videos": videos, "data/skipped_samples": skipped}, on_step=False, on_epoch=True,
                    reduce_fx="sum", batch_size=1)  # (already summed over ranks: no sync_dist)


def adamw_warmup_decay(named_parameters, lr: float, weight_decay: float, warmup_steps: int, total_steps: float,
                       betas: tuple[float, float] = (0.9, 0.999)) -> dict:
    """`configure_optimizers`' answer: AdamW (no weight decay on biases and norms, the tensors with ndim < 2)
    over the parameters that require grad, its learning rate warmed up linearly for `warmup_steps` (at most
    half the run), then decayed linearly to zero at `total_steps`."""
    if not math.isfinite(total_steps):
        raise ValueError("set trainer.max_steps: the learning-rate schedule needs a finite number of steps")
    params = [p for _, p in named_parameters if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=lr, betas=tuple(betas))
    warmup = min(warmup_steps, int(total_steps) // 2)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def publish_test(module, task: str, evaluator, results: dict) -> dict:
    """The end of a test task on every rank: its figures and example table (rank 0 writes them to the run
    folder and W&B; `figures()` is computed on every rank, its states are synced), its metrics with the 95%
    interval of every proportion (`evaluator.RATES`) logged as `test/<task>/...` and written to
    `<task>_results.json` in the run folder, and a summary in the log."""
    results = with_intervals(results, getattr(evaluator, "RATES", {}))
    if hasattr(evaluator, "figures"):
        figures = evaluator.figures()
        if module.trainer.is_global_zero:
            publish(module.trainer, figures)
    if module.trainer.is_global_zero:
        if hasattr(evaluator, "examples"):
            publish_examples(module.trainer, task, evaluator.examples())
        out = Path(module.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{task}_results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    module.log_dict({f"test/{task}/{k}": v for k, v in results.items()})
    rank_zero_info(f"{task} on held-out videos:\n" + getattr(evaluator, "summary", summary)(results))
    return results


def summary(results: dict[str, float]) -> str:
    """One line per figure: the value, its 95% interval where it has one (the _ci_ keys fold into it)."""
    lines = []
    for k, v in results.items():
        if k.endswith(("_ci_low", "_ci_high")):
            continue
        ci = f"  [{results[k + '_ci_low']:.4f}, {results[k + '_ci_high']:.4f}]" if k + "_ci_low" in results else ""
        lines.append(f"  {k:<28} {v:8.4f}{ci}")
    return "\n".join(lines)
