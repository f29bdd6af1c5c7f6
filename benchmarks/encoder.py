"""Training speed and memory of our encoder against `transformers.BertForPreTraining`, same size, same batches.

One training step = forward + backward + AdamW step, fp32, on the CPU. Both models get the same
VideoBERT-shaped batches (text, [>], visual words; text-only, video-only and paired sequences of varied
length, padded per batch), the vocabulary is WordPiece + the paper's 20,736 visual words, and the same
positions are masked (15%). Reported: real (non-padding) tokens per second, the ratio, and each
model's peak memory: the peak resident set of a fresh process that builds the model and trains it
(each model runs in its own process, so one cannot inherit the other's peak).

Usage: python benchmarks/encoder.py [--size base|small] [--batch 32] [--steps 3]
Needs transformers (pip install -e ".[dev]").
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch

from videobert.model import VideoBert, VideoBertConfig
from videobert.sequences import IGNORE

SIZES = {"base": (768, 12, 12, 3072), "small": (256, 4, 4, 1024)}
TEXT_VOCAB, VISUAL_VOCAB = 30_523, 20_736
THREADS = torch.get_num_threads()


def make_batches(n: int, batch: int, seed: int = 0) -> list[dict]:
    """VideoBERT-like batches: [CLS] text(<=32) [>] visual(<=16) [SEP], some text- or video-only."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        rows = []
        for _ in range(batch):
            kind = torch.rand(1, generator=g).item()
            t = 0 if kind > 0.9 else int(torch.randint(4, 33, (1,), generator=g))
            v = 0 if 0.8 < kind <= 0.9 else int(torch.randint(2, 17, (1,), generator=g))
            text = torch.randint(10, TEXT_VOCAB - 1, (t,), generator=g)
            vis = torch.randint(TEXT_VOCAB, TEXT_VOCAB + VISUAL_VOCAB, (v,), generator=g)
            ids = torch.cat([torch.tensor([2]), text, torch.tensor([TEXT_VOCAB - 1]) if v else text[:0], vis,
                             torch.tensor([3])])
            seg = torch.cat([torch.zeros(1 + t, dtype=torch.long), torch.ones(len(ids) - 1 - t, dtype=torch.long)])
            rows.append((ids, seg))
        length = max(len(i) for i, _ in rows)
        ids = torch.zeros(batch, length, dtype=torch.long)
        seg, mask = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        for r, (i, s) in enumerate(rows):
            ids[r, :len(i)], seg[r, :len(i)], mask[r, :len(i)] = i, s, True
        labels = torch.full_like(ids, IGNORE)
        pick = mask & (torch.rand(ids.shape, generator=g) < 0.15)
        pick[:, 0] = False
        labels[pick] = ids[pick]
        out.append({"input_ids": ids, "segment_ids": seg, "attention_mask": mask, "labels": labels,
                    "align_label": torch.randint(0, 2, (batch,), generator=g)})
    return out


def ours(size: str):
    from videobert.losses import pretraining_losses

    h, n_layers, heads, inter = SIZES[size]
    model = VideoBert(VideoBertConfig(TEXT_VOCAB, VISUAL_VOCAB, h, n_layers, heads, inter, max_positions=64))

    def loss(b):
        losses, _ = pretraining_losses(model, b)
        return sum(losses.values())
    return model, loss


def theirs(size: str):
    import transformers

    h, n_layers, heads, inter = SIZES[size]
    cfg = transformers.BertConfig(vocab_size=TEXT_VOCAB + VISUAL_VOCAB, hidden_size=h, num_hidden_layers=n_layers,
                                  num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=64)
    model = transformers.BertForPreTraining(cfg)

    def loss(b):
        return model(input_ids=b["input_ids"], token_type_ids=b["segment_ids"], attention_mask=b["attention_mask"].long(),
                     labels=b["labels"], next_sentence_label=b["align_label"]).loss
    return model, loss


def run(which: str, size: str, batch: int, steps: int) -> tuple[float, float]:
    """(real tokens per second, peak RSS of this process in MB); runs in a fresh process."""
    torch.set_num_threads(THREADS)
    batches, build = make_batches(steps + 1, batch), {"ours": ours, "theirs": theirs}[which]
    torch.manual_seed(0)
    model, loss_fn = build(size)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(b):
        loss_fn(b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: allocator, optimizer state
    tokens, start = 0, time.perf_counter()
    for b in batches[1:steps + 1]:
        step(b)
        tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - start), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    batches = make_batches(args.steps + 1, args.batch)
    pad = 1 - sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)
    print(f"BERT-{args.size} + {VISUAL_VOCAB} visual words, batch {args.batch}, {args.steps} timed steps, "
          f"{pad:.0%} padding, fp32, {THREADS} threads")
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        (theirs_rate, theirs_mem), (ours_rate, ours_mem) = (
            pool.apply(run, (which, args.size, args.batch, args.steps)) for which in ("theirs", "ours"))
    print(f"transformers BertForPreTraining: {theirs_rate:8.0f} tokens/s   peak RSS {theirs_mem:6.0f} MB")
    print(f"videobert VideoBert:             {ours_rate:8.0f} tokens/s   peak RSS {ours_mem:6.0f} MB")
    print(f"ratio ours / transformers:       {ours_rate / theirs_rate:8.2f}x   (target >= 1.5x); "
          f"memory {ours_mem / theirs_mem:.2f}x")


if __name__ == "__main__":
    main()
