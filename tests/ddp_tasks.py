"""The whole-test-set tasks (retrieval, summarization, text_to_video) with a seeded untrained model, on
`devices` CPU processes; run by tests/test_thumbnails.py: in-process with 1, in a clean subprocess with 2
(gloo; Lightning's `ddp` launcher re-executes this script for rank 1, so that run must not be under pytest).

Usage: python tests/ddp_tasks.py DATA_ROOT OUT_DIR DEVICES. DATA_ROOT holds `features/`, `raw/`,
`tokenizer/vocab.txt`, `visual_vocab.npz` and `ground_truth.json`; rank 0 writes OUT_DIR/metrics.json
({task: {metric: value}}) and each task's example grid under OUT_DIR/<task>/.
"""
import json
import sys
from pathlib import Path

import lightning as L

from data_modules import VideoBertDataModule
from videobert.module import VideoBertModule

TASKS = ("retrieval", "summarization", "text_to_video")


def main(root: str, out: str, devices: str) -> dict:
    results = {}
    for task in TASKS:
        L.seed_everything(0)  # the same initial weights in every run and on every rank
        dm = VideoBertDataModule(test_shards=f"{root}/features", tokenizer=f"{root}/tokenizer/vocab.txt",
                                 visual_vocab=f"{root}/visual_vocab.npz", ground_truth=f"{root}/ground_truth.json",
                                 thumbnails=f"{root}/raw", test_task=task, batch_size=3, num_workers=0)
        model = VideoBertModule(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
        trainer = L.Trainer(accelerator="cpu", devices=int(devices), strategy="ddp" if devices != "1" else "auto",
                            logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=f"{out}/{task}")
        trainer.test(model, dm)
        results[task] = {k.split("/", 2)[2]: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(f"{out}/metrics.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(*sys.argv[1:])
