"""VideoBERT's pretraining losses, computed at masked positions only, and CBT's contrastive ones.

`mlm_loss`: masked WordPiece tokens, softmax over the text vocabulary. `mvm_loss`: masked visual words,
softmax over the visual vocabulary (factorised words: one softmax per group, their cross-entropies summed). `align_loss`: does the text belong to the video, from [CLS].
CBT (continuous clip features, `cfg.feature_dim` > 0) replaces `mvm_loss` by `nce_loss`: a masked
clip's prediction must pick its own (projected) clip among all masked clips of the batch (InfoNCE), and
adds `xmodal_loss`: the text and the video of each aligned pair, encoded separately (modalities do not
attend to each other), must pick each other among the batch's pairs (symmetric InfoNCE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sequences import IGNORE

TEMPERATURE = 0.1


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.numel() == 0:  # keep the graph (and DDP's gradient buckets) whole
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


def info_nce(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i of `a` should match row i of `b` among all rows: (loss, predicted row per row of a)."""
    if len(a) == 0:
        return (a.sum() + b.sum()) * 0.0, torch.zeros(0, dtype=torch.long, device=a.device)
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / TEMPERATURE
    return _masked_ce(logits, torch.arange(len(a), device=a.device)), logits.argmax(-1)


def pretraining_losses(model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    """-> ({name: loss}, {name: (predictions, targets)}) for mlm, mvm (or nce + xmodal) and align; align's
    tuple also holds the probability of "aligned" per pair (for AUROC)."""
    feats = batch.get("visual_features")
    hidden = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], feats)
    labels = batch["labels"]
    sel = labels != IGNORE
    h, y = hidden[sel], labels[sel]  # (M, C), (M,)
    n_text = model.cfg.text_vocab_size
    is_text = y < n_text
    mlm_logits = model.token_logits(h[is_text], slice(0, n_text))
    align_logits = model.align_logits(hidden)
    has_align = batch["align_label"] != IGNORE
    losses = {"mlm_loss": _masked_ce(mlm_logits, y[is_text]),
              "align_loss": _masked_ce(align_logits[has_align], batch["align_label"][has_align])}
    preds = {"mlm": (mlm_logits.argmax(-1), y[is_text]),
             "align": (align_logits[has_align].argmax(-1), batch["align_label"][has_align],
                       align_logits[has_align].float().softmax(-1)[:, 1])}
    if model.cfg.feature_dim:
        losses.update(_cbt_losses(model, batch, h[~is_text], sel & (labels >= n_text), preds))
    elif model.cfg.visual_groups:  # factorised words: one softmax per group, the product never built
        losses["mvm_loss"], preds["mvm"] = _factorised_mvm(model, h[~is_text], y[~is_text] - n_text)
    else:
        mvm_logits = model.token_logits(h[~is_text], slice(n_text, model.cfg.vocab_size))
        losses["mvm_loss"] = _masked_ce(mvm_logits, y[~is_text] - n_text)
        preds["mvm"] = (mvm_logits.argmax(-1), y[~is_text] - n_text)
    return losses, preds


def _cbt_losses(model, batch: dict, h_clips: torch.Tensor, clip_sel: torch.Tensor, preds: dict) -> dict:
    feats = batch.get("visual_targets", batch.get("visual_features"))  # (inputs: some clips swapped, see masking)
    if feats is None:  # a batch without video: zero losses that keep every parameter in the graph
        zero = sum(p.sum() for p in (*model.nce_head.parameters(), *model.embeddings.visual_proj.parameters())) * 0.0
        return {"nce_loss": zero, "xmodal_loss": zero}
    target = model.embeddings.visual_proj(feats[clip_sel].to(h_clips.dtype))
    nce, nce_pred = info_nce(model.nce_head(h_clips), target)
    preds["nce"] = (nce_pred, torch.arange(len(target), device=target.device))
    pairs = batch["align_label"] == 1
    if not pairs.any():  # no aligned pair in this batch: nothing to contrast
        return {"nce_loss": nce, "xmodal_loss": nce * 0.0}
    sep = model(batch["input_ids"][pairs], batch["segment_ids"][pairs], batch["attention_mask"][pairs],
                feats[pairs], separate_modalities=True)
    real = batch["attention_mask"][pairs]
    seg = batch["segment_ids"][pairs]
    text = _mean(sep, real & (seg == 0))
    video = _mean(sep, real & (seg == 1))
    t2v, t2v_pred = info_nce(text, video)
    v2t, _ = info_nce(video, text)
    preds["xmodal"] = (t2v_pred, torch.arange(len(text), device=text.device))
    return {"nce_loss": nce, "xmodal_loss": (t2v + v2t) / 2}


def _mean(hidden: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    w = where.to(hidden.dtype)[..., None]
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)


def _factorised_mvm(model, h: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The sum of the groups' cross-entropies (= cross-entropy over the product words) and the predicted word."""
    codes, logits = model.embeddings.codes(words), model.group_logits(h)
    loss = sum(_masked_ce(lg, codes[:, g]) for g, lg in enumerate(logits))
    pred = sum(lg.argmax(-1) * stride for lg, stride in zip(logits, model.embeddings.group_strides))
    return loss, (pred, words)
