"""Plots a researcher reads at a glance, drawn with matplotlib (Agg, no display): training curves, confusion
matrices and the results with their 95% intervals and baselines. Each returns a PIL image, so the run
folder gets a PNG and W&B an image through the same `publish` path. (Thumbnail grids stay Pillow.)"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# a reference line per curve: the value any constant answer scores (exact), where one exists
CHANCE = {"val/align_auroc": 0.5, "val/align_balanced_acc": 0.5}


def _image(fig) -> Image.Image:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def curves_figure(rows: list[dict], keys: list[str]) -> Image.Image | None:
    """Small multiples, one line chart per metric against the optimizer step, from metrics CSV rows (Lightning's
    CSVLogger); chance as a dashed line where a metric has one. None if no metric has two points."""
    series = {}
    for key in keys:
        pts = sorted((int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, ""))
        if len(pts) >= 2:
            series[key] = np.array(pts)
    if not series:
        return None
    cols = min(3, len(series))
    fig, axes = _figure(-(-len(series) // cols), cols, figsize=(4.2 * cols, 2.8 * -(-len(series) // cols)),
                        squeeze=False)
    for ax, (key, pts) in zip(axes.flat, series.items()):
        ax.plot(pts[:, 0], pts[:, 1], marker="." if len(pts) < 30 else None, color="tab:blue")
        if key in CHANCE:
            ax.axhline(CHANCE[key], color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(loc="best", fontsize=8)
        ax.set(title=key, xlabel="step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.tight_layout()
    return _image(fig)


def confusion_figure(matrix: np.ndarray, labels: list[str], title: str) -> Image.Image:
    """A confusion matrix (rows: truth, columns: prediction), shaded by the share of each true class, counts
    written in the cells."""
    n = len(labels)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = _figure(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax = ax if not isinstance(ax, np.ndarray) else ax.flat[0]
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="prediction", ylabel="truth", title=title)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    return _image(fig)


def results_figure(rows: list[dict]) -> Image.Image:
    """Horizontal bars of proportions (in %) with their 95% intervals as error bars, and each row's baseline
    as a grey tick. `rows`: {"label", "value", "low", "high" (or None), "baseline" (or None)}."""
    fig, ax = _figure(figsize=(9, 0.38 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    values = np.array([100 * r["value"] for r in rows])
    err = np.array([[100 * (r["value"] - r["low"]), 100 * (r["high"] - r["value"])] if r.get("low") is not None
                    else [0.0, 0.0] for r in rows]).T.clip(0, None)  # (a value at an interval's end: rounding)
    ax.barh(y, values, xerr=err, color="tab:blue", alpha=0.8, capsize=3, error_kw={"elinewidth": 1})
    base = [(yi, 100 * r["baseline"]) for yi, r in zip(y, rows) if r.get("baseline") is not None]
    if base:
        ax.scatter([b for _, b in base], [yi for yi, _ in base], marker="|", s=300, color="black", zorder=3,
                   label="baseline / chance")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set(xlim=(0, 100), xlabel="% (error bars: 95% interval)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _image(fig)
