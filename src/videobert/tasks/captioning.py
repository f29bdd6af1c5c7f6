"""Captioning: generate the sentence of a video segment from its visual words.

The paper (Sec. 4.5) feeds frozen VideoBERT features (video tokens plus masked-out text slots, averaged,
concatenated with S3D features) into a separately trained transformer encoder-decoder. We keep its
core and drop the extra parts: the pretrained VideoBERT encoder reads the segment as a video-only
sequence `[CLS] [>] visual words [SEP]`, and a small transformer decoder (causal self-attention,
cross-attention to every encoder state) writes the caption; encoder and decoder are fine-tuned together
(`freeze_encoder` keeps the encoder as pretrained). The decoder's token embeddings and output layer are
the encoder's WordPiece embeddings (tied), so it starts from the pretrained text vocabulary, and there
is no second feature extractor to run. Decoding is greedy, `[CLS]` starts a caption and `[SEP]` ends it.

A segment is a caption sentence with the clips whose middle lies in its span (the built-in corpus: the
narration of one step). Metrics: BLEU-4, METEOR, ROUGE-L and CIDEr(-D) from `pycocoevalcap` (the COCO
caption evaluation code), as in the paper's table; see `caption_metrics` (METEOR needs Java, the rest not).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..sequences import IGNORE, build_sequence, collate
from ..thumbnails import clips_of, spread
from .caption_metrics import caption_scores
from .steps import clip_mids, clip_token_ids, gather_objects, on_rank_zero, step_clips, video_key


class CaptioningData:
    """Decoded videos -> one example per caption sentence that has clips: its visual words and its text."""

    task, finetune, unit = "captioning", True, "sentences"  # unit: one example per sentence

    def __init__(self, tokenizer, vocab, max_visual_words: int = 16, features: bool = False,
                 max_text_tokens: int = 32):
        self.tok, self.vocab, self.features = tokenizer, vocab, features
        self.max_visual, self.max_text = max_visual_words, max_text_tokens

    def examples(self, video: dict):
        meta = video["json"]
        if "sentences" not in meta:
            raise KeyError(f"{video.get('__url__', '?')}:{video.get('__key__', '?')}: no 'sentences' in the sample's "
                           "json: captioning needs the reference captions ([{start, end, text}])")
        sents = [s for s in meta["sentences"] if s["text"].strip()]
        words = clip_token_ids(self.tok, self.vocab, video["features"], self.features)
        mids, key = clip_mids(meta), video_key(video)
        for s, text in zip(sents, self.tok.encode_batch([s["text"] for s in sents])):
            clips = step_clips(mids, s, self.max_visual)
            if not len(clips) or not text:
                continue
            ids, seg = build_sequence([], words[clips], self.tok.cls_id, self.tok.sep_id, self.tok.bridge_id)
            ex = {"input_ids": np.asarray(ids), "segment_ids": np.asarray(seg), "align_label": IGNORE,
                  "key": key, "caption": text[: self.max_text], "reference": s["text"],
                  "span": (s["start"], s["end"]), "clips": spread(clips_of(key, meta, clips), 4)}
            if self.features:
                ex["visual_features"], ex["visual_offset"] = video["features"][clips], 2
            yield ex

    def __call__(self, videos, rng: np.random.Generator | None = None):
        for video in videos:
            yield from self.examples(video)

    def collate(self, examples: list[dict], rng: np.random.Generator | None = None) -> dict:
        """The encoder batch, plus `caption_in` ([CLS] + caption) and `caption_out` (caption + [SEP], IGNORE at
        padding): the decoder's teacher-forced input and its targets."""
        batch = collate(examples, self.tok.pad_id)
        length = 1 + max(len(e["caption"]) for e in examples)
        cin = torch.full((len(examples), length), self.tok.pad_id)
        cout = torch.full((len(examples), length), IGNORE)
        for i, e in enumerate(examples):
            cin[i, : 1 + len(e["caption"])] = torch.tensor([self.tok.cls_id, *e["caption"]])
            cout[i, : 1 + len(e["caption"])] = torch.tensor([*e["caption"], self.tok.sep_id])
        batch["caption_in"], batch["caption_out"] = cin, cout
        for name in ("reference", "span", "clips"):
            batch[name] = [e[name] for e in examples]
        return batch

    def head(self, encoder: nn.Module, dropout: float = 0.1, **kwargs) -> "Captioner":
        special = sorted(self.tok.special_ids - {self.tok.sep_id})
        return Captioner(encoder, self.tok.cls_id, self.tok.sep_id, special, max_len=self.max_text,
                         dropout=dropout, **kwargs)

    def metrics(self) -> "CaptioningMetrics":
        return CaptioningMetrics(self.tok)


