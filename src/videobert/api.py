"""A trained model on anyone's video, from a `videobert export` folder, without Lightning or the training code.

    from videobert.api import VideoBertPipeline

    # videobert export --ckpt_path runs/quickstart/latest/checkpoints/last.ckpt --out models/videobert-quickstart
    vb = VideoBertPipeline.from_pretrained("models/videobert-quickstart")
    video = "data/quickstart/corpus/test/test00000.mp4"      # a held-out video of the built-in corpus
    vb.visual_words(video)                                    # (clips,) one visual word per 1.5 s clip
    vb.embed_video(video) @ vb.embed_text("stir the egg")     # similarity of (hidden,) unit vectors
    vb.classify(video, ["stir", "cut"], ["egg", "fish"])      # verb, noun per window of clips
    # the export of a captioning fine-tune (experiments/finetune/captioning.yaml) adds a decoder:
    VideoBertPipeline.from_pretrained("models/videobert-captioner").caption(video)   # a sentence per 3 clips

A video goes through the extractor the model was trained with (`extractor.json` of the export, recorded by
the feature stage): the same decoding, clips and float16 rounding as `videobert data features`, so the
clip features and visual words equal the training-time ones. The zero-shot protocol is the paper's: the
template "now let me show you how to [MASK] the [MASK]", verb and noun read at the two [MASK]s over the
given label words (each must be one WordPiece token of the model's vocabulary).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .extractors import make_extractor
from .hub import model_folder
from .pretrained import load_pretrained
from .tasks.retrieval import sequences
from .tasks.steps import clip_token_ids, step_clips
from .tasks.zero_shot import TEMPLATE, template_masks
from .video import VideoError, iter_clips

REQUIRED = ("config.json", "model.safetensors", "vocab.txt", "extractor.json")


class VideoBertPipeline:
    """An exported VideoBERT (or CBT) model with its tokenizer, visual vocabulary and feature extractor."""

    def __init__(self, model, tokenizer, vocab, extractor: dict, device: str = "cpu", window: int = 16):
        """`extractor`: {"spec", "fps", "clip_frames"} as `extractor.json`; `window`: clips per sequence (the
        training sequences' `max_visual_words`)."""
        self.model, self.tok, self.vocab, self.device = model.to(device).eval(), tokenizer, vocab, device
        self.spec, self.fps, self.clip_frames = extractor["spec"], extractor["fps"], extractor["clip_frames"]
        self.window = window
        self._extractor, self._captioner, self.folder = None, None, None

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu") -> "VideoBertPipeline":
        """Load an export folder or a Hugging Face Hub repo id (through the Hub cache). Example:
        `VideoBertPipeline.from_pretrained("models/videobert-quickstart")`."""
        folder = model_folder(folder)
        missing = [f for f in REQUIRED if not (folder / f).is_file()]
        cfg = json.loads((folder / "config.json").read_text()) if "config.json" not in missing else {}
        if not cfg.get("feature_dim") and not (folder / "visual_vocab.npz").is_file():
            missing.append("visual_vocab.npz")
        if missing:
            raise FileNotFoundError(f"{folder}: not a complete `videobert export` folder, missing {missing} "
                                    "(re-export the checkpoint with `videobert export`)")
        model, tok, vocab = load_pretrained(folder)
        extractor = json.loads((folder / "extractor.json").read_text())
        vb = cls(model, tok, vocab, extractor, device, extractor.get("max_visual_words", 16))
        vb.folder = folder
        return vb

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = make_extractor(self.spec).eval()
        return self._extractor

    def clips(self, path: str | Path) -> list[tuple[float, float]]:
        """(start, end) seconds of each clip of the video at `path`. Example: `vb.clips("cooking.mp4")[:2]`."""
        return [(s, e) for s, e, _ in iter_clips(str(path), self.fps, self.clip_frames, self.extractor.size,
                                                   name=str(path))]

    def features(self, path: str | Path) -> np.ndarray:
        """(clips, D) clip features, as the feature stage writes them. Example: `vb.features("a.mp4").shape`."""
        return self._decode(path)[0]

    @torch.no_grad()
    def _decode(self, path: str | Path, batch: int = 64) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """One pass over the video: (its clip features, their (start, end) times)."""
        frames, out, spans = [], [], []
        for start, end, clip in iter_clips(str(path), self.fps, self.clip_frames, self.extractor.size, name=str(path)):
            frames.append(clip)
            spans.append((start, end))
            if len(frames) == batch:
                out.append(self._extract(frames))
                frames = []
        if frames:
            out.append(self._extract(frames))
        if not out:
            raise VideoError(f"{path}: shorter than one clip ({self.clip_frames / self.fps:g} s)")
        feats = np.concatenate(out).astype(np.float16).astype(np.float32)  # (the feature shards' precision)
        dim = self.model.cfg.feature_dim or self.vocab.dim
        if feats.shape[1] != dim:
            raise ValueError(f"{path}: the extractor {self.spec} gives {feats.shape[1]}-d features, the model "
                             f"takes {dim}-d: the export's extractor.json does not match its model")
        return feats, spans

    def _extract(self, frames: list[np.ndarray]) -> np.ndarray:
        x = np.stack(frames)
        if getattr(self.extractor, "runs_on_cpu", False):
            return np.asarray(self.extractor(x))
        return self.extractor(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

    def visual_words(self, video) -> np.ndarray:
        """(clips,) visual-word ids of a video path or of (clips, D) features. Example: `vb.visual_words("a.mp4")`."""
        if self.vocab is None:
            raise ValueError("this is a CBT model: it takes clip features and has no visual words "
                             "(use features() / embed_video())")
        return self.vocab.words(self._features(video))

    def _features(self, video) -> np.ndarray:
        return np.asarray(video, np.float32) if isinstance(video, np.ndarray) else self.features(video)

    def _batch(self, texts: list[list[int]], feats: list[np.ndarray | None]) -> dict:
        """Sequences `[CLS] text [>] clips [SEP]` (visual words, or CBT's features) on the device."""
        cbt = self.vocab is None
        words = [[] if f is None else clip_token_ids(self.tok, self.vocab, f, cbt) for f in feats]
        batch = sequences(self.tok, texts, words, [f if cbt else None for f in feats])
        return {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    @torch.no_grad()
    def _hidden(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], batch.get("visual_features"))

    def _windows(self, feats: np.ndarray) -> list[np.ndarray]:
        return [feats[i:i + self.window] for i in range(0, len(feats), self.window)]

    def embed_video(self, video) -> np.ndarray:
        """(hidden,) the mean final state of the video-only sequences of a video (windows of clips), L2-normalised.
        Example: `vb.embed_video("a.mp4") @ vb.embed_text("stir the egg")`."""
        windows = self._windows(self._features(video))
        return self._pool(self._batch([[] for _ in windows], windows))

    def embed_text(self, text: str) -> np.ndarray:
        """(hidden,) the mean final state of the text-only sequence, L2-normalised. Example: `vb.embed_text("cut it")`."""
        return self._pool(self._batch([self.tok.encode(text)[: self.model.cfg.max_positions - 2]], [None]))

    def clip_embeddings(self, video) -> np.ndarray:
        """(clips, hidden) the final state at each clip's position in the video-only sequences (windows of clips).
        Example: `vb.clip_embeddings("a.mp4").shape`."""
        windows = self._windows(self._features(video))
        h = self._hidden(self._batch([[] for _ in windows], windows))  # ([CLS] [>] clips [SEP])
        return torch.cat([h[i, 2:2 + len(w)] for i, w in enumerate(windows)]).float().cpu().numpy()

    def describe(self, video, verbs: list[str] | None = None, nouns: list[str] | None = None,
                 template: str = TEMPLATE) -> dict:
        """Everything `videobert predict` writes for one video (a path, or {"features", "clips"}): clip times,
        visual words (VideoBERT), clip and video embeddings and, given label words, zero-shot verb/noun per
        window. Example: `vb.describe("a.mp4", ["cut"], ["egg"])["zero_shot"][0]`."""
        if isinstance(video, dict):
            feats, clips = np.asarray(video["features"], np.float32), [tuple(c) for c in video["clips"]]
        else:
            feats, clips = self._decode(video)
        out = {"clips": [list(c) for c in clips], "clip_embeddings": self.clip_embeddings(feats),
               "video_embedding": self.embed_video(feats)}
        if self.vocab is not None:
            out["visual_words"] = self.visual_words(feats).tolist()
        if verbs and nouns:
            spans = [(clips[i][0], clips[min(len(clips), i + self.window) - 1][1]) for i in range(0, len(clips), self.window)]
            out["zero_shot"] = self.classify(feats, verbs, nouns, template, spans=spans, clip_spans=clips)
        return out

    def _pool(self, batch: dict) -> np.ndarray:
        h, m = self._hidden(batch), batch["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((h * m).sum((0, 1)) / m.sum(), dim=0).cpu().numpy()

    def classify(self, video, verbs: list[str], nouns: list[str], template: str = TEMPLATE, top: int = 5,
                 spans: list[tuple[float, float]] | None = None, clip_spans: list | None = None) -> list[dict]:
        """Zero-shot verb and noun of each window of clips, or of each time span of `spans` (e.g. a video's steps:
        the clips whose middle lies in it, as the zero-shot test takes them): [{start, end, verb, verb_score,
        noun, noun_score, verbs, nouns (the `top` best with probabilities)}].
        Example: `vb.classify("a.mp4", ["cut", "stir"], ["egg", "fish"])[0]["verb"]`."""
        ids = self.tok.encode(template)
        masks = template_masks(self.tok, ids, template)
        cands = [torch.tensor([self.tok.token_id(w) for w in words], device=self.device) for words in (verbs, nouns)]
        feats, spans, picked, keep = self._spans(video, spans, clip_spans, self.window)
        h = self._hidden(self._batch([ids] * len(keep), [feats[picked[i]] for i in keep]))[:, masks]  # (spans, 2, C)
        out = []
        for w, i in enumerate(keep):
            row = {"start": float(spans[i][0]), "end": float(spans[i][1])}
            for i, (what, words) in enumerate((("verb", verbs), ("noun", nouns))):
                p = self.model.token_logits(h[w:w + 1, i], cands[i]).float().softmax(-1)[0]
                best = p.topk(min(top, len(words)))
                row[what], row[f"{what}_score"] = words[int(best.indices[0])], float(best.values[0])
                row[f"{what}s"] = [(words[int(j)], float(v)) for v, j in zip(best.values, best.indices)]
            out.append(row)
        return out

    def _spans(self, video, spans, clip_spans, per_span: int):
        """(features, spans, the clips of each span, the spans that hold a clip); spans default to windows of
        `per_span` clips."""
        feats = self._features(video)
        if clip_spans is None:  # (features without times: consecutive clips of the training length)
            clip_s = self.clip_frames / self.fps
            clip_spans = self.clips(video) if not isinstance(video, np.ndarray) else [
                (clip_s * i, clip_s * (i + 1)) for i in range(len(feats))]
        if spans is None:
            spans = [(clip_spans[i][0], clip_spans[min(len(feats), i + per_span) - 1][1])
                     for i in range(0, len(feats), per_span)]
        mids = np.asarray(clip_spans, np.float64).mean(1)
        picked = [step_clips(mids, {"start": a, "end": b}, self.window) for a, b in spans]
        return feats, spans, picked, [i for i, p in enumerate(picked) if len(p)]

    def caption(self, video, spans: list[tuple[float, float]] | None = None, clips_per_caption: int = 3,
                clip_spans: list | None = None) -> list[dict]:
        """A caption (greedy decoding) for each time span of `spans` (the clips whose middle lies in it, as the
        captioning test takes a narration sentence's), or for each `clips_per_caption` clips: [{start, end,
        caption}]. Needs the export of a captioning checkpoint (fine-tuned with experiments/finetune/
        captioning.yaml). Example: `vb.caption("a.mp4")[0]["caption"]`."""
        captioner = self._load_captioner()
        feats, spans, picked, keep = self._spans(video, spans, clip_spans, clips_per_caption)
        with torch.no_grad():
            ids = captioner.generate(self._batch([[] for _ in keep], [feats[picked[i]] for i in keep]))
        return [{"start": float(spans[i][0]), "end": float(spans[i][1]), "caption": self.tok.decode(row)}
                for i, row in zip(keep, ids)]

    def _load_captioner(self):
        if self._captioner is None:
            from safetensors.torch import load_file

            from .tasks.captioning import Captioner

            head = None if self.folder is None else self.folder / "captioner.json"
            if head is None or not head.is_file() or not head.with_suffix(".safetensors").is_file():
                raise FileNotFoundError(f"{self.folder}: no captioning decoder (captioner.json + captioner.safetensors): "
                                        "export a checkpoint fine-tuned with experiments/finetune/captioning.yaml")
            settings = {k: v for k, v in json.loads(head.read_text()).items() if k != "task"}
            captioner = Captioner(self.model, **settings)
            missing, unexpected = captioner.load_state_dict(load_file(str(head.with_suffix(".safetensors"))), strict=False)
            if unexpected or any(not k.startswith("encoder.") for k in missing):
                raise ValueError(f"{head.with_suffix('.safetensors')}: does not match its captioner.json "
                                 f"(missing {[k for k in missing if not k.startswith('encoder.')]}, unexpected {unexpected})")
            self._captioner = captioner.to(self.device).eval()
        return self._captioner
