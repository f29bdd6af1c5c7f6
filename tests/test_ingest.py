"""Real video in, whatever its shape: containers, frame rates, sizes, rotation, audio; json captions."""
import json
import tarfile
from fractions import Fraction

import av
import numpy as np
import pytest

from videobert.captions import CaptionError
from videobert.shards import build_shards
from videobert.video import VideoError, iter_clips, probe_duration


def ramp(n: int, fps: float, w: int, h: int) -> list[np.ndarray]:
    """Frames whose brightness rises with time (40 + 80 t), with a white top-left quarter."""
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), round(40 + 80 * i / fps), np.uint8)
        img[: h // 2, : w // 2] = 255
        frames.append(img)
    return frames


def _write_silence(container, stream, seconds: float) -> None:
    step = stream.codec_context.frame_size or 1024
    for k in range(int(seconds * 48000 / step) + 1):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, step), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, k * step
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_video(path, frames, fps, codec="libx264", times=None, audio=None, rotation=0) -> None:
    """Encode rgb `frames` at `fps`, or at explicit `times` (seconds; variable frame rate).

    `rotation`: the display matrix's counter-clockwise degrees (what `VideoFrame.rotation` reads back);
    `audio`: an audio codec for a silent track of the same length.
    """
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as c:
        v = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options={"bf": "0"} if times else {})
        v.width, v.height, v.pix_fmt, v.bit_rate = w, h, "yuv420p", 2_000_000  # little coding noise
        if rotation:
            v.set_display_rotation(rotation)
        if times is not None:
            v.codec_context.time_base = Fraction(1, 1000)
        a = c.add_stream(audio, rate=48000) if audio else None  # every stream is added before the first packet
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            _write_silence(c, a, len(frames) / fps)


@pytest.mark.parametrize("ext, codec, fps, w, h, audio", [
    ("mp4", "libx264", 25, 64, 48, None),
    ("mp4", "libx264", 30000 / 1001, 48, 64, "aac"),
    ("webm", "libvpx", 60, 64, 48, "libopus"),
    ("webm", "libvpx-vp9", 25, 80, 48, None),
    ("mkv", "mpeg4", 30000 / 1001, 64, 48, "aac"),
    ("mov", "mpeg4", 60, 48, 80, None),
])
def test_containers_frame_rates_and_sizes(tmp_path, ext, codec, fps, w, h, audio):
    path = tmp_path / f"v.{ext}"
    write_video(path, ramp(round(2 * fps), fps, w, h), fps, codec, audio=audio)  # 2 s
    assert probe_duration(str(path)) == pytest.approx(2.0, abs=0.05)
    clips = list(iter_clips(str(path), fps=20, clip_frames=10, size=32))
    assert [(round(s, 3), round(e, 3)) for s, e, _ in clips] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
    frames = np.concatenate([c for _, _, c in clips])
    assert frames.shape == (40, 32, 32, 3) and frames.dtype == np.uint8
    # the frame shown at target time n / 20 is the source frame nearest to it: brightness 40 + 80 t
    # (up to 3 off in a tie between two source frames, a few more from coding noise)
    expected = 40 + 80 * np.round(np.arange(40) / 20 * fps) / fps
    assert np.abs(frames[:, -4:, -4:].mean(axis=(1, 2, 3)) - expected).max() < 6


def test_variable_frame_rate_takes_the_nearest_frame(tmp_path):
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 1.0, 1.02, 1.3, 1.92]
    path = tmp_path / "vfr.mp4"
    write_video(path, [np.full((48, 64, 3), 10 + 20 * i, np.uint8) for i in range(len(times))], 25, times=times)
    (start, end, frames), = iter_clips(str(path), fps=10, clip_frames=20, size=16)
    assert (start, end) == (0.0, 2.0)
    shown = np.round((frames[:, 8, 8].mean(axis=1) - 10) / 20).astype(int)
    nearest = np.abs(np.arange(20)[:, None] / 10 - np.array(times)[None, :]).argmin(axis=1)
    assert shown.tolist() == nearest.tolist()  # e.g. 0.7 s shows the frame at 0.5 s, 0.8 s the one at 1.0 s