class Captioner(nn.Module):
    """VideoBERT encoder -> small transformer decoder over the encoder's WordPiece embeddings."""

    def __init__(self, encoder: nn.Module, bos_id: int, eos_id: int, banned: list[int], max_len: int = 32,
                 decoder_layers: int = 2, decoder_heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.settings = {"bos_id": bos_id, "eos_id": eos_id, "banned": list(banned), "max_len": max_len,
                         "decoder_layers": decoder_layers, "decoder_heads": decoder_heads}  # (for `videobert export`)
        c, self.text_vocab = encoder.cfg.hidden_size, encoder.cfg.text_vocab_size
        self.encoder, self.bos, self.eos, self.max_len = encoder, bos_id, eos_id, max_len
        self.positions = nn.Embedding(max_len + 2, c)
        layer = nn.TransformerDecoderLayer(c, decoder_heads, 4 * c, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, decoder_layers)
        self.norm = nn.LayerNorm(c)
        self.bias = nn.Parameter(torch.zeros(self.text_vocab))
        self.register_buffer("banned", torch.tensor(banned, dtype=torch.long), persistent=False)  # never generated
        nn.init.normal_(self.positions.weight, std=0.02)

    def memory(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, T, C) and their padding mask (True = padding)."""
        h = self.encoder(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], batch.get("visual_features"))
        return h, ~batch["attention_mask"]

    def logits(self, memory: torch.Tensor, padding: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(B, L) caption prefix -> (B, L, text vocabulary) next-token logits."""
        words = self.encoder.embeddings.word_embeddings.weight[: self.text_vocab]
        x = F.embedding(prefix, words) + self.positions(torch.arange(prefix.shape[1], device=prefix.device))
        causal = nn.Transformer.generate_square_subsequent_mask(prefix.shape[1], device=prefix.device, dtype=x.dtype)
        y = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=padding)
        return self.norm(y) @ words.T + self.bias

    def loss(self, batch: dict) -> torch.Tensor:
        logits = self.logits(*self.memory(batch), batch["caption_in"])
        return F.cross_entropy(logits.flatten(0, 1), batch["caption_out"].flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def generate(self, batch: dict) -> list[list[int]]:
        """Greedy decoding: the caption ids of every segment of the batch (without [CLS]/[SEP])."""
        memory, padding = self.memory(batch)
        prefix = torch.full((len(memory), 1), self.bos, device=memory.device)
        done = torch.zeros(len(memory), dtype=torch.bool, device=memory.device)
        for _ in range(self.max_len + 1):
            logits = self.logits(memory, padding, prefix)[:, -1]
            logits[:, self.banned] = float("-inf")
            nxt = torch.where(done, self.eos, logits.argmax(-1))
            prefix, done = torch.cat([prefix, nxt[:, None]], 1), done | (nxt == self.eos)
            if done.all():
                break
        out = []
        for row in prefix[:, 1:].tolist():
            out.append(row[: row.index(self.eos)] if self.eos in row else row)
        return out


class CaptioningMetrics(nn.Module):
    """Greedy captions of every test segment, gathered over ranks and scored at the end with `caption_scores`
    (on rank 0, the scores sent to the others)."""

    def __init__(self, tokenizer, num_examples: int = 20):
        super().__init__()
        self.tok, self.num_examples, self.rows = tokenizer, num_examples, []

    def update(self, model: Captioner, batch: dict) -> None:
        for key, span, clips, ref, ids in zip(batch["keys"], batch["span"], batch["clips"], batch["reference"],
                                              model.generate(batch)):
            self.rows.append({"clips": clips, "video": key, "span": list(span), "reference": ref,
                              "generated": self.tok.decode(ids)})

    def compute(self, model=None) -> dict[str, float]:
        rows = sorted((r for part in gather_objects(self.rows) for r in part), key=lambda r: (r["video"], r["span"]))
        self.rows = []
        if not rows:
            raise RuntimeError("captioning got no segments: check the test shards (sentences with clips)")
        self._examples = rows[: self.num_examples]
        # (every rank holds all rows; one rank runs the scorers: one METEOR JVM per node, not one per GPU)
        scores = on_rank_zero(caption_scores, [r["reference"] for r in rows], [r["generated"] for r in rows],
                              [r["video"] for r in rows])
        return {**scores, "segments": float(len(rows))}

    def examples(self) -> list[dict]:
        """Some clips of the first segments, reference vs generated caption (after `compute`)."""
        return self._examples
