"""VideoBERT's pretraining losses, computed at masked positions only.

`mlm_loss`: masked WordPiece tokens, softmax over the text vocabulary. `mvm_loss`: masked visual words,
softmax over the visual vocabulary. `align_loss`: does the text belong to the video, from [CLS].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sequences import IGNORE


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.numel() == 0:  # keep the graph (and DDP's gradient buckets) whole
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


def pretraining_losses(model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    """-> ({name: loss}, {name: (predictions, targets)}) for mlm, mvm and align."""
    hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
    labels = batch["labels"]
    sel = labels != IGNORE
    h, y = hidden[sel], labels[sel]  # (M, C), (M,)
    n_text = model.cfg.text_vocab_size
    is_text = y < n_text
    mlm_logits = model.token_logits(h[is_text], slice(0, n_text))
    mvm_logits = model.token_logits(h[~is_text], slice(n_text, model.cfg.vocab_size))
    align_logits = model.align_logits(hidden)
    has_align = batch["align_label"] != IGNORE
    losses = {"mlm_loss": _masked_ce(mlm_logits, y[is_text]),
              "mvm_loss": _masked_ce(mvm_logits, y[~is_text] - n_text),
              "align_loss": _masked_ce(align_logits[has_align], batch["align_label"][has_align])}
    preds = {"mlm": (mlm_logits.argmax(-1), y[is_text]), "mvm": (mvm_logits.argmax(-1), y[~is_text] - n_text),
             "align": (align_logits[has_align].argmax(-1), batch["align_label"][has_align])}
    return losses, preds
