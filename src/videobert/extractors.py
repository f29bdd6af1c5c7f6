"""Clip feature extractors: (N, T, S, S, 3) uint8 clips -> (N, D) float32 features.

Every extractor is an `nn.Module` with `size` (square frame side the decoder must produce), `dim` (D),
`name` (stored with the features) and `forward(clips)`: uint8 clips on its device -> float32 (N, D).
`make_extractor("builtin")` or `make_extractor("hf:<model folder or hub name>")` (see hf_extractors.py).

`builtin` needs no weights: a HOG/HOF-style descriptor (Laptev et al.) of appearance (colour histogram,
gradient orientations) and motion (Lucas-Kanade flow orientations per temporal segment, divergence and
curl, and the temporal spectrum of the mean flow). Each block is L2-normalised and weighted so that
appearance and motion weigh about the same in k-means distances; a block whose norm is below its floor
(`floors`, about half the smallest norm an action clip of the built-in corpus gives) is divided by the floor
instead, so a nearly empty block (the gradients of an empty board, the flow of an idle scene) stays small
rather than being scaled up to full weight. The background is estimated per row from the clip's left and
right border columns, so a board shaded from top to bottom is not taken for foreground.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Sum over a (2r+1)^2 window on the last two axes (edge-padded), via cumulative sums."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r + 1, r), (r + 1, r)], mode="edge").cumsum(-1).cumsum(-2)
    k = 2 * r + 1
    return p[..., k:, k:] - p[..., :-k, k:] - p[..., k:, :-k] + p[..., :-k, :-k]


def _l2(x: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """`x` over its L2 norm, or over `floor` when the norm is smaller (a near-empty block stays near zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), floor)


def _orientation_hist(dx, dy, weight, bins: int, signed: bool) -> np.ndarray:
    ang = np.arctan2(dy, dx)
    period = 2 * np.pi if signed else np.pi
    idx = (np.floor((ang % period) / period * bins).astype(np.int64)) % bins
    onehot = np.eye(bins, dtype=np.float32)[idx]  # (..., bins)
    return (onehot * weight[..., None]).reshape(*weight.shape[:2], -1, bins).sum(2)


