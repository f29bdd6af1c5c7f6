"""Evaluation figures as images: written as PNG into the run folder, and logged to W&B when it is on.

Drawn with Pillow alone (no plotting library), so they work on any machine that runs the tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CELL, LABEL = 28, 64  # pixels per matrix cell, room for the row/column labels


def confusion_image(matrix: np.ndarray, labels: list[str], title: str) -> Image.Image:
    """A confusion matrix (rows: truth, columns: prediction) as a white-to-blue grid with counts."""
    n = len(labels)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    img = Image.new("RGB", (LABEL + n * CELL + 4, LABEL + n * CELL + 4), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), title, fill="black")
    for i in range(n):
        draw.text((4, LABEL + i * CELL + 8), labels[i][:9], fill="black")
        draw.text((LABEL + i * CELL + 2, LABEL - 14 - (i % 2) * 12), labels[i][:5], fill="black")
        for j in range(n):
            shade = int(255 * (1 - norm[i, j]))
            box = (LABEL + j * CELL, LABEL + i * CELL, LABEL + (j + 1) * CELL - 1, LABEL + (i + 1) * CELL - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            if matrix[i, j]:
                draw.text((box[0] + 3, box[1] + 8), str(int(matrix[i, j])), fill="black" if shade > 110 else "white")
    return img


def publish_examples(trainer, task: str, rows: list[dict]) -> Path:
    """Example predictions as `<default_root_dir>/<task>_examples.json`, and a W&B table when W&B is on."""
    out = Path(trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{task}_examples.json"
    path.write_text(json.dumps(rows, indent=1))
    columns = list(rows[0]) if rows else []
    for logger in trainer.loggers:
        if rows and hasattr(logger, "log_table"):  # WandbLogger
            logger.log_table(key=f"test/{task}/examples", columns=columns,
                             data=[[json.dumps(r[c]) if isinstance(r[c], (list, dict)) else r[c] for c in columns]
                                   for r in rows])
    return path


def publish(trainer, figures: dict[str, Image.Image]) -> list[Path]:
    """Save each figure as `<default_root_dir>/<name>.png` and log it to every W&B logger."""
    out = Path(trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in figures.items():
        path = out / f"{name.replace('/', '_')}.png"
        img.save(path)
        paths.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key=f"test/{name}", images=[np.asarray(img)])
    return paths
