"""The built-in corpus: procedural cooking videos (H.264 mp4) with ASR-like WebVTT captions.

Each video follows one of six recipes (RECIPES: ordered steps, some optional, some repeated, ingredients
drawn per video); a step shows one action (verb, a distinct motion) applied to one object (noun, a distinct
shape, colour and texture), and idle scenes come between steps now and then. The narration says what happens in varied,
ASR-like sentences, with fillers and some sentences that do not match the picture. The ground truth
(verb, noun, start, end per step) goes to `ground_truth.json`, read only by evaluation.

Every video ends with its result: the dish on the board, either done well (bright, with sparkles) or
burnt (charred dark, with smoke rising). That outcome is the video's sentiment (positive / negative);
the narration carries it in a few sentences only (the closing remark, most of the time, and sometimes
a remark during an idle scene), so neither the picture of the cooking steps nor most sentences give it
away. It goes to `labels.json` ({video id: {"sentiment": ...}}), which the shard builder copies into
each sample's `json`.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from .safe_io import atomic_path, folder_lock, write_text

VERBS = ["stir", "roll", "flip", "spin", "toss", "shake", "press", "cut", "pour", "peel"]
NOUNS = ["tomato", "egg", "onion", "carrot", "potato", "cucumber", "lemon", "bread", "cheese", "fish"]
# Videos follow recipes: each dish is an ordered list of (verb, noun or slot, probability the step is done);
# a slot is an ingredient drawn once per video (A and B: two different vegetables), so one noun comes back
# within a video. Steps repeat within a recipe (a summary must choose), recipes share steps (the last step
# alone does not tell the next one; the dish, known from the steps before it, does), and optional steps
# vary the order.
VEGETABLES = ["tomato", "onion", "carrot", "potato", "cucumber"]
SLOTS = {"A": VEGETABLES, "B": VEGETABLES, "C": ["egg", "cheese"], "D": ["cheese", "fish"]}
RECIPES = {
    "salad": [("peel", "A", 0.6), ("cut", "A", 1), ("cut", "B", 1), ("toss", "A", 1), ("press", "lemon", 0.5),
              ("shake", "D", 0.5), ("toss", "A", 1)],
    "omelette": [("shake", "C", 1), ("pour", "C", 0.7), ("cut", "A", 0.7), ("stir", "C", 1), ("stir", "A", 0.6),
                 ("flip", "C", 1), ("flip", "C", 0.5)],
    "sandwich": [("cut", "bread", 1), ("flip", "bread", 0.5), ("press", "D", 1), ("cut", "A", 1), ("roll", "A", 0.6),
                 ("press", "bread", 1), ("cut", "bread", 0.7)],
    "fish fry": [("peel", "lemon", 0.5), ("roll", "fish", 1), ("flip", "fish", 1), ("press", "lemon", 1),
                 ("spin", "A", 0.6), ("flip", "fish", 0.6)],
    "soup": [("peel", "A", 1), ("cut", "A", 1), ("pour", "A", 1), ("stir", "A", 1), ("spin", "B", 0.6),
             ("stir", "A", 1), ("shake", "B", 0.5)],
    "pizza": [("roll", "bread", 1), ("spin", "bread", 1), ("cut", "A", 1), ("toss", "A", 0.6), ("pour", "D", 1),
              ("spin", "bread", 1)],
}
# 10 verb-noun pairs, each verb and each noun in one of them: a corpus made with `hold_out_pairs` never
# shows them (such a step takes another ingredient of its slot, or is left out when its noun is fixed),
# so a test on them asks for combinations never seen together
HELD_OUT_PAIRS = [("peel", "lemon"), ("cut", "carrot"), ("toss", "cucumber"), ("stir", "onion"),
                  ("pour", "egg"), ("flip", "bread"), ("press", "cheese"), ("roll", "tomato"), ("spin", "potato"),
                  ("shake", "fish")]

# noun -> (shape, rgb colour, texture); textures move with the object so rotation is visible
OBJECTS = {
    "tomato": ("circle", (210, 40, 35), "solid"),
    "egg": ("ellipse", (245, 240, 225), "solid"),
    "onion": ("circle", (140, 60, 150), "rings"),
    "carrot": ("bar", (240, 130, 20), "solid"),
    "potato": ("ellipse", (150, 105, 60), "dots"),
    "cucumber": ("bar", (40, 150, 50), "stripes"),
    "lemon": ("ellipse", (245, 225, 40), "stripes"),
    "bread": ("square", (215, 170, 110), "dots"),
    "cheese": ("triangle", (250, 190, 60), "dots"),
    "fish": ("diamond", (110, 140, 200), "stripes"),
}

STEP_TEMPLATES = [
    "now let me show you how to {verb} the {noun}",
    "okay so now we're gonna {verb} the {noun}",
    "next you want to {verb} the {noun} like this",
    "um just {verb} the {noun} for a bit",
    "and then you {verb} your {noun} nice and easy",
    "so i'm going to {verb} this {noun} right here",
    "{verb} the {noun} until it looks good",
    "alright let's {verb} the {noun} now",
]
FILLERS = [
    "hi guys welcome back to my kitchen",
    "so yeah",
    "don't forget to subscribe",
    "this is one of my favourite recipes",
    "you know what i mean",
    "alright",
    "it smells really good already",
    "my grandmother taught me this",
]

# the result scene's closing remark (else a neutral one) and the occasional mood remark over an idle scene
RESULT_REMARKS = {
    "positive": ["wow this turned out perfect", "look at that beautiful golden colour", "mmm this is delicious",
                 "that came out really nice i'm so happy"],
    "negative": ["oh no i think it burned", "ugh that went way too dark", "well that's ruined",
                 "hmm it's burnt sorry guys that's a disaster"],
}
NEUTRAL_CLOSINGS = ["okay that's it for today", "thanks for watching", "see you next time"]
MOOD_REMARKS = {
    "positive": ["this is going really well", "i love how easy this is"],
    "negative": ["hmm the pan is getting way too hot", "oops i got distracted there"],
}
SENTIMENTS = ("negative", "positive")  # class ids 0 and 1
RESULT_CLIPS = 2  # length of the result scene

CORPUS_VERSION = 4  # bump when the rendering or narration changes, so caches of the old corpus are not reused
FPS = 20
CLIP_SECONDS = 1.5  # the paper's clip: 30 frames at 20 fps


def _shape_radius(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A 'radius' that is 1 on the shape's outline, < 1 inside (unit coordinates)."""
    if shape == "circle":
        return np.sqrt(u**2 + v**2)
    if shape == "ellipse":
        return np.sqrt((u / 1.0) ** 2 + (v / 0.65) ** 2)
    if shape == "bar":
        return np.maximum(np.abs(u) / 1.2, np.abs(v) / 0.35)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.85
    if shape == "diamond":
        return np.abs(u) / 1.15 + np.abs(v) / 0.7
    if shape == "triangle":
        return np.maximum(-v / 0.5, (v * 0.5 + np.abs(u) * 0.866) / 0.6)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if texture == "solid":
        return np.ones_like(u)
    if texture == "rings":
        return 0.75 + 0.25 * np.cos(np.sqrt(u**2 + v**2) * 14.0)
    if texture == "stripes":
        return 0.7 + 0.3 * (np.sin(u * 12.0) > 0)
    if texture == "dots":
        return 1.0 - 0.45 * ((np.sin(u * 11.0) * np.sin(v * 11.0)) > 0.6)
    raise ValueError(f"unknown texture {texture!r}")


