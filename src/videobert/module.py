"""The LightningModule: wraps the VideoBERT encoder and its losses; one shared step for train and val.

Vocabulary sizes come from the DataModule (`vocab_sizes()`) when they are not given, so one experiment
yaml works for any tokenizer and visual vocabulary; they are stored in the checkpoint's hparams.
"""
from __future__ import annotations

import dataclasses

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from .cli_errors import UsageError, check_range
from .losses import pretraining_losses
from .sequences import IGNORE
from .model import VideoBert, VideoBertConfig
from .pretrained import config_from_bert, load_bert_weights
from .training import adamw_warmup_decay, log_data_stats, publish_test, start_epoch


def _check_ranges(args: dict) -> None:
    """Numeric settings a typo can put out of range: one clear error before anything is built or read."""
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
        check_range(f"model.{name}", args[name], 1)
    check_range("model.dropout", args["dropout"], 0.0, 1.0)
    check_range("model.lr", args["lr"], 0.0, low_open=True)
    check_range("model.weight_decay", args["weight_decay"], 0.0)
    check_range("model.warmup_steps", args["warmup_steps"], 0)


class VideoBertModule(L.LightningModule):
    def __init__(self, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 intermediate_size: int = 3072, max_positions: int = 512, dropout: float = 0.1,
                 lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 1000,
                 betas: tuple[float, float] = (0.9, 0.999),
                 loss_weights: dict[str, float] | None = None,
                 init_visual_from_centroids: bool = True, init_from: str | None = None,
                 freeze_visual_embeddings: bool = False, checkpointing: bool = False, compile: bool = False,
                 text_vocab_size: int | None = None, visual_vocab_size: int | None = None,
                 feature_dim: int | None = None, layer_norm_eps: float = 1e-12, type_vocab_size: int = 2,
                 visual_groups: list[int] | None = None, untie_visual_output: bool = False):
        """`init_from`: a Hugging Face BERT folder (or hub name) whose weights initialise the encoder; its
        sizes replace hidden_size, num_layers, num_heads and intermediate_size. `freeze_visual_embeddings`:
        keep the visual-word embeddings at their initial (centroid) values. `checkpointing`: activation
        checkpointing per layer. `compile`: torch.compile each layer (dynamic shapes). The vocabulary sizes
        and `feature_dim` (CBT: clip features instead of visual words) come from the DataModule, and so do
        `visual_groups` (factorised visual words: each group's vocabulary size). `untie_visual_output`: visual
        words are scored by an output matrix of their own instead of their input embeddings (BERT ties them)."""
        super().__init__()
        _check_ranges(locals())
        self.save_hyperparameters()
        self.loss_weights = {"mlm_loss": 1.0, "mvm_loss": 1.0, "align_loss": 1.0, "nce_loss": 1.0, "xmodal_loss": 1.0}
        unknown = set(loss_weights or {}) - set(self.loss_weights)
        if unknown:
            raise ValueError(f"model.loss_weights: unknown losses {sorted(unknown)}; expected {sorted(self.loss_weights)}")
        self.loss_weights.update(loss_weights or {})
        self.model: VideoBert | None = None
        self.evaluator: nn.Module | None = None  # the test task's metrics, from the DataModule
        self.align_records: list[tuple[str, float, int]] = []  # validation's labelled pairs (see on_validation_epoch_start)
        if text_vocab_size is not None and visual_vocab_size is not None:
            self._build()  # e.g. in load_from_checkpoint, where the sizes come from the saved hparams

    def configure_model(self) -> None:
        hp = self.hparams
        dm = self._trainer.datamodule if self._trainer is not None else None  # (load_from_checkpoint: no Trainer)
        if dm is None and self.model is None:
            raise ValueError("no DataModule to take the vocabulary sizes from: set model.text_vocab_size and "
                             "model.visual_vocab_size")
        if dm is not None and dm.max_sequence_length() > hp.max_positions:
            raise ValueError(f"sequences of up to {dm.max_sequence_length()} tokens (data.max_text_tokens + "
                             f"data.max_visual_words + 3) do not fit model.max_positions={hp.max_positions}")
        sizes = dm.vocab_sizes() if dm is not None else None
        if self.model is None:  # (a checkpoint, if any, overwrites the initial weights afterwards)
            # the initial weights follow `seed_everything` alone: a first run that builds its data in
            # prepare_data (which draws from torch's generator) must start where every rerun starts
            reset_seed()
            hp.text_vocab_size, hp.visual_vocab_size = sizes
            hp.feature_dim, hp.visual_groups = dm.feature_dim(), list(getattr(dm, "visual_groups", tuple)())
            if hp.init_from:
                cfg = config_from_bert(hp.init_from, *sizes, hp.max_positions)
                for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "layer_norm_eps",
                            "type_vocab_size"):  # the checkpoint's architecture; dropout stays ours
                    hp[key] = getattr(cfg, key)
            self._build()
            if hp.init_from:
                loaded = load_bert_weights(self.model, hp.init_from)
                rank_zero_info(f"initialised {len(loaded)} tensors from BERT {hp.init_from}")
            if hp.init_visual_from_centroids and not hp.feature_dim:
                self.model.init_visual_embeddings(dm.visual_centroids())
        elif sizes is not None and sizes != (hp.text_vocab_size, hp.visual_vocab_size):
            raise UsageError(f"the model has {hp.text_vocab_size} text + {hp.visual_vocab_size} visual tokens, "
                             f"the data {sizes[0]} + {sizes[1]}: tokenizer or visual vocabulary do not match")

    def _build(self) -> None:
        hp = self.hparams
        cfg = VideoBertConfig(hp.text_vocab_size, hp.visual_vocab_size, hp.hidden_size, hp.num_layers, hp.num_heads,
                              hp.intermediate_size, hp.max_positions, hp.type_vocab_size, hp.dropout,
                              hp.layer_norm_eps, checkpointing=hp.checkpointing, feature_dim=hp.feature_dim or 0,
                              visual_groups=tuple(hp.get("visual_groups") or ()),
                              untie_visual_output=bool(hp.get("untie_visual_output")))
        self.model = VideoBert(cfg)
        if hp.compile:
            for layer in self.model.layers:
                layer.compile(dynamic=True)
        names = ("mlm", "align") + (("nce", "xmodal") if cfg.feature_dim else ("mvm",))
        self.metrics = nn.ModuleDict({f"{stage}_{name}": MeanMetric() for stage in ("train", "val") for name in names})
        # validation alignment beyond accuracy (which the prior alone reaches): balanced accuracy and AUROC (0.5
        # for any constant answer, exactly) and the share of aligned pairs (always answering "aligned", the
        # training majority: negatives are drawn at data.negative_prob)
        self.align_metrics = nn.ModuleDict({"balanced_acc": MulticlassAccuracy(2, average="macro"),
                                            "auroc": BinaryAUROC(), "majority_acc": MeanMetric(),
                                            "aligned_recall": MeanMetric(), "misaligned_recall": MeanMetric(),
                                            "pairs": SumMetric()})  # (n: the labelled pairs scored)
        video = f"clip features of dim {cfg.feature_dim} (CBT)" if cfg.feature_dim else f"{cfg.visual_vocab_size} visual words"
        rank_zero_info(f"VideoBERT: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
                       f"vocabulary {cfg.text_vocab_size} text tokens, video as {video}")

    def on_fit_start(self) -> None:
        if self.hparams.freeze_visual_embeddings:
            self._frozen_visual = self.model.embeddings.word_embeddings.weight[self.hparams.text_vocab_size:].clone()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.hparams.freeze_visual_embeddings:  # undo whatever the optimizer did to the visual rows
            with torch.no_grad():
                self.model.embeddings.word_embeddings.weight[self.hparams.text_vocab_size:] = self._frozen_visual

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["videobert_config"] = dataclasses.asdict(self.model.cfg)  # for `videobert export`

    def shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        losses, preds = pretraining_losses(self.model, batch)
        loss = sum(self.loss_weights[k] * v for k, v in losses.items())
        n = len(batch["input_ids"])
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=stage != "train")
        self.log_dict({f"{stage}/{k}": v for k, v in losses.items()}, batch_size=n, sync_dist=stage != "train")
        for name, (pred, target, *_) in preds.items():
            if target.numel():  # accuracy: the share of predictions equal to their target
                metric = self.metrics[f"{stage}_{name}"]
                metric((pred == target).float())
                self.log(f"{stage}/{name}_acc", metric, batch_size=n)
        if stage == "val" and preds["align"][1].numel():
            self._log_alignment(*preds["align"], n)
            if self.trainer.state.fn == "validate":  # (`videobert validate` alone: the report's intervals over videos)
                self._keep_alignment(batch, preds["align"])
        return loss

    def _keep_alignment(self, batch: dict, align: tuple) -> None:
        keys = [k for k, has in zip(batch.get("keys", []), (batch["align_label"] != IGNORE).tolist()) if has]
        if len(keys) == len(align[1]):
            self.align_records += zip(keys, align[2].tolist(), align[1].tolist())

    def on_validation_epoch_start(self) -> None:
        self.align_records: list[tuple[str, float, int]] = []  # (video of the text, p(aligned), label) per pair

    def _log_alignment(self, pred: torch.Tensor, target: torch.Tensor, p_aligned: torch.Tensor, n: int) -> None:
        m = self.align_metrics
        m["balanced_acc"].update(pred, target)
        m["auroc"].update(p_aligned, target)
        m["majority_acc"].update((target == 1).float())
        m["pairs"].update(torch.tensor(float(target.numel()), device=target.device))
        for name, label in (("aligned_recall", 1), ("misaligned_recall", 0)):  # (their mean: balanced accuracy)
            if (target == label).any():
                m[name].update((pred[target == label] == label).float())
        for name, metric in m.items():  # (torchmetrics sync their states over ranks at the epoch's end)
            self.log(f"val/align_{name}", metric, on_step=False, on_epoch=True, batch_size=n)

    def on_train_epoch_start(self) -> None:
        start_epoch(self)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_data_stats(self, batch, batch_idx)
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def on_test_epoch_start(self) -> None:
        if not hasattr(self.trainer.datamodule, "test_evaluator"):
            raise ValueError("testing needs a VideoBertDataModule (it builds the test task's metrics): pass datamodule=")
        self.evaluator = self.trainer.datamodule.test_evaluator().to(self.device)
        self.task, self.test_batches = self.trainer.datamodule.hparams.test_task, 0

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_batches += 1
        self.evaluator.update(self.model, batch)

    def on_test_epoch_end(self) -> None:
        # counted over all ranks, so every rank raises alike (a rank may get no batch of a small test set)
        if self.trainer.strategy.reduce(torch.tensor(float(self.test_batches), device=self.device), reduce_op="sum") == 0:
            raise RuntimeError("the test set produced no examples: check test shards and ground truth")
        results = self.evaluator.compute(self.model)  # (first: some tasks pick their examples from its scores)
        publish_test(self, self.task, self.evaluator, results)

    def predict_step(self, item: dict, batch_idx: int) -> dict:
        """One video of `videobert predict` (`videobert.predict`): clip times, visual words, embeddings and
        zero-shot verb/noun per window; a video that cannot be read gives {"video", "error"}."""
        from .video import VideoError

        pipe, verbs, nouns = self.trainer.datamodule.pipeline(self.model)
        try:
            out = pipe.describe(item.get("path") or item, verbs, nouns)
        except (VideoError, ValueError) as err:
            return {"video": item["video"], "error": f"{item['source']}: {err}"}
        return {"video": item["video"], "source": item["source"], **out}

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_warmup_decay(self.model.named_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps,
                                  self.trainer.estimated_stepping_batches, hp.betas)
