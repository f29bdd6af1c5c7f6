"""Clip thumbnails for example tables and the visual-words figure, and whole-test-set tasks under DDP."""
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from videobert.tasks.figures import GAP, HEADER, TEXT_WIDTH, THUMB, publish_examples
from videobert.thumbnails import Clip, ThumbnailSource
from videobert.video import iter_clips
from videobert.visual_words import nearest_per_word, read_feature_shards, visual_words_figure

from .test_ddp import clean_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 built-in corpus videos: raw shards (one video each), feature shards, tokenizer, visual vocabulary."""
    from videobert.captions import read_captions
    from videobert.corpus import make_corpus
    from videobert.features import extract_features
    from videobert.shards import build_shards
    from videobert.text import train_wordpiece
    from videobert.vq import build_vocab

    root = tmp_path_factory.mktemp("thumbs")
    make_corpus(str(root / "videos"), num_videos=4, seed=5, size=48, idle_prob=0.2, workers=1)
    build_shards(str(root / "videos"), str(root / "raw"), samples_per_shard=1)
    extract_features(str(root / "raw"), str(root / "features"), workers=0, trainer=None)
    truth = json.loads((root / "videos/ground_truth.json").read_text())
    (root / "ground_truth.json").write_text(json.dumps(truth))
    texts = [c["text"] for p in sorted((root / "videos").glob("*.vtt")) for c in read_captions(p)]
    train_wordpiece(texts + truth["verbs"] + truth["nouns"], root / "tokenizer", 300)
    build_vocab(str(root / "features"), str(root / "visual_vocab.npz"), levels=1, k=6)
    return root


def _video(root: Path, n: int = 1) -> tuple[str, bytes]:
    tar = sorted((root / "raw").glob("*.tar"))[n]
    with tarfile.open(tar) as f:
        member = next(m for m in f.getmembers() if m.name.endswith(".mp4"))
        return member.name.split(".")[0], f.extractfile(member).read()


def _features(root: Path) -> list[Path]:
    return sorted((root / "features").glob("*.tar"))


def test_thumbnail_is_the_middle_frame_the_extractor_saw(tiny):
    key, data = _video(tiny)
    clips = list(iter_clips(data, size=32))  # what feature extraction decodes: 30 frames at 20 fps per clip
    source = ThumbnailSource(tiny / "raw", size=32)
    wanted = [0, 3, len(clips) - 1]
    got = source([Clip(key, i, clips[i][0], clips[i][1]) for i in wanted])
    for i, frame in zip(wanted, got):
        assert np.array_equal(frame, clips[i][2][15])  # frame 15 of 30: the clip's middle time
    assert not np.array_equal(got[1], clips[3][2][14])  # (a neighbouring frame differs: the check can fail)
    meta = next(m for k, _, m in read_feature_shards(_features(tiny)) if k == key)
    assert meta["clips"][3] == pytest.approx(list(clips[3][:2]))  # the feature shard's spans are those clips


def test_missing_source_or_video_means_no_image_and_one_warning(tiny, tmp_path, caplog):
    key, _ = _video(tiny)
    with caplog.at_level(logging.WARNING):
        assert ThumbnailSource(tmp_path / "nowhere")([Clip(key, 0, 0.0, 1.5)]) == [None]
        source = ThumbnailSource(tiny / "raw")
        assert source([Clip("no_such_video", 0, 0.0, 1.5), Clip("no_such_video", 1, 1.5, 3.0)]) == [None, None]
        (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
        assert ThumbnailSource(tmp_path)([Clip(key, 0, 0.0, 1.5)]) == [None]
    assert sum("no_such_video" in r.message for r in caplog.records) == 1  # logged once, not per clip


def test_example_grid_png_has_a_band_per_row_with_the_thumbnails(tiny, tmp_path):
    key, data = _video(tiny)
    spans = [(s, e) for s, e, _ in iter_clips(data, size=32)]
    clips = [Clip(key, i, *spans[i]) for i in range(3)]
    rows = [{"clip": clips[0], "truth": "stir the egg", "predicted": "stir the egg"},
            {"clip": clips[1], "truth": "roll the dough", "predicted": "cut the fish"},
            {"clip": clips[2], "truth": "a long " * 30, "predicted": 0.25}]
    dm = SimpleNamespace(thumbnail_source=lambda: ThumbnailSource(tiny / "raw", size=32))
    trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"), loggers=[], datamodule=dm)
    publish_examples(trainer, "zero_shot", rows)
    png = Image.open(tmp_path / "run/zero_shot_examples.png")
    assert png.size == (GAP + (THUMB + 2 * GAP) + 2 * TEXT_WIDTH, HEADER + 3 * (THUMB + 2 * GAP))
    frame = np.asarray(ThumbnailSource(tiny / "raw", size=32)([clips[1]])[0])
    cell = np.asarray(png)[HEADER + (THUMB + 2 * GAP) + GAP:][:THUMB, GAP:GAP + THUMB].astype(int)
    assert np.abs(cell - np.asarray(Image.fromarray(frame).resize((THUMB, THUMB)))).max() == 0  # row 2: clip 1
    saved = json.loads((tmp_path / "run/zero_shot_examples.json").read_text())
    assert saved[1]["clip"] == {"video": key, "clip": 1, "start": spans[1][0], "end": spans[1][1]}

    trainer.datamodule = SimpleNamespace(thumbnail_source=lambda: None)  # no source: the same grid, grey cells
    publish_examples(trainer, "zero_shot", rows)
    grey = np.asarray(Image.open(tmp_path / "run/zero_shot_examples.png"))
    assert grey.shape[:2] == png.size[::-1] and tuple(grey[HEADER + GAP + 5, GAP + 2]) == (200, 200, 200)


def test_visual_words_figure_shows_the_clips_nearest_each_centroid(tiny, tmp_path):
    videos = read_feature_shards(_features(tiny))
    assert len(videos) == 4
    feats = np.concatenate([f for _, f, _ in videos])
    _, first, count = np.unique(feats, axis=0, return_index=True, return_counts=True)
    rows = sorted(first[count == 1])[:3]  # three clips unlike any other as centroids: each is its own nearest
    centroids = feats[rows]
    picked = nearest_per_word(videos, centroids, words=3, per_word=4)
    firsts = {w: clips[0] for w, _, clips in picked}
    order = [(k, i) for k, f, _ in videos for i in range(len(f))]
    for w, row in enumerate(rows):
        assert (firsts[w].video, firsts[w].index) == order[row]
    assert sum(n for _, n, _ in picked) == len(feats)  # every clip is assigned to one of the three words
    assert nearest_per_word(videos, centroids, 3, 4, chunk_floats=5 * len(centroids)) == picked  # 5 clips a chunk
    source = ThumbnailSource(tiny / "raw", size=32)
    img = visual_words_figure(_features(tiny), centroids, source, words=3, per_word=4)
    assert img.size == (GAP + TEXT_WIDTH + 4 * (THUMB + GAP) + GAP, HEADER + 3 * (THUMB + 2 * GAP))
    # row 1, first clip cell: the clip nearest the most used word, as in the example grids
    cell = np.asarray(img)[HEADER + GAP:HEADER + GAP + THUMB, GAP + TEXT_WIDTH:GAP + TEXT_WIDTH + THUMB]
    frame = Image.fromarray(source([picked[0][2][0]])[0]).resize((THUMB, THUMB))
    assert np.abs(cell.astype(int) - np.asarray(frame)).max() == 0


def test_whole_set_tasks_on_two_ranks_equal_one_process(tiny, tmp_path):
    """retrieval, summarization and text_to_video gather across ranks: 2 gloo processes give the 1-process metrics."""
    sys.path.insert(0, str(ROOT))
    from tests.ddp_tasks import TASKS, main

    one = main(str(tiny), str(tmp_path / "one"), "1")
    proc = subprocess.run([sys.executable, "tests/ddp_tasks.py", str(tiny), str(tmp_path / "two"), "2"],
                          env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    two = json.loads((tmp_path / "two/metrics.json").read_text())
    for task in TASKS:
        assert set(two[task]) == set(one[task]), task
        for name, value in one[task].items():
            assert two[task][name] == pytest.approx(value, abs=1e-6), (task, name)
        assert (tmp_path / f"two/{task}/{task}_examples.png").exists()  # rank 0 published the examples
    assert one["retrieval"]["pool"] > 4  # (enough steps that a per-rank share would change the ranks)


def test_visual_words_from_the_datamodule_at_the_end_of_a_run(tiny, tmp_path):
    from data_modules import VideoBertDataModule
    from videobert.visual_words import publish_visual_words

    args = dict(test_shards=str(tiny / "features"), tokenizer=str(tiny / "tokenizer/vocab.txt"),
                visual_vocab=str(tiny / "visual_vocab.npz"))
    dm = VideoBertDataModule(**args, thumbnails=str(tiny / "raw"))
    dm.setup("test")
    trainer = SimpleNamespace(datamodule=dm, is_global_zero=True, default_root_dir=str(tmp_path), loggers=[])
    img = Image.open(publish_visual_words(trainer, words=4, per_word=3))
    assert img.size == (GAP + TEXT_WIDTH + 3 * (THUMB + GAP) + GAP, HEADER + 4 * (THUMB + 2 * GAP))
    assert len(np.unique(np.asarray(img)[HEADER + GAP:HEADER + GAP + THUMB, GAP + TEXT_WIDTH:][..., 0])) > 10  # frames
    bare = VideoBertDataModule(**args)  # no thumbnail source: no figure, no crash
    bare.setup("test")
    trainer.datamodule, trainer.default_root_dir = bare, str(tmp_path / "bare")
    assert publish_visual_words(trainer) is None and not (tmp_path / "bare").exists()


def test_visual_words_read_the_test_split_as_the_stream_resolves_it(tiny, tmp_path, caplog):
    from data_modules import VideoBertDataModule
    from videobert.visual_words import local_test_shards, publish_visual_words

    tars = _features(tiny)
    first, last = (t.stem.rsplit("-", 1)[1] for t in (tars[0], tars[1]))
    brace = str(tars[0].parent / f"{tars[0].stem.rsplit('-', 1)[0]}-{{{first}..{last}}}.tar")

    def dm(test_shards):
        return VideoBertDataModule(test_shards=test_shards, tokenizer=str(tiny / "tokenizer/vocab.txt"),
                                   visual_vocab=str(tiny / "visual_vocab.npz"), thumbnails=str(tiny / "raw"))

    assert local_test_shards(dm(brace)) == tars[:2]
    assert local_test_shards(dm([{"urls": brace}, {"urls": str(tars[3])}])) == [*tars[:2], tars[3]]
    remote = dm(f"pipe:cat {tars[0]}")  # readable by the stream, but not a local file to index
    remote.setup("test")
    trainer = SimpleNamespace(datamodule=remote, is_global_zero=True, default_root_dir=str(tmp_path), loggers=[])
    with caplog.at_level(logging.WARNING):
        assert publish_visual_words(trainer) is None and not (tmp_path / "visual_words.png").exists()
    assert any("no local .tar shards" in r.message for r in caplog.records)
