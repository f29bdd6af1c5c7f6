"""A 2-process CPU DDP fit in exact mode, killed mid-epoch (SIGKILL) or resumed with the last checkpoint; run
by tests/test_ddp_resume.py in a clean subprocess (Lightning re-executes this script for rank 1).

Usage: python tests/ddp_resume.py ROOT OUT first|resume
Every rank appends one line per training batch it starts to OUT/keys.<phase>.rank<r>.jsonl ({"batch", "keys"}).
`first` checkpoints every 2 steps and SIGKILLs both ranks at the start of batch 3 (batches 0-1 are in the
checkpoint, batch 2 was trained but not saved); `resume` continues from OUT/ckpt/last.ckpt to the epoch's end.
"""
import json
import os
import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from data_modules import VideoBertDataModule
from videobert.module import VideoBertModule


class Recorder(L.Callback):
    def __init__(self, out: Path, phase: str, kill_at: int | None):
        self.out, self.phase, self.kill_at = out, phase, kill_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # (every rank: as a node failure or an OOM kill does)
        with open(self.out / f"keys.{self.phase}.rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"batch": batch_idx, "keys": batch["keys"]}) + "\n")


def main(root: str, out: str, phase: str) -> None:
    out_dir = Path(out)
    L.seed_everything(0)
    dm = VideoBertDataModule(train_shards=f"{root}/train", tokenizer=f"{root}/tokenizer/vocab.txt",
                             visual_vocab=f"{root}/visual_vocab.npz", mode="exact", batch_size=2, num_workers=2,
                             video_shuffle=4, sequence_shuffle=4, max_text_tokens=12, max_visual_words=6)
    model = VideoBertModule(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=32,
                            warmup_steps=1)
    ckpt = ModelCheckpoint(dirpath=out_dir / "ckpt", save_last=True, every_n_train_steps=2, save_top_k=0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[Recorder(out_dir, phase, 3 if phase == "first" else None), ckpt],
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm, ckpt_path=str(out_dir / "ckpt/last.ckpt") if phase == "resume" else None)


if __name__ == "__main__":
    main(*sys.argv[1:])
