"""A 2-process CPU DDP fit over synthetic shards; run by tests/test_ddp.py in a clean subprocess.

Lightning's `ddp` launcher re-executes this script for rank 1, so it must not run under pytest.
Usage: python tests/ddp_stream.py ROOT MODE OUT_PREFIX; every rank writes OUT_PREFIX.rank<r>.json with
the source-video keys of every training and validation batch it saw.
"""
import json
import sys

import lightning as L

from data_modules import VideoBertDataModule
from videobert.module import VideoBertModule


class Recorder(L.Callback):
    def __init__(self):
        self.train, self.val, self.epochs = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch["keys"])
        self.epochs.append(trainer.current_epoch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.append(batch["keys"])


def main(root: str, mode: str, out: str) -> None:
    L.seed_everything(0)
    dm = VideoBertDataModule(train_shards=f"{root}/train", val_shards=f"{root}/val", tokenizer=f"{root}/tokenizer/vocab.txt",
                             visual_vocab=f"{root}/visual_vocab.npz", mode=mode, batch_size=4, num_workers=2,
                             batches_per_epoch=6 if mode == "resampled" else None, video_shuffle=4, sequence_shuffle=8,
                             max_text_tokens=12, max_visual_words=6)
    model = VideoBertModule(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=32,
                            warmup_steps=1)
    rec = Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        callbacks=[rec], enable_model_summary=False)
    trainer.fit(model, dm)
    with open(f"{out}.rank{trainer.global_rank}.json", "w") as f:
        json.dump({"train": rec.train, "val": rec.val, "epochs": rec.epochs, "steps": trainer.global_step}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
