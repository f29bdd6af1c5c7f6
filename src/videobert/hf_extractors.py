"""Hugging Face transformers encoders as clip feature extractors: `make_extractor("hf:<folder or hub name>")`.

Like every extractor, an `HFExtractor` is a frozen `nn.Module` mapping uint8 clips (N, T, S, S, 3) on its
device to float32 features (N, D); `size` is the model's image_size (the side the decoder should produce),
`dim` is D and `name` is stored with the features. The family is picked by `config.model_type`:

- video encoders (`videomae`, `xclip`) see the fixed number of frames their config was trained with, sampled
  uniformly from the clip; VideoMAE features are the mean of its tokens, X-CLIP's its video embedding;
- image encoders (`clip`, `siglip`, `dinov2`, ...) encode `frames_per_clip` uniformly sampled frames one by
  one; the clip feature is the mean of the frame features (pooled / projected embedding of each frame).

Pixels are scaled to [0, 1] and normalised with image_mean/image_std from the model's
preprocessor_config.json when it has one, else with the defaults of its model type.
`transformers` is optional: it is imported only when an `hf:` extractor is made.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # SigLIP: pixels to [-1, 1]
PREPROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")


@dataclass(frozen=True)
class ModelType:
    norm: tuple  # (mean, std) when the model ships no preprocessor config
    dim: Callable  # config -> feature size D
    frames: Callable | None = None  # config -> frames the video encoder takes; None: an image encoder
    method: str | None = None  # model method giving the features; None: the model's forward


MODEL_TYPES = {
    "videomae": ModelType(IMAGENET, lambda c: c.hidden_size, frames=lambda c: c.num_frames),
    "xclip": ModelType(OPENAI_CLIP, lambda c: c.projection_dim, frames=lambda c: c.vision_config.num_frames,
                       method="get_video_features"),
    "clip": ModelType(OPENAI_CLIP, lambda c: c.projection_dim, method="get_image_features"),
    "clip_vision_model": ModelType(OPENAI_CLIP, lambda c: c.hidden_size),
    "siglip": ModelType(HALF, lambda c: c.vision_config.hidden_size, method="get_image_features"),
    "siglip_vision_model": ModelType(HALF, lambda c: c.hidden_size),
    "dinov2": ModelType(IMAGENET, lambda c: c.hidden_size),
}


def uniform_frames(num_frames: int, n: int) -> list[int]:
    """Indices of `n` frames out of `num_frames`: the centre of each of n equal segments (repeats if n > T)."""
    return [int((i + 0.5) * num_frames / n) for i in range(n)]


def _pooled(out) -> torch.Tensor:
    """One vector per input from a transformers output: the tensor itself, its pooled output, or token mean."""
    if isinstance(out, torch.Tensor):
        return out
    if getattr(out, "pooler_output", None) is not None:
        return out.pooler_output.flatten(1)
    return out.last_hidden_state.mean(1)


class HFExtractor(nn.Module):
    """A frozen transformers encoder: uint8 clips (N, T, S, S, 3) -> float32 features (N, dim)."""

    def __init__(self, model: nn.Module, name: str, size: int, dim: int, frames: int, video: bool,
                 method: str | None, mean, std):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.name, self.size, self.dim = name, size, dim
        self.frames = frames  # frames sampled per clip
        self.video = video  # True: the model sees all frames at once; False: frame by frame, then mean
        self.method = method
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> HFExtractor:
        return super().train(False)  # a frozen feature extractor: dropout stays off whatever the loop asks

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected uint8 clips (N, T, H, W, 3), got shape {tuple(clips.shape)}")
        n = len(clips)
        x = clips[:, uniform_frames(clips.shape[1], self.frames)]  # (N, F, H, W, 3)
        x = x.permute(0, 1, 4, 2, 3).flatten(0, 1).to(self.mean.dtype) / 255.0  # (N*F, 3, H, W)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x.view(n, self.frames, 3, self.size, self.size) - self.mean) / self.std  # (N, F, 3, size, size)
        encode = getattr(self.model, self.method) if self.method else self.model
        if self.video:
            return _pooled(encode(pixel_values=x)).float()
        feats = _pooled(encode(pixel_values=x.flatten(0, 1)))  # (N*F, D)
        return feats.reshape(n, self.frames, -1).mean(1).float()


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("hf: extractors need Hugging Face transformers: "
                          "pip install transformers (or pip install 'videobert[hf]')") from e
    return transformers


def _resolve(source: str) -> str:
    """A local model folder (checked to hold config.json) or else a hub name, passed on as is."""
    if not source:
        raise ValueError("hf: extractor needs a model folder or hub name after 'hf:', e.g. 'hf:MCG-NJU/videomae-base'")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face model folder "
                                    "(what save_pretrained writes)")
        return str(path)
    if path.exists() or source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"{path}: not a model folder (expected a folder holding config.json)")
    return source


def _normalisation(source: str, default: tuple) -> tuple:
    """(mean, std) from the model's preprocessor config when it has one, else `default`."""
    from transformers.utils import cached_file

    for fname in PREPROCESSOR_FILES:
        found = cached_file(source, fname, _raise_exceptions_for_missing_entries=False)
        if not found:
            continue
        cfg = json.loads(Path(found).read_text())
        if cfg.get("do_normalize") is False:
            return (0.0,) * 3, (1.0,) * 3
        if "image_mean" in cfg and "image_std" in cfg:
            mean, std = ([v] * 3 if isinstance(v, (int, float)) else v for v in (cfg["image_mean"], cfg["image_std"]))
            if len(mean) != 3 or len(std) != 3:
                raise ValueError(f"{found}: image_mean and image_std must have 3 values (RGB), "
                                 f"got {cfg['image_mean']} and {cfg['image_std']}")
            return tuple(mean), tuple(std)
    return default


def _image_size(config, source: str) -> int:
    side = getattr(getattr(config, "vision_config", config), "image_size", None)
    if isinstance(side, (list, tuple)) and len(side) == 2 and side[0] == side[1]:
        side = side[0]
    if not isinstance(side, int):
        raise ValueError(f"{source}: config image_size must be one int (square frames), got {side!r}")
    return side


def load_hf_extractor(source: str, frames_per_clip: int | None = None) -> HFExtractor:
    """The extractor for a transformers model folder or hub name. `frames_per_clip` (image encoders only,
    default 4): frames encoded per clip; video encoders take the frame count of their config."""
    transformers = _transformers()
    source = _resolve(source)
    config = transformers.AutoConfig.from_pretrained(source)
    kind = MODEL_TYPES.get(config.model_type)
    if kind is None:
        raise ValueError(f"{source}: model_type {config.model_type!r} is not supported; "
                         f"supported: {sorted(MODEL_TYPES)}")
    if kind.frames is None:
        frames = 4 if frames_per_clip is None else frames_per_clip
    else:
        frames = kind.frames(config)
        if frames_per_clip not in (None, frames):
            raise ValueError(f"{source}: {config.model_type} takes config.num_frames={frames} frames per clip; "
                             f"frames_per_clip={frames_per_clip} does not apply")
    if frames < 1:
        raise ValueError(f"{source}: frames_per_clip must be >= 1, got {frames}")
    model = transformers.AutoModel.from_pretrained(source, config=config, dtype=torch.float32)
    mean, std = _normalisation(source, kind.norm)
    return HFExtractor(model, name=f"hf:{source}", size=_image_size(config, source), dim=kind.dim(config),
                       frames=frames, video=kind.frames is not None, method=kind.method, mean=mean, std=std)
