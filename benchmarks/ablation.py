"""One ablation row: fit + zero-shot test a quickstart variant, print its figures as one json line.

    python benchmarks/ablation.py NAME CACHE_DIR [--data.init_args.vocab_k=12 ...]

Trains `experiments/quickstart.yaml` with the given overrides into runs/ablation/NAME (cache CACHE_DIR; a
copy of data/quickstart/ with another extractor needs its own), then tests zero-shot; prints verb/noun top-1
of the model and of the word lookup (all steps, seen and unseen pairs) with their 95% intervals and n, and
the last validation alignment figures.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    name, cache, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    root = Path("runs/ablation") / name
    vb = [sys.executable, "-m", "videobert.cli"]
    common = ["--config", "experiments/quickstart.yaml", f"--data.init_args.cache_dir={cache}",
              f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false", *extra]
    start = time.time()
    subprocess.run([*vb, "fit", *common], check=True)
    fit_s = time.time() - start
    subprocess.run([*vb, "test", *common, f"--ckpt_path={root}/latest/checkpoints/last.ckpt"], check=True)
    res = json.loads(sorted(root.glob("*-test/zero_shot_results.json"))[-1].read_text())
    rows = [r for r in csv.DictReader(open(next(root.glob("latest/csv/*/metrics.csv")))) if r.get("val/align_auroc")]
    out = {"name": name, "overrides": extra, "fit_s": round(fit_s), "n": res["steps"], "n_unseen": res.get("unseen_pair_steps"),
           "n_seen": res.get("seen_pair_steps")}
    for k in (f"{what}_top1{who}{part}" for who in ("", "_lookup") for what in ("verb", "noun")
              for part in ("", "_seen_pairs", "_unseen_pairs")):
        if k in res:
            out[k] = [round(100 * res[k], 1), round(100 * res[f"{k}_ci_low"], 1), round(100 * res[f"{k}_ci_high"], 1)]
    out.update({f"val_align_{k}": round(float(rows[-1][f"val/align_{k}"]), 3) for k in ("balanced_acc", "auroc")})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
