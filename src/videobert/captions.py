"""Caption files and shard metadata -> a sorted list of {"start", "end", "text"} cues (seconds).

Sources:
- WebVTT (.vtt) and SRT (.srt); cue markup (<c>, <i>, speaker tags) is stripped.
- One video's json (`<stem>.json`): HowTo100M-style parallel lists {"start": [...], "end": [...],
  "text": [...]}, or a YouCook2-style object {"annotations": [{"segment": [s, e], "sentence": ...}, ...]}.
- A corpus-wide json, parsed once by `read_caption_index`: HowTo100M's `caption.json`
  ({video_id: {"start", "end", "text"}}) or YouCook2's annotation file ({"database": {video_id: {...}}}).
- Shard metadata written by us or by video2dataset: `sentences_from_meta`.
Times are seconds (numbers) or "HH:MM:SS.mmm" strings.

Every source is normalised the same way (`normalise_cues`):
1. whitespace is collapsed; cues without words, and cues with end <= start, are dropped;
2. cues are sorted by start (then end);
3. overlaps are clipped: a cue that ends after the next one starts (ASR "rolling" captions) ends where
   the next one starts; a cue left with end <= start is dropped;
4. a cue whose text exactly repeats the previous cue's text is merged into it (the end is extended),
   when it starts within REPEAT_GAP_S of that cue's end; further apart, a repeat is a new sentence.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:[.,](\d+))?")
_TAG = re.compile(r"<[^>]*>")
REPEAT_GAP_S = 1.0
_INDEX_SHAPE = "{video_id: {'start', 'end', 'text'}} or {'database': {video_id: {'annotations': [...]}}}"


class CaptionError(ValueError):
    """Captions that cannot be used; the message names the file (or sample) and the reason."""


def normalise_cues(cues: list[dict]) -> list[dict]:
    """Apply the rules in the module docstring. Returns new dicts; the input is not modified."""
    kept = sorted(({"start": c["start"], "end": c["end"], "text": " ".join(c["text"].split())} for c in cues
                   if c["text"].split() and c["end"] > c["start"]), key=lambda c: (c["start"], c["end"]))
    for cue, following in itertools.pairwise(kept):
        cue["end"] = min(cue["end"], following["start"])
    out: list[dict] = []
    for cue in kept:
        if cue["end"] <= cue["start"]:
            continue
        if out and cue["text"] == out[-1]["text"] and cue["start"] - out[-1]["end"] <= REPEAT_GAP_S:
            out[-1]["end"] = cue["end"]
        else:
            out.append(cue)
    return out


def _seconds(stamp: str, where: str | Path) -> float:
    m = _TIME.fullmatch(stamp.strip().split(" ")[0])
    if not m:
        raise CaptionError(f"{where}: bad timestamp {stamp!r} (expected HH:MM:SS.mmm)")
    h, mi, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _time(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        return _seconds(value, where)
    raise CaptionError(f"{where}: bad time {value!r} (expected seconds or 'HH:MM:SS.mmm')")


def _cue(start, end, text, where: str) -> dict:
    if not isinstance(text, str):
        raise CaptionError(f"{where}: caption text {text!r} is not a string")
    return {"start": _time(start, where), "end": _time(end, where), "text": text}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CaptionError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _parse_blocks(text: str, path: Path) -> list[dict]:
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        arrow = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if arrow is None:
            continue  # header, NOTE, STYLE, or a bare SRT index
        start, end = lines[arrow].split("-->")
        words = " ".join(_TAG.sub("", ln) for ln in lines[arrow + 1:])
        cues.append({"start": _seconds(start, path), "end": _seconds(end, path), "text": words})
    return cues


def _parallel_lists(obj: dict, where: str) -> list[dict]:
    """HowTo100M: {"start": [...], "end": [...], "text": [...]}, one cue per position."""
    start, end, text = obj.get("start"), obj.get("end"), obj.get("text")
    if not (isinstance(start, list) and isinstance(end, list) and isinstance(text, list)
            and len(start) == len(end) == len(text)):
        raise CaptionError(f"{where}: expected lists 'start', 'end' and 'text' of equal length")
    return [_cue(s, e, t, where) for s, e, t in zip(start, end, text)]


def _annotations(annotations, where: str) -> list[dict]:
    """YouCook2: [{"segment": [start, end], "sentence": "..."}, ...]."""
    if not isinstance(annotations, list):
        raise CaptionError(f"{where}: 'annotations' is not a list")
    cues = []
    for i, a in enumerate(annotations):
        segment = a.get("segment") if isinstance(a, dict) else None
        if not (isinstance(segment, list) and len(segment) == 2 and "sentence" in a):
            raise CaptionError(f"{where}: annotation {i} is not {{'segment': [start, end], 'sentence': ...}}")
        cues.append(_cue(segment[0], segment[1], a["sentence"], where))
    return cues


def _video_cues(obj, where: str) -> list[dict]:
    """One video's json captions, in either layout."""
    if isinstance(obj, dict) and "annotations" in obj:
        return _annotations(obj["annotations"], where)
    if isinstance(obj, dict) and "text" in obj:
        return _parallel_lists(obj, where)
    raise CaptionError(f"{where}: expected 'start', 'end', 'text' lists or an 'annotations' list")