class BuiltinExtractor(nn.Module):
    """Weight-free appearance + motion descriptor. `size` is the square input side in pixels."""

    name = "builtin"
    version = 2  # bump when the descriptor changes, so caches of old features are not reused (2: floors, rows)
    size = 32
    runs_on_cpu = True  # numpy: feature extraction runs it inside the decoding workers, in parallel
    segments = 3  # temporal segments for the motion histograms
    groups = [[0, 104], [104, 165]]  # feature columns: appearance (colour, gradients), motion (flow): factorised words

    def __init__(self, weights: tuple[float, ...] = (2.0, 1.5, 1.0, 0.5, 1.0),
                 floors: tuple[float, ...] = (0.5, 2.0, 2.0, 0.04, 0.3)):
        """`weights`, `floors`: per block (colour, gradients, flow orientations, flow dynamics, flow spectrum)."""
        super().__init__()
        self.weights, self.floors = weights, floors

    @property
    def dim(self) -> int:
        return 64 + 4 + 36 + 8 * self.segments + 3 * self.segments + 4 + 24

    def forward(self, clips: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """numpy in -> numpy out; a tensor in -> a float32 tensor on its device (computed on the CPU in numpy)."""
        if isinstance(clips, torch.Tensor):
            return torch.from_numpy(self.forward(clips.cpu().numpy())).to(clips.device)
        x = clips.astype(np.float32) / 255.0  # (N, T, S, S, 3)
        gray, fg = x.mean(-1), self._foreground(x)
        blocks = [self._colour(x, fg), self._hog(gray, fg), *self._motion(gray)]
        return np.concatenate([w * _l2(b, f) for w, f, b in zip(self.weights, self.floors, blocks)], -1).astype(np.float32)

    @staticmethod
    def _foreground(x: np.ndarray) -> np.ndarray:
        """Per-pixel weight in [0, 1]: how far its colour is from the background colour of its row (the median
        over the clip's frames of the row's two leftmost and two rightmost pixels), past a small margin."""
        border = np.concatenate([x[:, :, :, :2], x[:, :, :, -2:]], 3)  # (N, T, S, 4, 3)
        bg = np.median(border.transpose(0, 2, 1, 3, 4).reshape(len(x), x.shape[2], -1, 3), axis=2)  # (N, S, 3)
        dist = np.abs(x - bg[:, None, :, None, :]).sum(-1)
        return np.clip((dist - 0.05) / 0.2, 0.0, 1.0)  # (N, T, S, S)

    @staticmethod
    def _colour(x: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Histogram (4 levels per channel) of foreground colours, their mean, and the foreground area."""
        q = np.minimum((x * 4).astype(np.int64), 3)
        idx = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(x), -1)
        w = fg.reshape(len(x), -1)
        hist = np.stack([np.bincount(i, weights=wi, minlength=64) for i, wi in zip(idx, w)])
        total = w.sum(1, keepdims=True) + 1e-6
        mean = (x.reshape(len(x), -1, 3) * w[..., None]).sum(1) / total
        return np.concatenate([np.sqrt(hist / total), mean, total / w.shape[1] * 4], -1)

    @staticmethod
    def _hog(gray: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Gradient-orientation histograms of the foreground (9 bins, 2x2 cells) on every 5th frame."""
        g, f = gray[:, ::5], fg[:, ::5]
        dy, dx = np.gradient(g, axis=(-2, -1))
        s = g.shape[-1]
        h = s // 2
        mag = np.hypot(dx, dy) * f
        cells = [(slice(a, a + h), slice(b, b + h)) for a in (0, h) for b in (0, h)]
        hists = [_orientation_hist(dx[..., a, b], dy[..., a, b], mag[..., a, b], 9, False).sum(1)
                 for a, b in cells]
        return np.sqrt(np.concatenate(hists, -1))

    def _motion(self, gray: np.ndarray) -> list[np.ndarray]:
        g = _box(gray, 1) / 9.0
        f0, f1 = g[:, :-1], g[:, 1:]
        iy, ix = np.gradient((f0 + f1) / 2, axis=(-2, -1))
        it = f1 - f0
        sxx, syy, sxy = _box(ix * ix, 2), _box(iy * iy, 2), _box(ix * iy, 2)
        sxt, syt = _box(ix * it, 2), _box(iy * it, 2)
        det = sxx * syy - sxy**2
        ok = det > 1e-7
        det = np.where(ok, det, 1.0)
        u = np.where(ok, -(syy * sxt - sxy * syt) / det, 0.0)  # (N, T-1, S, S) Lucas-Kanade flow
        v = np.where(ok, -(sxx * syt - sxy * sxt) / det, 0.0)
        u, v = np.clip(u, -3, 3), np.clip(v, -3, 3)
        mag = np.hypot(u, v) * np.abs(it).clip(0, 0.2) * 5  # trust flow where something changes
        seg = np.array_split(np.arange(u.shape[1]), self.segments)
        hof = np.concatenate([_orientation_hist(u[:, s], v[:, s], mag[:, s], 8, True).sum(1) for s in seg], -1)
        vy, vx = np.gradient(v, axis=(-2, -1))
        uy, ux = np.gradient(u, axis=(-2, -1))
        wsum = mag.sum((-2, -1)) + 1e-6
        div = ((ux + vy) * mag).sum((-2, -1)) / wsum
        curl = ((vx - uy) * mag).sum((-2, -1)) / wsum
        energy = np.abs(it).mean((-2, -1))
        dyn = np.concatenate([np.stack([a[:, s].mean(1) for s in seg], -1) for a in (div, curl, energy)], -1)
        h = it.shape[-1] // 2
        quad = np.stack([np.abs(it[..., a:a + h, b:b + h]).mean((1, 2, 3)) for a in (0, h) for b in (0, h)], -1)
        mean_u, mean_v = (u * mag).sum((-2, -1)) / wsum, (v * mag).sum((-2, -1)) / wsum
        spec = [np.abs(np.fft.rfft(a - a.mean(1, keepdims=True), axis=1))[:, 1:9] for a in (mean_u, mean_v, energy)]
        return [np.sqrt(hof), np.concatenate([dyn * 10, quad * 10], -1), np.concatenate(spec, -1)]


def make_extractor(spec: str, **options) -> nn.Module:
    """`"builtin"` or `"hf:<model folder or hub name>"`; `options` go to the extractor's constructor."""
    if spec == "builtin":
        return BuiltinExtractor(**options)
    if spec.startswith("hf:"):
        from .hf_extractors import load_hf_extractor  # transformers is optional: import it only when asked

        return load_hf_extractor(spec[len("hf:"):], **options)
    raise ValueError(f"unknown extractor {spec!r}; choices: 'builtin', 'hf:<model folder or hub name>'")
