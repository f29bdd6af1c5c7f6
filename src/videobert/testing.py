"""Synthetic feature shards, tokenizer and visual vocabulary for tests and benchmarks of the data path.

They have the layout `videobert data features` writes (`features.npy`, `json` with `clips` and
`sentences`, index.json beside the shards) but skip video decoding, so a corpus of any size is made in
seconds. Model quality on them means nothing; use the built-in corpus for that.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .shards import update_index, write_shard
from .text import train_wordpiece
from .vq import build_vocab

WORDS = "stir roll flip spin toss shake press cut pour peel the egg dough pan bowl now slowly then".split()


def synthetic_video(key: str, rng: np.random.Generator, dim: int, clips: int, sentences: int) -> dict:
    """One feature-shard sample: `clips` rows of features and `sentences` cues spread over the video."""
    feats = rng.normal(size=(clips, dim)).astype(np.float16)
    buf = io.BytesIO()
    np.save(buf, feats)
    edges = np.linspace(0, clips * 1.5, sentences + 1)
    cues = [{"start": float(a), "end": float(b), "text": " ".join(rng.choice(WORDS, 6))}
            for a, b in zip(edges[:-1], edges[1:])]
    meta = {"video_id": key, "duration": clips * 1.5, "clips": [[i * 1.5, i * 1.5 + 1.5] for i in range(clips)],
            "sentences": cues}
    return {"__key__": key, "features.npy": buf.getvalue(), "json": meta}


def make_feature_shards(out: str | Path, videos_per_shard: list[int], dim: int = 16, clips: int = 12,
                        sentences: int = 4, seed: int = 0, prefix: str = "shard") -> list[str]:
    """Write one shard per entry of `videos_per_shard` (sizes may differ) and index.json. Keys are unique
    across calls with different prefixes: `{prefix}{shard}_{video}`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng, entries, keys = np.random.default_rng(seed), {}, []
    for s, n in enumerate(videos_per_shard):
        samples = [synthetic_video(f"{prefix}{s:03d}_{v:04d}", rng, dim, clips, sentences) for v in range(n)]
        keys += [x["__key__"] for x in samples]
        entries[f"{prefix}-{s:06d}.tar"] = write_shard(out / f"{prefix}-{s:06d}.tar", samples)
    update_index(out, entries)
    return keys


def make_text_and_vocab(root: str | Path, features: str | Path, levels: int = 1, k: int = 8) -> tuple[str, str]:
    """A WordPiece vocabulary over WORDS and a visual vocabulary fitted on `features`: (vocab.txt, .npz)."""
    root = Path(root)
    vocab_txt = train_wordpiece([" ".join(WORDS)] * 4, root / "tokenizer", vocab_size=200)
    npz = build_vocab(str(features), str(root / "visual_vocab.npz"), levels=levels, k=k)
    return str(vocab_txt), str(npz)

