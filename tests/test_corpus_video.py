import json

import av
import numpy as np
import pytest

from videobert.captions import read_captions
from videobert.corpus import NOUNS, VERBS, make_corpus, render_frame
from videobert.video import VideoError, iter_clips, probe_duration


def test_corpus_writes_real_videos_captions_and_truth(tmp_path):
    make_corpus(str(tmp_path / "a"), num_videos=3, seed=7, workers=1)
    make_corpus(str(tmp_path / "b"), num_videos=3, seed=7, workers=1)
    truth = json.loads((tmp_path / "a/ground_truth.json").read_text())
    assert len(VERBS) >= 10 and len(NOUNS) >= 10 and truth["verbs"] == VERBS
    assert truth == json.loads((tmp_path / "b/ground_truth.json").read_text())  # deterministic by seed
    for vid, info in truth["videos"].items():
        mp4 = tmp_path / "a" / f"{vid}.mp4"
        with av.open(str(mp4)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
        assert probe_duration(str(mp4)) == pytest.approx(info["duration"], abs=0.06)
        steps = info["steps"]
        assert steps[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(steps, steps[1:]))
        cues = read_captions(tmp_path / "a" / f"{vid}.vtt")
        assert (tmp_path / "a" / f"{vid}.vtt").read_text() == (tmp_path / "b" / f"{vid}.vtt").read_text()
        assert len(cues) == len(steps) and all(c["end"] > c["start"] for c in cues)


def test_verbs_are_distinct_motions_and_nouns_distinct_looks():
    look = {"board": (140, 120, 90), "amp": 1.0, "scale": 1.0, "offset": (0, 0), "tint": 1.0}
    times = np.arange(30) / 20
    clips = {v: np.stack([render_frame(v, "bread", t, look, 64) for t in times]).astype(float) for v in VERBS}
    for a in VERBS:
        for b in VERBS:
            if a < b:
                assert np.abs(clips[a] - clips[b]).mean() > 1.0, (a, b)
    first = {n: render_frame("spin", n, 0.0, look, 64).astype(float) for n in NOUNS}
    assert min(np.abs(first[a] - first[b]).mean() for a in NOUNS for b in NOUNS if a != b) > 1.0


def _gradient_video(path, fps, n, w, h):
    """A smooth moving gradient (compresses well), any size and frame rate."""
    frames = [np.full((h, w, 3), (i * 5) % 255, np.uint8) + np.arange(w, dtype=np.uint8)[None, :, None]
              for i in range(n)]
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_clips_resample_any_fps_and_crop(tmp_path):
    path = tmp_path / "v.mp4"
    _gradient_video(path, fps=30, n=30 * 4, w=80, h=48)  # 4 s at 30 fps, not square
    clips = list(iter_clips(str(path), fps=20, clip_frames=30, size=32))
    assert [(round(s, 3), round(e, 3)) for s, e, _ in clips] == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]
    assert all(c.shape == (30, 32, 32, 3) for _, _, c in clips)
    # the 3rd clip is the 1 s tail, padded with its last frame; 0.5 s would be dropped
    assert np.array_equal(clips[2][2][-1], clips[2][2][20])
    short = list(iter_clips(str(path), fps=20, clip_frames=30, size=32, min_fill=0.9))
    assert len(short) == 2


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        probe_duration(str(bad), name=str(bad))
    with pytest.raises(VideoError, match="bad.mp4"):
        list(iter_clips(str(bad), name=str(bad)))


def test_held_out_pairs_never_appear_when_held_out():
    from videobert.corpus import HELD_OUT_PAIRS, NOUNS, RECIPES, VERBS, _plan_video

    assert sorted(v for v, _ in HELD_OUT_PAIRS) == sorted(VERBS) and sorted(n for _, n in HELD_OUT_PAIRS) == sorted(NOUNS)
    rng = np.random.default_rng(0)
    held = [s for _ in range(300) for s in _plan_video(rng, 0.0, hold_out_pairs=True)[1]]
    free = [s for _ in range(300) for s in _plan_video(rng, 0.0, mark_held_out=True)[1]]
    assert not any(s["unseen_pair"] for _ in range(50) for s in _plan_video(rng, 0.0)[1])  # nothing held out
    assert not any(s["unseen_pair"] or (s["verb"], s["noun"]) in HELD_OUT_PAIRS for s in held)
    marked = [s for s in free if s["unseen_pair"]]
    assert marked and all((s["verb"], s["noun"]) in HELD_OUT_PAIRS for s in marked)
    assert len(marked) / len(free) == pytest.approx(0.13, abs=0.03)  # >= 100 of the ~1,100 steps of 200 test videos
    seen = {(s["verb"], s["noun"]) for s in held}  # every other pair a test video can show is seen in training
    assert {(s["verb"], s["noun"]) for s in free} - seen == set(HELD_OUT_PAIRS)
    assert all(len(r) >= 6 for r in RECIPES.values())


def test_videos_follow_recipes_with_repeated_steps_and_shared_transitions():
    from collections import Counter, defaultdict

    from videobert.corpus import _plan_video

    rng = np.random.default_rng(1)
    plans = [_plan_video(rng, 0.2) for _ in range(400)]
    follow, by_dish = defaultdict(Counter), defaultdict(Counter)
    repeats = 0
    for dish, steps in plans:
        pairs = [(s["verb"], s["noun"]) for s in steps if s["verb"]]
        repeats += len(pairs) > len(set(pairs))
        for a, b in zip(pairs, pairs[1:]):
            follow[a][b] += 1
            by_dish[(dish, a)][b] += 1
    assert repeats / len(plans) > 0.5  # most videos show some step twice: a summary must choose
    # the last step alone leaves the next open; knowing the dish as well tells it more often
    bigram = sum(c.most_common(1)[0][1] for c in follow.values()) / sum(sum(c.values()) for c in follow.values())
    dish = sum(c.most_common(1)[0][1] for c in by_dish.values()) / sum(sum(c.values()) for c in by_dish.values())
    assert bigram < 0.6 and dish > bigram + 0.1