@pytest.mark.parametrize("ext, codec, rotation, corner", [
    # ffplay turns the picture by -rotation clockwise (rotation 90 -> transpose=cclock); the white
    # top-left quarter of the stored frame must end up where a player shows it
    ("mp4", "libx264", 0, "top-left"),
    ("mp4", "libx264", 90, "bottom-left"),
    ("mp4", "libx264", -90, "top-right"),  # a phone held upright: stored landscape, shown portrait
    ("mp4", "libx264", 180, "bottom-right"),
    ("mov", "mpeg4", -90, "top-right"),
    ("webm", "libvpx-vp9", 90, "bottom-left"),
])
def test_rotation_is_applied_as_a_player_shows_it(tmp_path, ext, codec, rotation, corner):
    path = tmp_path / f"r.{ext}"
    write_video(path, ramp(50, 25, 64, 48), 25, codec, rotation=rotation)
    with av.open(str(path)) as c:
        assert (next(c.decode(video=0)).rotation - rotation) % 360 == 0  # 180 reads back as -180
    frames = np.concatenate([c for _, _, c in iter_clips(str(path), fps=20, clip_frames=10, size=32)])
    quarters = {"top-left": frames[:, 2:14, 2:14], "top-right": frames[:, 2:14, -14:-2],
                "bottom-left": frames[:, -14:-2, 2:14], "bottom-right": frames[:, -14:-2, -14:-2]}
    assert {name for name, q in quarters.items() if q.mean() > 230} == {corner}


def test_audio_only_file_is_a_clear_error(tmp_path):
    path = tmp_path / "talk.mp4"
    with av.open(str(path), mode="w") as c:
        _write_silence(c, c.add_stream("aac", rate=48000), 1.0)
    with pytest.raises(VideoError, match="talk.mp4: no video stream"):
        probe_duration(str(path), name=str(path))
    with pytest.raises(VideoError, match="talk.mp4: no video stream"):
        list(iter_clips(str(path), name=str(path)))


def _shard_sentences(paths) -> dict[str, list[str]]:
    out = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    out[meta["video_id"]] = [c["text"] for c in meta["sentences"]]
    return out


def _small_videos(folder, names):
    folder.mkdir()
    for name in names:
        write_video(folder / f"{name}.mp4", ramp(20, 10, 32, 32), 10)  # 2 s


def test_shards_from_per_video_json_captions(tmp_path, capsys):
    src = tmp_path / "videos"
    _small_videos(src, ["howto", "youcook", "bare"])
    (src / "howto.json").write_text(json.dumps({"start": [0, 1], "end": [1.5, 2], "text": ["cut  it", "fry"]}))
    (src / "youcook.json").write_text(json.dumps({"annotations": [{"segment": [0, 2], "sentence": "mix"}]}))
    paths = build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=4)
    assert _shard_sentences(paths) == {"howto": ["cut it", "fry"], "youcook": ["mix"]}
    assert "no caption file (bare.vtt or bare.srt or bare.json)" in capsys.readouterr().out


def test_shards_from_a_corpus_wide_caption_file(tmp_path, capsys):
    src = tmp_path / "videos"
    _small_videos(src, ["-0AKS4t-tLk", "b2", "notes"])
    (src / "b2.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nignored: the corpus file is used\n")
    captions = tmp_path / "caption.json"
    captions.write_text(json.dumps({"-0AKS4t-tLk": {"start": [0.0], "end": [2.0], "text": ["whisk eggs"]},
                                    "b2": {"start": [0.5], "end": [1.5], "text": ["pour"]},
                                    "notes": {"start": [0.0], "end": [1.0], "text": [" "]}}))
    paths = build_shards(str(src), str(tmp_path / "shards"), samples_per_shard=4, captions=str(captions))
    assert _shard_sentences(paths) == {"-0AKS4t-tLk": ["whisk eggs"], "b2": ["pour"]}
    out = capsys.readouterr().out
    assert f"notes.mp4: no captions with words for 'notes' in {captions}" in out
    assert "skipped 1 ({'CaptionError': 1})" in out


def test_a_malformed_corpus_caption_file_stops_the_build(tmp_path):
    src = tmp_path / "videos"
    _small_videos(src, ["a"])
    captions = tmp_path / "youcook.json"
    captions.write_text(json.dumps({"database": {"a": {"annotations": [{"segment": [0, 1]}]}}}))
    with pytest.raises(CaptionError, match=r"youcook.json \[a\]: annotation 0"):
        build_shards(str(src), str(tmp_path / "shards"), captions=str(captions))
