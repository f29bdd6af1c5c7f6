"""`videobert index` / `videobert search`: a collection of videos, searched by text; incremental re-indexing."""
import json
import os
import shutil

import numpy as np
import pytest

from videobert.search import _token_scores, build_index, search, search_main

from .test_api import exported  # noqa: F401  (the exported tiny model fixture)


def test_token_scores_by_hand():
    ids = np.array([[5, 7, 9], [7, 2, 3]])
    lp = np.array([[-0.1, -1.0, -2.0], [-0.5, -1.5, -3.0]])
    assert _token_scores(ids, lp, [7]).tolist() == [-1.0, -0.5]
    assert _token_scores(ids, lp, [7, 5]).tolist() == [-0.1, -0.5]  # (the best word of the query)
    assert _token_scores(ids, lp, [4]).tolist() == [-2.0, -3.0]  # (not kept: the kept list's floor)


def test_index_search_and_incremental_update(exported, quickstart_cache, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "videos"
    folder.mkdir()
    tests = sorted((quickstart_cache / "corpus/test").glob("*.mp4"))
    for mp4 in tests[:2]:
        shutil.copy(mp4, folder / mp4.name)
    (folder / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 200)
    build_index(str(folder), str(exported), str(tmp_path / "index"), window=2)
    assert "2 videos (2 embedded now, 0 kept)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "index/index.json").read_text())
    hits = search(str(tmp_path / "index"), "now let me show you how to cut the egg", top=5)
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {h["video"] for h in hits} <= {p.stem for p in tests[:2]} and all(h["end"] > h["start"] for h in hits)
    shutil.copy(tests[2], folder / tests[2].name)  # one more video: only it is embedded
    os.remove(folder / tests[0].name)  # one gone: dropped
    build_index(str(folder), str(exported), str(tmp_path / "index"), window=2)
    out = capsys.readouterr().out
    assert "2 videos (1 embedded now, 1 kept)" in out and "skip broken.mkv" in out
    again = json.loads((tmp_path / "index/index.json").read_text())
    assert sorted(again["videos"]) == sorted([tests[1].name, tests[2].name])
    assert again["videos"][tests[1].name]["mtime"] == meta["videos"][tests[1].name]["mtime"]
    search_main(["--index", str(tmp_path / "index"), "stir the tomato", "--json", "--top", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 3 and {"video", "start", "end", "score", "source"} <= set(printed[0])
    with pytest.raises(ValueError, match="use another --out"):
        build_index(str(folder), str(exported), str(tmp_path / "index"), window=3)