def _load_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise CaptionError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _corpus_entries(data) -> dict | None:
    """{video_id: entry} of a corpus-wide caption file, or None when `data` is one video's captions."""
    if isinstance(data, dict) and ("annotations" in data or "text" in data):
        return None
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        return data["database"]  # YouCook2
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return data  # HowTo100M caption.json
    return None


def _usable(cues: list[dict], where: str) -> list[dict]:
    cues = normalise_cues(cues)
    if not cues:
        raise CaptionError(f"{where}: no cue with words")
    return cues


def read_caption_index(path: str | Path) -> dict[str, list[dict]]:
    """Parse a corpus-wide caption json once -> {video_id: cues}.

    Videos whose captions hold no words are left out (a lookup treats them as missing). A malformed
    entry raises CaptionError naming the file and the video id. The whole file is held in memory.
    """
    path = Path(path)
    entries = _corpus_entries(_load_json(path))
    if entries is None:
        raise CaptionError(f"{path}: not a corpus-wide caption file (expected {_INDEX_SHAPE})")
    index = {}
    for video_id, entry in entries.items():
        cues = normalise_cues(_video_cues(entry, f"{path} [{video_id}]"))
        if cues:
            index[video_id] = cues
    return index


def _json_captions(path: Path, video_id: str | None) -> list[dict]:
    data = _load_json(path)
    entries = _corpus_entries(data)
    if entries is None:
        return _usable(_video_cues(data, str(path)), str(path))
    if video_id is None:
        raise CaptionError(f"{path}: holds captions for {len(entries)} videos; pass video_id to pick one")
    if video_id not in entries:
        raise CaptionError(f"{path}: no captions for video {video_id!r}")
    where = f"{path} [{video_id}]"
    return _usable(_video_cues(entries[video_id], where), where)