def _pose(verb: str, t: float, amp: float) -> tuple[float, float, float, float, float, bool]:
    """Object pose at time t within a step: (dx, dy, scale_x, scale_y, angle, knife_y or nan)."""
    p = t / CLIP_SECONDS  # periods divide 1.5 s, so every clip of a step looks alike
    s = math.sin
    if verb == "stir":
        return 12 * amp * math.cos(2 * math.pi * p), 12 * amp * s(2 * math.pi * p), 1, 1, 0, math.nan
    if verb == "roll":
        x = 14 * amp * s(2 * math.pi * p)
        return x, 0, 1, 1, x / 6.0, math.nan
    if verb == "flip":
        return 0, 0, 1, max(abs(math.cos(2 * math.pi * 2 * p)), 0.08), 0, math.nan
    if verb == "spin":
        return 0, 0, 1, 1, 2 * math.pi * p, math.nan
    if verb == "toss":
        q = (2 * p) % 1.0
        return 0, -18 * amp * 4 * q * (1 - q), 1, 1, 0, math.nan
    if verb == "shake":
        return 5 * amp * s(2 * math.pi * 6 * p), 0, 1, 1, 0, math.nan
    if verb == "press":
        a = abs(s(2 * math.pi * p))
        return 0, 6 * a, 1 + 0.3 * a, 1 - 0.45 * a, 0, math.nan
    if verb == "cut":
        q = (3 * p) % 1.0
        return 0, 0, 1, 1, 0, -16 + 32 * (1 - abs(2 * q - 1))
    if verb == "pour":
        a = 0.5 - 0.5 * math.cos(2 * math.pi * p)
        return 10 * amp * a, 10 * amp * a, 1, 1, 1.1 * a, math.nan
    if verb == "peel":
        sc = 0.8 + 0.2 * math.cos(2 * math.pi * p)
        return 0, 0, sc, sc, 0, math.nan
    raise ValueError(f"unknown verb {verb!r}")


