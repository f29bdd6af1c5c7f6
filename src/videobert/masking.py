"""How a batch of VideoBERT sequences becomes a pretraining task: which tokens are targets and what the
model sees in their place.

- `mask_tokens`: BERT's masking. `mask_prob` of the non-special tokens of a row are targets; of these 80%
  become [MASK], 10% a random token of the same modality, 10% stay (`visual_split` sets these three shares
  for visual words, e.g. (1, 0, 0): always [MASK]).
- `force_mask`: positions that are targets whatever the draw, always shown as [MASK]: whole-action masking
  (every label word of a sentence, its verb and its noun together) and future masking (the first clips of
  the next step, with nothing after them).
- `swap_clip_features`: CBT has no visual words, so a "random visual token" is another clip's features drawn
  from the batch (a clip that keeps its own features would be a trivial target).
"""
from __future__ import annotations

import numpy as np

IGNORE = -100  # label of a position or sequence with no target
BERT_SPLIT = (0.8, 0.1, 0.1)  # of the targets: [MASK], a random token, unchanged


def mask_tokens(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, mask_prob: float,
                mask_id: int, text_pool: np.ndarray, visual_vocab: tuple[int, int],
                visual_split: tuple[float, float, float] = BERT_SPLIT):
    """BERT masking of each row of `ids` ((B, L) or (L,)) at its `maskable` positions -> (corrupted ids,
    labels with IGNORE elsewhere). Each row gets round(mask_prob x its maskable count) targets, at least
    one; text targets: 80% [MASK], 10% a random non-special WordPiece id of `text_pool`, 10% unchanged; visual
    targets (ids in `visual_vocab` = [first, end)) split as `visual_split` ([MASK], random word, unchanged).
    Vectorised over the batch: one call per batch, not per sequence."""
    one = np.ndim(ids) == 1
    out, labels, _ = corrupt(np.atleast_2d(ids), np.atleast_2d(maskable), rng, mask_prob, mask_id, text_pool,
                             visual_vocab, visual_split)
    return (out[0], labels[0]) if one else (out, labels)


def corrupt(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, mask_prob: float, mask_id: int,
            text_pool: np.ndarray, visual_vocab: tuple[int, int], visual_split=BERT_SPLIT):
    """`mask_tokens` on a (B, L) batch, also returning where a visual target was given a random word."""
    ids, labels = np.array(ids, np.int64), np.full(np.shape(ids), IGNORE, np.int64)
    swapped = np.zeros(ids.shape, bool)
    if mask_prob <= 0:
        return ids, labels, swapped
    n = maskable.sum(1)
    k = np.where(n > 0, np.maximum(1, np.round(n * mask_prob)), 0)
    rank = np.where(maskable, rng.random(ids.shape), np.inf).argsort(1).argsort(1)
    chosen = rank < k[:, None]  # k random maskable positions per row
    labels[chosen] = ids[chosen]
    roll, visual = rng.random(ids.shape), ids >= visual_vocab[0]
    share = np.asarray(visual_split, np.float64) / np.sum(visual_split)
    to_mask = np.where(visual, roll < share[0], roll < BERT_SPLIT[0])
    to_swap = roll >= 1 - np.where(visual, share[1], BERT_SPLIT[1])  # (the top of the roll: unchanged in between)
    swapped, swap_text = chosen & to_swap & visual, chosen & to_swap & ~visual
    ids[chosen & to_mask] = mask_id
    ids[swapped] = rng.integers(*visual_vocab, size=int(swapped.sum()))
    ids[swap_text] = text_pool[rng.integers(len(text_pool), size=int(swap_text.sum()))]
    return ids, labels, swapped


def force_mask(ids: np.ndarray, labels: np.ndarray, original: np.ndarray, where: np.ndarray, mask_id: int) -> None:
    """In place: the positions `where` become [MASK] targets of their `original` ids."""
    labels[where] = original[where]
    ids[where] = mask_id


def action_positions(original: np.ndarray, segments: np.ndarray, action_ids: np.ndarray, rows: np.ndarray,
                     ) -> np.ndarray:
    """(B, L) the text positions of `rows` (B,) bool that hold a label word (`action_ids`: the verbs' and
    nouns' token ids): whole-action masking hides the verb and the noun of a sentence together."""
    return np.isin(original, action_ids) & (segments == 0) & rows[:, None]


def swap_clip_features(features: np.ndarray, swapped: np.ndarray, clips: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """CBT: a copy of the (B, L, D) `features` where each `swapped` position holds the features of another
    clip of the batch (`clips`: (B, L) where a clip is), drawn at random; unchanged with fewer than 2 clips."""
    out = features.copy()
    rows, cols = np.nonzero(clips)
    targets = np.flatnonzero(swapped[rows, cols])  # (indices into the batch's clips)
    if len(rows) < 2 or not len(targets):
        return out
    draw = rng.integers(len(rows) - 1, size=len(targets))
    draw += draw >= targets  # any clip but the position's own
    out[rows[targets], cols[targets]] = features[rows[draw], cols[draw]]
    return out
