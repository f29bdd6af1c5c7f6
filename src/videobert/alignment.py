"""The alignment head scored as `videobert report` and `videobert spread` score it: on the held-out test
videos' text-clips pairs, unmasked, by `videobert validate` run in this process."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def run_command(cli_main, subcommand: str, args: list[str]):
    """One `videobert <subcommand>` in this process, its W&B run closed as the shell would. `cli_main`: the
    command line's `lightning_main` (passed in: the command line imports this module, not the reverse)."""
    import wandb

    cli = cli_main([subcommand, *args])
    wandb.finish()
    return cli


def alignment_on_test_videos(cli_main, experiment: str, ckpt: Path, overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """The alignment head on pairs of the held-out test videos, drawn as validation draws them, unmasked
    (`videobert validate` with `data.val_split=test` and `data.val_mask_prob=0`, one pass: the pairs
    `benchmarks/alignment_bound.py` scores its reader on): balanced accuracy, AUROC (its interval a bootstrap
    over the videos of the texts), the aligned share, both recalls (Wilson intervals) and n, the labelled
    pairs. The balanced accuracy's 95% interval is Agresti and Caffo's
    adjusted Wald interval for the mean of the two recalls (2 successes and 2 failures added to each class),
    which keeps a width where a recall is 0 or 1. Pairs of one video are correlated, so it is narrower than a
    bootstrap over videos would be."""
    from .stats import Z95, auroc, bootstrap_groups, wilson

    cli = run_command(cli_main, "validate", [
        "--config", f"experiments/{experiment}.yaml", f"--ckpt_path={ckpt}", "--data.init_args.val_split=test",
        "--data.init_args.val_mask_prob=0", "--data.init_args.val_batches=null", "--trainer.limit_val_batches=1.0",
        "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.callbacks=[]", *overrides])
    got = {k.removeprefix("val/align_"): float(v) for k, v in cli.trainer.callback_metrics.items()
           if k.startswith("val/align_")}
    n1 = round(got.get("majority_acc", 0.0) * got.get("pairs", 0.0))
    n0 = round(got.get("pairs", 0.0)) - n1
    if min(n1, n0) == 0:
        raise ValueError(f"{experiment}: the test videos gave {n1} aligned and {n0} misaligned pairs; the "
                         "alignment figures need both")
    out = {"constant": 0.5, "constant_auroc": 0.5, "aligned_pairs": n1, "misaligned_pairs": n0,
           **{k: got[k] for k in ("balanced_acc", "auroc", "majority_acc", "pairs")}}
    adjusted = []
    for name, n in (("aligned_recall", n1), ("misaligned_recall", n0)):
        k = round(got[name] * n)
        out[name], (out[f"{name}_ci_low"], out[f"{name}_ci_high"]) = k / n, wilson(k, n)
        adjusted.append(((k + 2) / (n + 4), n + 4))
    centre = sum(p for p, _ in adjusted) / 2
    half = Z95 * 0.5 * sum(p * (1 - p) / n for p, n in adjusted) ** 0.5
    out["balanced_acc_ci_low"], out["balanced_acc_ci_high"] = max(0.0, centre - half), min(1.0, centre + half)
    videos, p, labels = (np.asarray(x) for x in zip(*cli.model.align_records))
    out["auroc_ci_low"], out["auroc_ci_high"] = bootstrap_groups(videos, lambda i: auroc(p[i], labels[i]))
    return out