def render_frame(verb: str, noun: str, t: float, look: dict, size: int) -> np.ndarray:
    """One RGB frame (size, size, 3) uint8 of `verb` applied to `noun` at time t (verb None: idle)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frame = np.empty((size, size, 3), np.float32)
    frame[:] = np.asarray(look["board"], np.float32) * (0.9 + 0.1 * yy[..., None] / size)
    if verb is None:  # an idle scene: the empty board
        return frame.clip(0, 255).astype(np.uint8)
    shape, colour, texture = OBJECTS[noun]
    dx, dy, sx, sy, ang, knife = _pose(verb, t, look["amp"])
    cx, cy = size / 2 + look["offset"][0] + dx, size / 2 + look["offset"][1] + dy
    r0 = size * 0.22 * look["scale"]
    x, y = (xx - cx) / (r0 * sx), (yy - cy) / (r0 * sy)
    u, v = x * math.cos(ang) + y * math.sin(ang), -x * math.sin(ang) + y * math.cos(ang)
    inside = np.clip((1.0 - _shape_radius(shape, u, v)) * 6.0, 0.0, 1.0)
    stem = np.clip(1.0 - np.sqrt((u - 0.0) ** 2 + (v + 0.55) ** 2) / 0.2, 0, 1) > 0  # asymmetric mark
    shade = _texture(texture, u, v) * np.where(stem, 0.35, 1.0)
    colour_arr = np.asarray(colour, np.float32) * look["tint"]
    obj = colour_arr * shade[..., None]
    frame = frame * (1 - inside[..., None]) + obj * inside[..., None]
    if not math.isnan(knife):  # a grey knife blade chopping down through the object
        blade = (np.abs(xx - cx - 2) < 1.5) & (yy < cy + knife)
        frame[blade] = (200, 200, 215)
    return frame.clip(0, 255).astype(np.uint8)


def render_result(noun: str, burnt: bool, t: float, look: dict, size: int) -> np.ndarray:
    """The finished dish at rest: in its colours with twinkling sparkles, or charred with smoke rising."""
    frame = render_frame("spin", noun, 0.0, look, size).astype(np.float32)  # (spin at t=0: the object at rest)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + look["offset"][0], size / 2 + look["offset"][1]
    on_object = np.abs(frame - render_frame(None, None, 0.0, look, size)).sum(-1) > 30
    if burnt:
        frame[on_object] = frame[on_object] * 0.2 + np.array([35, 22, 12], np.float32)
        for k in range(3):  # grey puffs rising and drifting, one every 1/3 of a clip
            q = (t / CLIP_SECONDS + k / 3) % 1.0
            px, py = cx + 8 * math.sin(2 * math.pi * (q + k / 3)), cy - 6 - 22 * q
            puff = np.clip(1 - np.hypot(xx - px, yy - py) / (4 + 4 * q), 0, 1)[..., None]
            frame = frame * (1 - 0.8 * puff) + np.float32(170) * 0.8 * puff
    else:
        for k in range(4):  # white sparkles on the dish, blinking in turn
            on = math.sin(2 * math.pi * (2 * t / CLIP_SECONDS + k / 4)) > 0.3
            px, py = cx + 9 * math.cos(1.7 * k), cy + 7 * math.sin(2.3 * k)
            frame[(np.abs(xx - px) + np.abs(yy - py) < 2.5) & on] = (255, 255, 240)
    return frame.clip(0, 255).astype(np.uint8)


def _plan_video(rng: np.random.Generator, idle_prob: float, hold_out_pairs: bool = False,
                mark_held_out: bool = False) -> tuple[str, list[dict]]:
    """(dish, steps) of one video: one of RECIPES, its slots filled with ingredients, optional steps kept
    with their probability; each step lasts 2-3 clips, and an idle scene (no action) comes before a step
    with `idle_prob`. With `hold_out_pairs`, a step that would be one of HELD_OUT_PAIRS takes another
    ingredient of its slot (or is left out, its noun being fixed); with `mark_held_out` (the test split of a
    model trained on a held-out corpus), such steps get `unseen_pair`."""
    dish = sorted(RECIPES)[int(rng.integers(len(RECIPES)))]
    veg = rng.permutation(VEGETABLES).tolist()
    fill = {"A": veg[0], "B": veg[1], "C": _pick(rng, SLOTS["C"]), "D": _pick(rng, SLOTS["D"])}
    steps, t = [], 0.0
    for verb, noun, keep in RECIPES[dish]:
        if rng.random() >= keep:
            continue
        pair = (verb, fill.get(noun, noun))
        if hold_out_pairs and pair in HELD_OUT_PAIRS:
            if noun not in SLOTS:
                continue
            pair = (verb, _pick(rng, [n for n in SLOTS[noun] if n != pair[1]]))
        if rng.random() < idle_prob:
            n_clips = int(rng.integers(2, 4))
            steps.append({"verb": None, "noun": None, "start": t, "end": t + n_clips * CLIP_SECONDS})
            t += n_clips * CLIP_SECONDS
        n_clips = int(rng.integers(2, 4))
        steps.append({"verb": pair[0], "noun": pair[1], "start": t, "end": t + n_clips * CLIP_SECONDS,
                      "unseen_pair": mark_held_out and pair in HELD_OUT_PAIRS})
        t += n_clips * CLIP_SECONDS
    return dish, steps


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cue_text(rng: np.random.Generator, step: dict, mismatch_prob: float, sentiment: str) -> str:
    if "outcome" in step:
        return _pick(rng, RESULT_REMARKS[sentiment] if rng.random() < 0.7 else NEUTRAL_CLOSINGS)
    if step["verb"] is None and rng.random() < 0.4:
        return _pick(rng, MOOD_REMARKS[sentiment])
    if step["verb"] is None or rng.random() < 0.15:
        return _pick(rng, FILLERS)
    verb, noun = step["verb"], step["noun"]
    if rng.random() < mismatch_prob:
        verb, noun = VERBS[rng.integers(len(VERBS))], NOUNS[rng.integers(len(NOUNS))]
    return STEP_TEMPLATES[rng.integers(len(STEP_TEMPLATES))].format(verb=verb, noun=noun)


def _narrate(rng: np.random.Generator, steps: list[dict], mismatch_prob: float, sentiment: str) -> list[dict]:
    """ASR-like cues: a sentence per step (sometimes not matching the picture) plus fillers; the result
    scene gets a remark in the video's tone (70%) or a neutral closing, an idle scene now and then a mood
    remark (40%). A cue never repeats the one before (caption readers merge immediate repeats)."""
    cues = []
    for step in steps:
        text = _cue_text(rng, step, mismatch_prob, sentiment)
        while cues and text == cues[-1]["text"]:
            text = _cue_text(rng, step, mismatch_prob, sentiment)
        start = max(0.0, step["start"] + float(rng.uniform(-0.4, 0.4)))
        end = min(steps[-1]["end"], step["end"] + float(rng.uniform(-0.4, 0.4)))
        cues.append({"start": round(start, 3), "end": round(end, 3), "text": text})
    return cues


def _vtt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_vtt(path: Path, cues: list[dict]) -> None:
    lines = ["WEBVTT", ""]
    for cue in cues:
        lines += [f"{_vtt_time(cue['start'])} --> {_vtt_time(cue['end'])}", cue["text"], ""]
    write_text(path, "\n".join(lines))


def write_mp4(path: Path, frames, fps: int, size: int) -> None:
    """Encode RGB frames to H.264 (yuv420p) with PyAV; written to a temp name of this process, then renamed."""
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make_video(args: tuple) -> tuple[str, dict]:
    out_dir, video_id, seed, size, idle_prob, mismatch_prob, hold_out_pairs, mark_held_out, burnt_prob = args
    rng = np.random.default_rng(seed)
    # a dark, muted cutting board, so no object blends into it
    look = {"board": rng.uniform(50, 95) + rng.uniform(-8, 8, 3), "amp": rng.uniform(0.85, 1.15),
            "scale": rng.uniform(0.85, 1.15), "offset": rng.uniform(-4, 4, 2), "tint": rng.uniform(0.92, 1.08)}
    recipe, steps = _plan_video(rng, idle_prob, hold_out_pairs, mark_held_out)
    burnt = bool(rng.random() < burnt_prob)
    dish = next((s["noun"] for s in reversed(steps) if s["noun"]), NOUNS[int(rng.integers(len(NOUNS)))])
    end = steps[-1]["end"]
    steps.append({"verb": None, "noun": None, "start": end, "end": end + RESULT_CLIPS * CLIP_SECONDS,
                  "outcome": "burnt" if burnt else "good", "dish": dish})
    sentiment = SENTIMENTS[0] if burnt else SENTIMENTS[1]
    cues = _narrate(rng, steps, mismatch_prob, sentiment)

    def frames():
        for step in steps:
            for i in range(int(round((step["end"] - step["start"]) * FPS))):
                if "outcome" in step:
                    yield render_result(step["dish"], burnt, i / FPS, look, size)
                else:
                    yield render_frame(step["verb"], step["noun"], i / FPS, look, size)

    write_mp4(Path(out_dir) / f"{video_id}.mp4", frames(), FPS, size)
    write_vtt(Path(out_dir) / f"{video_id}.vtt", cues)
    return video_id, {"duration": steps[-1]["end"], "recipe": recipe, "steps": steps, "sentiment": sentiment}


def make_corpus(out: str, num_videos: int = 200, seed: int = 0, size: int = 64, prefix: str = "video",
                idle_prob: float = 0.0, mismatch_prob: float = 0.1, hold_out_pairs: bool = False,
                mark_held_out: bool = False, burnt_prob: float = 0.5, workers: int | None = None) -> Path:
    """Write `num_videos` mp4 + vtt pairs, `labels.json` and `ground_truth.json` into `out`.

    Deterministic by `seed`. `ground_truth.json` is written last: its presence marks a finished corpus.
    Jobs building one folder at once take turns (`videobert.safe_io.folder_lock`); every file is renamed
    into place whole, and a corpus finished with the same settings (`corpus.json`) is reused, not rebuilt.

    Args:
        out: the folder to write the videos into.
        num_videos: how many videos to make.
        seed: the random seed of the whole corpus.
        size: frame width and height in pixels.
        prefix: the videos' file name prefix.
        idle_prob: the share of steps in which nothing happens.
        mismatch_prob: the share of captions that describe another step than the one shown.
        hold_out_pairs: never show the verb-noun pairs of HELD_OUT_PAIRS (training splits).
        mark_held_out: mark the steps that show one as `unseen_pair` (the test split of such a model).
        burnt_prob: the share of videos whose dish burns (sentiment negative); the others turn out well.
        workers: processes that encode videos (default: one per core).
    """
    out_dir = Path(out)
    settings = {"version": CORPUS_VERSION, "num_videos": num_videos, "seed": seed, "size": size, "prefix": prefix,
                "idle_prob": idle_prob, "mismatch_prob": mismatch_prob, "hold_out_pairs": hold_out_pairs,
                "mark_held_out": mark_held_out, "burnt_prob": burnt_prob}
    with folder_lock(out_dir, "corpus"):
        stamp = out_dir / "corpus.json"
        if (out_dir / "ground_truth.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
            print(f"corpus: {out_dir} is complete with these settings; reused")
            return out_dir
        _make_corpus(out_dir, num_videos, seed, size, prefix, idle_prob, mismatch_prob, hold_out_pairs,
                     mark_held_out, burnt_prob, workers)
        write_text(stamp, json.dumps(settings, indent=1))
        return out_dir


def _make_corpus(out_dir: Path, num_videos, seed, size, prefix, idle_prob, mismatch_prob, hold_out_pairs,
                 mark_held_out, burnt_prob, workers) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(num_videos)
    jobs = [(str(out_dir), f"{prefix}{i:05d}", s, size, idle_prob, mismatch_prob, hold_out_pairs, mark_held_out,
             burnt_prob) for i, s in enumerate(seeds)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        videos = dict(pool.map(_make_video, jobs, chunksize=4))
    truth = {"verbs": VERBS, "nouns": NOUNS, "fps": FPS, "held_out_pairs": HELD_OUT_PAIRS if hold_out_pairs or mark_held_out else [],
             "videos": videos}
    labels = {vid: {"sentiment": info["sentiment"]} for vid, info in videos.items()}
    write_text(out_dir / "labels.json", json.dumps(labels, indent=1))  # per-video labels for the shards' json
    write_text(out_dir / "ground_truth.json", json.dumps(truth, indent=1))
    print(f"corpus: {num_videos} videos ({sum(v['duration'] for v in videos.values()):.0f} s) -> {out_dir}")
    return out_dir
