"""Caption files -> a sorted list of {"start", "end", "text"} cues (seconds).

WebVTT and SRT are read here. Cue markup (<c>, <i>, speaker tags) is stripped; cues with no words are
dropped; overlapping or out-of-order cues are sorted by start time.
"""
from __future__ import annotations

import re
from pathlib import Path

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]*>")


class CaptionError(ValueError):
    """A caption file that cannot be used; the message names the file and the reason."""


def _seconds(stamp: str, path: Path) -> float:
    m = _TIME.fullmatch(stamp.strip().split(" ")[0])
    if not m:
        raise CaptionError(f"{path}: bad timestamp {stamp!r} (expected HH:MM:SS.mmm)")
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _parse_blocks(text: str, path: Path) -> list[dict]:
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        arrow = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if arrow is None:
            continue  # header, NOTE, STYLE, or a bare SRT index
        start, end = lines[arrow].split("-->")
        words = " ".join(_TAG.sub("", ln).strip() for ln in lines[arrow + 1:]).strip()
        if words:
            cues.append({"start": _seconds(start, path), "end": _seconds(end, path), "text": words})
    return sorted(cues, key=lambda c: (c["start"], c["end"]))


def read_captions(path: str | Path) -> list[dict]:
    """Read a .vtt or .srt file. Raises CaptionError naming the file if it cannot be used."""
    path = Path(path)
    if path.suffix.lower() not in (".vtt", ".srt"):
        raise CaptionError(f"{path}: unsupported caption format (expected .vtt or .srt)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CaptionError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if path.suffix.lower() == ".vtt" and not text.lstrip().startswith("WEBVTT"):
        raise CaptionError(f"{path}: not a WebVTT file (no 'WEBVTT' header)")
    cues = _parse_blocks(text, path)
    if not cues:
        raise CaptionError(f"{path}: no cue with words")
    return cues
