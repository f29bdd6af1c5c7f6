"""Evaluation figures as images: written as PNG into the run folder, and logged to W&B when it is on.

The example grids of thumbnails are drawn with Pillow; plots (curves, confusion matrices, results) are
matplotlib's, in `videobert.plots`.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..thumbnails import Clip, warn_once

THUMB, GAP, HEADER, TEXT_WIDTH = 64, 4, 30, 200  # example grids: thumbnail side, spacing, header, text column


def _clips(value) -> list[Clip] | None:
    """The clips a table cell shows (a `Clip` or a list of them), or None for a text cell."""
    if isinstance(value, Clip):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Clip) for v in value):
        return list(value)
    return None


def _jsonable(value):
    clips = _clips(value)
    if clips is not None:
        return [c.as_json() for c in clips] if isinstance(value, list) else value.as_json()
    return value


def strip(frames: list[np.ndarray | None], thumb: int = THUMB) -> Image.Image:
    """Thumbnails side by side, each `thumb` px square; a clip without a frame is a grey cell with a cross."""
    img = Image.new("RGB", (max(1, len(frames)) * (thumb + GAP) - GAP, thumb), "white")
    draw = ImageDraw.Draw(img)
    for i, frame in enumerate(frames):
        x = i * (thumb + GAP)
        if frame is None:
            draw.rectangle((x, 0, x + thumb - 1, thumb - 1), fill=(200, 200, 200))
            draw.line((x, 0, x + thumb - 1, thumb - 1), fill=(150, 150, 150))
            draw.line((x, thumb - 1, x + thumb - 1, 0), fill=(150, 150, 150))
        else:
            img.paste(Image.fromarray(np.ascontiguousarray(frame)).resize((thumb, thumb)), (x, 0))
    return img


def example_grid(rows: list[dict], frames: dict, title: str, thumb: int = THUMB) -> Image.Image:
    """Example rows as an image: a header line, then one band of `thumb + 2 * GAP` px per row; a clip
    column holds the clips' thumbnails (`frames`: Clip -> image or None), a text column wrapped text."""
    columns = list(rows[0])
    kinds = {c: max((len(_clips(r[c]) or []) for r in rows), default=0) for c in columns}
    widths = [kinds[c] * (thumb + GAP) + GAP if kinds[c] else TEXT_WIDTH for c in columns]
    img = Image.new("RGB", (sum(widths) + GAP, HEADER + len(rows) * (thumb + 2 * GAP)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((GAP, 2), title, fill="black")
    for x, c in zip(np.cumsum([GAP, *widths[:-1]]), columns):
        draw.text((int(x), 16), c, fill=(60, 60, 160))
    for r, row in enumerate(rows):
        y = HEADER + r * (thumb + 2 * GAP)
        draw.line((0, y, img.width, y), fill=(220, 220, 220))
        for x, c in zip(np.cumsum([GAP, *widths[:-1]]), columns):
            clips = _clips(row[c])
            if clips is not None:
                img.paste(strip([frames.get(k) for k in clips], thumb), (int(x), y + GAP))
            else:
                text = f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                lines = textwrap.wrap(text, TEXT_WIDTH // 6)[: (thumb + GAP) // 11]
                draw.multiline_text((int(x), y + GAP), "\n".join(lines), fill="black", spacing=1)
    return img


def publish_examples(trainer, task: str, rows: list[dict]) -> Path:
    """Example predictions as `<default_root_dir>/<task>_examples.json` and `..._examples.png` (a grid with
    the thumbnail of every clip), and a W&B table with one image per clip cell when W&B is on.

    Thumbnails come from the DataModule's `thumbnail_source()` (the raw shards of the test videos); without
    one the examples are published without images."""
    out = Path(trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{task}_examples.json"
    path.write_text(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=1))
    if not rows:
        return path
    wanted = list(dict.fromkeys(c for r in rows for v in r.values() for c in (_clips(v) or [])))
    source = getattr(getattr(trainer, "datamodule", None), "thumbnail_source", lambda: None)()
    if source is None and wanted:
        warn_once("examples have no thumbnails: set data.thumbnails to the raw shards of the test videos")
    frames = dict(zip(wanted, source(wanted) if source is not None else [None] * len(wanted)))
    example_grid(rows, frames, f"{task}: examples").save(out / f"{task}_examples.png")
    columns = list(rows[0])
    for logger in trainer.loggers:
        if hasattr(logger, "log_table"):  # WandbLogger
            logger.log_table(key=f"test/{task}/examples", columns=columns,
                             data=[[_table_cell(r[c], frames) for c in columns] for r in rows])
    return path


def _table_cell(value, frames: dict):
    import wandb

    clips = _clips(value)
    if clips is None:
        return json.dumps(value) if isinstance(value, (list, dict)) else value
    images = [frames.get(c) for c in clips]
    if all(i is None for i in images):
        return None
    return wandb.Image(strip(images, max(i.shape[0] for i in images if i is not None)),
                       caption=", ".join(f"{c.video} #{c.index}" for c in clips))


def publish(trainer, figures: dict[str, Image.Image], prefix: str = "test/") -> list[Path]:
    """Save each figure as `<default_root_dir>/<name>.png` and log it to every W&B logger as `<prefix><name>`."""
    out = Path(trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in figures.items():
        path = out / f"{name.replace('/', '_')}.png"
        img.save(path)
        paths.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key=f"{prefix}{name}", images=[np.asarray(img)])
    return paths
