"""Fine-tuning a pretrained VideoBERT: thin LightningModules for the tasks that train a head.

    videobert fit --config experiments/quickstart.yaml --config experiments/finetune/sentiment.yaml \
        --model.init_args.pretrained=runs/quickstart/latest/checkpoints/last.ckpt

`pretrained` (required) is a `videobert fit` checkpoint of the VideoBERT pretraining module or a
`videobert export` folder; its vocabulary and variant (visual words or CBT features) must be the
DataModule's. The DataModule's `task` gives the examples and, through its Data stage, the head
(`head(encoder)`) and the metrics; these modules only train, log and hand batches over.
"""
from __future__ import annotations

import dataclasses

from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from .model import VideoBert
from .hub import model_folder
from .pretrained import load_pretrained, model_from_checkpoint
from .training import adamw_warmup_decay, log_data_stats, publish_test, start_epoch


def load_encoder(path: str, datamodule) -> VideoBert:
    """The pretrained encoder at `path`, checked against what the DataModule feeds it."""
    p = Path(path)
    if p.is_file():
        model = model_from_checkpoint(p)[0]
    else:  # an export folder, or a Hugging Face Hub repo id of one
        model = load_pretrained(model_folder(path, "model.pretrained"))[0].train()
    cfg, sizes = model.cfg, datamodule.vocab_sizes()
    if bool(cfg.feature_dim) != bool(datamodule.feature_dim()):
        kinds = ("visual words (VideoBERT)", "clip features (CBT)")
        raise ValueError(f"model.pretrained={path} takes {kinds[bool(cfg.feature_dim)]}, the data gives "
                         f"{kinds[bool(datamodule.feature_dim())]}: set data.video_input to match the checkpoint")
    if (cfg.text_vocab_size, cfg.visual_vocab_size) != sizes or cfg.feature_dim not in (0, datamodule.feature_dim()):
        raise ValueError(f"model.pretrained={path} has {cfg.text_vocab_size} text + {cfg.visual_vocab_size} visual "
                         f"tokens (feature dim {cfg.feature_dim}), the data {sizes[0]} + {sizes[1]} (feature dim "
                         f"{datamodule.feature_dim()}): it was pretrained with another tokenizer or visual vocabulary")
    if datamodule.max_sequence_length() > cfg.max_positions:
        raise ValueError(f"sequences of up to {datamodule.max_sequence_length()} tokens do not fit the pretrained "
                         f"model's {cfg.max_positions} positions: lower data.max_text_tokens / max_visual_words")
    return model


class FineTuneModule(L.LightningModule):
    """The pretrained encoder plus the task's head; AdamW with linear warmup and decay."""

    task = ""  # the DataModule's `task` this module trains
    val_metrics = True  # compute the task's metrics on the validation set too

    def __init__(self, pretrained: str, lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 50,
                 dropout: float = 0.1, freeze_encoder: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net: nn.Module | None = None

    def head_args(self) -> dict:
        return {}

    def configure_model(self) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        data = getattr(dm, "task_data", None)
        if data is None or data.task != self.task:
            raise ValueError(f"{type(self).__name__} fine-tunes on data.task={self.task}, the DataModule has task="
                             f"{getattr(getattr(dm, 'hparams', {}), 'task', None)}: set data.init_args.task: {self.task}")
        encoder = load_encoder(self.hparams.pretrained, dm)
        reset_seed()  # (the head's initial weights follow seed_everything, not what prepare_data drew)
        self.net = data.head(encoder, self.hparams.dropout, **self.head_args())
        if self.hparams.freeze_encoder:
            encoder.requires_grad_(False)
        trained = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        rank_zero_info(f"{self.task}: fine-tuning {trained / 1e6:.2f}M parameters from {self.hparams.pretrained}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The encoder's config and the head's settings, so `videobert export` writes a folder `videobert.api`
        loads (the encoder; a captioning head too)."""
        checkpoint["videobert_config"] = dataclasses.asdict(self.net.encoder.cfg)
        checkpoint["videobert_head"] = {"task": self.task, **getattr(self.net, "settings", {})}

    def on_train_epoch_start(self) -> None:
        start_epoch(self)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_data_stats(self, batch, batch_idx)
        loss = self.net.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.evaluator = self.trainer.datamodule.task_data.metrics().to(self.device) if self.val_metrics else None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self.net.loss(batch), batch_size=len(batch["input_ids"]), sync_dist=True)
        if self.evaluator is not None:
            self.evaluator.update(self.net, batch)

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is not None:
            self.log_dict({f"val/{self.task}/{k}": v for k, v in self.evaluator.compute().items()})

    def on_test_epoch_start(self) -> None:
        self.evaluator = self.trainer.datamodule.task_data.metrics().to(self.device)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluator.update(self.net, batch)

    def on_test_epoch_end(self) -> None:
        publish_test(self, self.task, self.evaluator, self.evaluator.compute())

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_warmup_decay(self.net.named_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps,
                                  self.trainer.estimated_stepping_batches)


class SentimentModule(FineTuneModule):
    """Video sentiment: a linear head on the mean `[CLS]` of a video's segments (`videobert.tasks.sentiment`);
    the video+text or video-only variant is the data's `task_options: {inputs: video_text | video}`."""

    task = "sentiment"


class CaptioningModule(FineTuneModule):
    """Captioning: the encoder's states of a segment's visual words into a small transformer decoder
    (`videobert.tasks.captioning`); greedy decoding at test time, scored with pycocoevalcap."""

    task, val_metrics = "captioning", False  # (validation: teacher-forced loss only; decoding + Java is slow)

    def __init__(self, pretrained: str, lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 50,
                 dropout: float = 0.1, freeze_encoder: bool = False, decoder_layers: int = 2, decoder_heads: int = 4):
        super().__init__(pretrained, lr, weight_decay, warmup_steps, dropout, freeze_encoder)
        self.save_hyperparameters()

    def head_args(self) -> dict:
        return {"decoder_layers": self.hparams.decoder_layers, "decoder_heads": self.hparams.decoder_heads}
