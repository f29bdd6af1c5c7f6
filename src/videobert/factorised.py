"""Factorised visual words (an extension of VideoBERT): one visual vocabulary per group of feature columns.

VideoBERT quantises a clip's whole feature into one visual word, so a word stands for one (look, motion)
combination and a clip of a combination never seen in training lands on a word of a seen one. Here each
column group (e.g. the built-in extractor's appearance and motion blocks; for real video, the columns of
two extractors concatenated, an image model and a video model) gets its own hierarchical k-means, and a
clip's word is the tuple of its groups' words, numbered in the product space:
word = sum_g code_g * prod_{h > g} size_h. Everything that handles visual-word ids (sequences, masking,
tasks, export) works unchanged on these ids; the model embeds a clip as the sum of its codes' embeddings
and predicts a masked clip with one softmax per group (`VideoBertConfig.visual_groups`). The gain rests
on the groups matching real factors of the video: on the built-in corpus the extractor's blocks match the
corpus's verb (motion) and noun (look) by construction.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class FactorisedVocab:
    """Maps (N, D) features to product-space word ids in [0, prod(part sizes))."""

    def __init__(self, parts: list, columns: list[tuple[int, int]], counts: np.ndarray | None = None):
        """`parts`: one VisualVocab per group; `columns`: each group's [start, end) feature columns."""
        if len(parts) != len(columns) or len(parts) < 2:
            raise ValueError(f"factorised vocabulary: {len(parts)} vocabularies for {len(columns)} column groups "
                             "(expected one per group, at least two)")
        self.parts, self.columns = parts, [(int(a), int(b)) for a, b in columns]
        self.counts = None if counts is None else np.asarray(counts, np.int64)
        self.group_sizes = [p.size for p in parts]
        self.strides = product_strides(self.group_sizes)
        self.dim = max(b for _, b in self.columns)
        self.k, self.levels = parts[0].k, parts[0].levels  # (of the first group; each part has its own)
        self._leaves: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.group_sizes))

    def words(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {x.shape} do not match the factorised vocabulary (dim {self.dim})")
        codes = [p.words(np.ascontiguousarray(x[:, a:b])) for p, (a, b) in zip(self.parts, self.columns)]
        return (np.stack(codes, 1) * self.strides).sum(1)

    def codes(self, words: np.ndarray) -> np.ndarray:
        """(N,) product ids -> (N, groups) each group's word."""
        w = np.asarray(words, np.int64)[:, None]
        return (w // self.strides) % np.asarray(self.group_sizes)

    @property
    def group_centroids(self) -> list[np.ndarray]:
        """Each group's leaf centroids (size_g, columns of g): what the model's group embeddings start from."""
        return [p.centroids[-1] for p in self.parts]

    @property
    def centroids(self) -> list[np.ndarray]:
        """[(size, D)]: the leaf "centroid" of every product word (its groups' centroids side by side), for the
        code that shows the clip nearest to a word; built on first use."""
        if self._leaves is None:
            codes = self.codes(np.arange(self.size))
            leaves = np.zeros((self.size, self.dim), np.float32)
            for g, (a, b) in enumerate(self.columns):
                leaves[:, a:b] = self.group_centroids[g][codes[:, g]]
            self._leaves = leaves
        return [self._leaves]

    def save(self, path: str | Path) -> None:
        arrays = {"columns": np.asarray(self.columns, np.int64)}
        for g, p in enumerate(self.parts):
            arrays[f"group{g}_k"] = p.k
            arrays.update({f"group{g}_level{i}": c for i, c in enumerate(p.centroids)})
        if self.counts is not None:
            arrays["counts"] = self.counts
        from .safe_io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def from_npz(cls, f, part) -> "FactorisedVocab":
        """From an open np.load of a file `save` wrote; `part(centroids, k)` builds one group's vocabulary
        (`VisualVocab`: vq.py imports this module, not the reverse)."""
        columns = f["columns"].tolist()
        parts = []
        for g in range(len(columns)):
            levels = sorted(int(n.rsplit("level", 1)[1]) for n in f.files if n.startswith(f"group{g}_level"))
            parts.append(part([f[f"group{g}_level{i}"] for i in levels], int(f[f"group{g}_k"])))
        return cls(parts, columns, f["counts"] if "counts" in f.files else None)


def product_strides(sizes) -> np.ndarray:
    """What each group's code is multiplied by in a product-space word id (the last group's stride is 1)."""
    return np.cumprod([1, *list(sizes)[::-1]])[:-1][::-1].astype(np.int64)


def parse_groups(groups, dim: int) -> list[tuple[int, int]]:
    """`groups` as [[start, end], ...] feature columns: contiguous, non-overlapping, covering 0..dim."""
    cols = [(int(a), int(b)) for a, b in groups]
    if cols[0][0] != 0 or cols[-1][1] != dim or any(b <= a for a, b in cols) or \
            any(cols[i][1] != cols[i + 1][0] for i in range(len(cols) - 1)):
        raise ValueError(f"vocab groups {groups}: expected contiguous [start, end) column ranges covering the "
                         f"{dim} feature columns, e.g. [[0, {dim // 2}], [{dim // 2}, {dim}]]")
    return cols
