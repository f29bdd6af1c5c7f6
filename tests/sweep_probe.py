"""A callback for tests/test_sweeps.py: every rank writes what its run was really built with.

Added to a real `videobert fit` command line (`--trainer.callbacks+=...`), so it also runs in the processes
that Lightning's ddp launcher starts for the other ranks. `<out>/rank<r>.json` holds the hparams of the
model and the DataModule and the values in effect: the optimizer's base learning rate, the built encoder's
sizes, the loaded visual vocabulary and the masking rate of the training stream's sequence builder.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RecordRun(L.Callback):
    def __init__(self, out: str):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        dm = trainer.datamodule
        model = pl_module.model
        layer = model.layers[0]
        effective = {  # read from the built objects, not from the config that asked for them
            "model.lr": trainer.optimizers[0].param_groups[0]["initial_lr"],  # the schedule's base rate
            "model.hidden_size": model.embeddings.word_embeddings.weight.shape[1],
            "model.num_heads": layer.attention.n_head,
            "model.intermediate_size": layer.intermediate.out_features,
            "model.visual_vocab_size": model.embeddings.word_embeddings.weight.shape[0] - model.cfg.text_vocab_size,
            "data.vocab_k": dm.vocab.k,
            "data.vocab_levels": len(dm.vocab.centroids),
            "data.mask_prob": trainer.train_dataloader.dataset.build.mask_prob,
        }
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "effective": effective,
                  "root_dir": trainer.default_root_dir,
                  "model": {k: v for k, v in pl_module.hparams.items() if _plain(v)},
                  "data": {k: v for k, v in dm.hparams.items() if _plain(v)}}
        Path(self.out).mkdir(parents=True, exist_ok=True)
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))