def read_captions(path: str | Path, video_id: str | None = None) -> list[dict]:
    """Read one video's captions from a .vtt, .srt or .json file (formats in the module docstring).

    `video_id` picks one video from a corpus-wide json; it is ignored for one video's file. Parsing a
    corpus-wide file per video is slow: for many videos use `read_caption_index` once.
    Raises CaptionError naming the file if it cannot be used.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".vtt", ".srt", ".json"):
        raise CaptionError(f"{path}: unsupported caption format (expected .vtt, .srt or .json)")
    if suffix == ".json":
        return _json_captions(path, video_id)
    text = _read_text(path)
    if suffix == ".vtt" and not text.lstrip().startswith("WEBVTT"):
        raise CaptionError(f"{path}: not a WebVTT file (no 'WEBVTT' header)")
    return _usable(_parse_blocks(text, path), str(path))


def _clip_span(meta: dict, where: str) -> tuple[float, float]:
    """(start, end) of a video2dataset clip within its source video; (0, inf) for a whole video."""
    clips = meta.get("clips")
    if isinstance(clips, list) and len(clips) == 1 and isinstance(clips[0], list) and len(clips[0]) == 2:
        return _time(clips[0][0], where), _time(clips[0][1], where)
    return 0.0, math.inf


def _joined(lines, where: str) -> str:
    if isinstance(lines, dict):  # video2dataset's clip_subtitles: {lang: lines}
        lines = next(iter(lines.values()), [])
    if isinstance(lines, str):
        return lines
    if isinstance(lines, list) and all(isinstance(ln, str) for ln in lines):
        return " ".join(lines)
    raise CaptionError(f"{where}: subtitle lines {lines!r} are not text")


def _subtitle_cues(subtitles, meta: dict, where: str) -> list[dict]:
    """video2dataset subtitles, in source-video time, shifted and cut to the sample's clip."""
    if isinstance(subtitles, dict):  # {lang: [...]}: every language has the same times; use the first
        subtitles = next(iter(subtitles.values()), [])
    if not isinstance(subtitles, list):
        raise CaptionError(f"{where}: subtitles are not a list")
    clip_start, clip_end = _clip_span(meta, where)
    cues = []
    for sub in subtitles:
        if not isinstance(sub, dict) or "lines" not in sub:
            raise CaptionError(f"{where}: subtitle {sub!r} is not {{'start', 'end', 'lines'}}")
        cue = _cue(sub.get("start"), sub.get("end"), _joined(sub["lines"], where), where)
        cue["start"] = max(cue["start"], clip_start) - clip_start
        cue["end"] = min(cue["end"], clip_end) - clip_start
        cues.append(cue)
    return cues


def _meta_sources(meta: dict, name: str) -> Iterator[list[dict]]:
    """Candidate cue lists of a sample's metadata, in order of preference (parsed lazily)."""
    sentences = meta.get("sentences")
    if isinstance(sentences, list):  # our own shards
        if not all(isinstance(c, dict) for c in sentences):
            raise CaptionError(f"{name}: 'sentences' is not a list of {{'start', 'end', 'text'}}")
        yield [_cue(c.get("start"), c.get("end"), c.get("text"), name) for c in sentences]
    yt_meta = meta.get("yt_meta_dict") if isinstance(meta.get("yt_meta_dict"), dict) else {}
    for subtitles in (meta.get("clip_subtitles"), yt_meta.get("subtitles"), meta.get("subtitles")):
        if subtitles:
            yield _subtitle_cues(subtitles, meta, name)
    if all(isinstance(meta.get(k), list) for k in ("start", "end", "text")):
        yield _parallel_lists(meta, name)


def sentences_from_meta(meta: dict, txt: str | None, duration: float | None, name: str) -> list[dict]:
    """The cues of a shard sample, whether written by us or by another tool (video2dataset: mp4, txt, json).

    Tried in order; the first that holds words is used, normalised as in the module docstring:
    1. meta["sentences"] (our own shards);
    2. video2dataset subtitles: meta["clip_subtitles"], meta["yt_meta_dict"]["subtitles"] or
       meta["subtitles"], a list of {"start": "HH:MM:SS.mmm", "end": ..., "lines": [...]} or
       {lang: such a list} (first language). Their times are in the source video: in a clip sample
       (meta["clips"] == [[start, end]]) they are shifted to the clip and cut to it;
    3. parallel meta["start"], meta["end"], meta["text"] lists;
    4. `txt` (or else meta["caption"]) as one cue over [0, duration] (else meta["duration"]).
    Raises CaptionError naming `name` when there is no text, or a field has the wrong shape.
    """
    if not isinstance(meta, dict):
        raise CaptionError(f"{name}: metadata is {type(meta).__name__}, not a json object")
    for cues in _meta_sources(meta, name):
        cues = normalise_cues(cues)
        if cues:
            return cues
    text = txt if txt and txt.strip() else meta.get("caption")
    if not isinstance(text, str) or not text.strip():
        raise CaptionError(f"{name}: no caption text (no sentences, subtitles, start/end/text lists, txt or caption)")
    length = duration if duration is not None else meta.get("duration")
    if isinstance(length, bool) or not isinstance(length, (int, float)) or not length > 0:
        raise CaptionError(f"{name}: a whole-video caption needs the video's duration (got {length!r})")
    return normalise_cues([{"start": 0.0, "end": float(length), "text": text}])
