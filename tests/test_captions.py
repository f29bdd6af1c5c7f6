import json

import pytest

from videobert.captions import (
    CaptionError,
    normalise_cues,
    read_caption_index,
    read_captions,
    sentences_from_meta,
)


def test_webvtt_markup_and_order(tmp_path):
    p = tmp_path / "a.vtt"
    p.write_text("WEBVTT\nKind: captions\n\nNOTE a comment\n\n"
                 "00:00:05.000 --> 00:00:07.500 align:start\n<c>second</c> <00:00:06.000>cue\n\n"
                 "00:01.000 --> 00:03.000\n<v Speaker>first cue\nwith two lines\n\n"
                 "00:00:08.000 --> 00:00:09.000\n   \n", encoding="utf-8")
    cues = read_captions(p)
    assert cues == [{"start": 1.0, "end": 3.0, "text": "first cue with two lines"},
                    {"start": 5.0, "end": 7.5, "text": "second cue"}]


def test_srt(tmp_path):
    p = tmp_path / "b.srt"
    p.write_text("1\n00:00:01,500 --> 00:00:02,000\nhello there\n\n2\n01:00:00,000 --> 01:00:01,250\nbye\n")
    assert read_captions(p) == [{"start": 1.5, "end": 2.0, "text": "hello there"},
                                {"start": 3600.0, "end": 3601.25, "text": "bye"}]


@pytest.mark.parametrize("content, reason", [
    (b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\n", "no cue with words"),
    (b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\ncaf\xe9 \xff\n", "not UTF-8"),
    (b"00:00:01.000 --> 00:00:02.000\nhi\n", "not a WebVTT file"),
    (b"WEBVTT\n\nsoon --> later\nhi\n", "bad timestamp"),
])
def test_bad_captions_name_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.vtt"
    p.write_bytes(content)
    with pytest.raises(CaptionError, match=reason) as err:
        read_captions(p)
    assert str(p) in str(err.value)


# --- json formats and normalisation ---------------------------------------------------------------

# (start, end, text) as a caption file might hold them: out of order, ASR-style overlaps, a rolling
# repeat, an empty cue, a zero-length cue, and a cue starting with the next one.
RAW = [(4.0, 6.5, "then   stir"), (0.0, 2.5, "add the\nflour"), (2.0, 4.0, "add the flour"),
       (6.0, 7.0, "   "), (6.0, 8.0, "serve"), (9.0, 9.0, "no time"), (10.0, 11.0, "drowned"),
       (10.0, 12.0, "plate")]
NORMALISED = [{"start": 0.0, "end": 4.0, "text": "add the flour"}, {"start": 4.0, "end": 6.0, "text": "then stir"},
              {"start": 6.0, "end": 8.0, "text": "serve"}, {"start": 10.0, "end": 12.0, "text": "plate"}]


def _stamp(t: float, sep: str) -> str:
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}".replace(".", sep)


def _howto(cues) -> dict:
    return {"start": [s for s, _, _ in cues], "end": [e for _, e, _ in cues], "text": [t for _, _, t in cues]}


def _youcook(cues) -> dict:
    return {"duration": 30.0, "subset": "training", "recipe_type": "113",
            "annotations": [{"segment": [s, e], "id": i, "sentence": t} for i, (s, e, t) in enumerate(cues)]}


WRITERS = {
    "a.vtt": lambda cues: "WEBVTT\n\n" + "".join(f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n{t}\n\n" for s, e, t in cues),
    "a.srt": lambda cues: "".join(f"{i + 1}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n{t}\n\n"
                                  for i, (s, e, t) in enumerate(cues)),
    "howto.json": lambda cues: json.dumps(_howto(cues)),
    "youcook.json": lambda cues: json.dumps(_youcook(cues)),
}


@pytest.mark.parametrize("name", WRITERS)
def test_every_format_is_normalised_the_same_way(tmp_path, name):
    p = tmp_path / name
    p.write_text(WRITERS[name](RAW))
    assert read_captions(p) == NORMALISED
    assert read_captions(p, video_id="ignored for one video's file") == NORMALISED


@pytest.mark.parametrize("cues, expected", [
    ([(3, 5, "b"), (0, 2, "a")], [(0, 2, "a"), (3, 5, "b")]),  # sorted by start
    ([(0, 3, "a"), (1, 4, "b")], [(0, 1, "a"), (1, 4, "b")]),  # a rolling overlap is clipped
    ([(0, 2, "a"), (0, 3, "b")], [(0, 3, "b")]),  # clipped to nothing: dropped
    ([(0, 2, "a"), (2.5, 3, "a"), (3, 4, "b")], [(0, 3, "a"), (3, 4, "b")]),  # a repeat is merged
    ([(0, 2, "a"), (9, 10, "a")], [(0, 2, "a"), (9, 10, "a")]),  # ... unless it comes much later
    ([(0, 1, " a\t b \n"), (1, 2, "\n")], [(0, 1, "a b")]),  # whitespace collapsed, no words dropped
    ([(2, 1, "backwards"), (3, 3, "empty")], []),
])
def test_normalise_rules(cues, expected):
    given = [{"start": float(s), "end": float(e), "text": t} for s, e, t in cues]
    before = [dict(c) for c in given]
    assert normalise_cues(given) == [{"start": float(s), "end": float(e), "text": t} for s, e, t in expected]
    assert given == before  # the input is left alone


def test_corpus_wide_files_are_read_once_into_an_index(tmp_path):
    howto = tmp_path / "caption.json"
    howto.write_text(json.dumps({"vidA": _howto(RAW), "vid-B": _howto([(1, 2, "hello")]), "quiet": _howto([(0, 1, " ")])}))
    youcook = tmp_path / "youcookii_annotations_trainval.json"
    youcook.write_text(json.dumps({"database": {"vidA": _youcook(RAW), "vid-B": _youcook([(1, 2, "hello")])}}))
    for path in (howto, youcook):
        index = read_caption_index(path)
        assert index == {"vidA": NORMALISED, "vid-B": [{"start": 1.0, "end": 2.0, "text": "hello"}]}  # no "quiet"
        assert read_captions(path, video_id="vidA") == NORMALISED


@pytest.mark.parametrize("name, content, video_id, reason", [
    ("caption.json", {"v1": {"start": [0], "end": [1], "text": ["hi"]}}, None, "captions for 1 videos; pass video_id"),
    ("caption.json", {"v1": {"start": [0], "end": [1], "text": ["hi"]}}, "v2", "no captions for video 'v2'"),
    ("caption.json", {"v1": {"start": [0], "end": [1], "text": ["hi"]}, "v2": {"start": [0], "end": [1], "text": [" "]}},
     "v2", r"\[v2\]: no cue with words"),
    ("v.json", {"start": [0, 1], "end": [1, 2], "text": ["", "  "]}, None, "no cue with words"),
    ("v.json", [{"start": 0, "end": 1, "text": "hi"}], None, "expected 'start', 'end', 'text' lists"),
    ("v.json", {}, None, "expected 'start', 'end', 'text' lists"),
    ("v.json", {"start": [0, 1], "end": [1], "text": ["a", "b"]}, None, "of equal length"),
    ("v.json", {"start": [0], "end": [1], "text": [7]}, None, "caption text 7 is not a string"),
    ("v.json", {"start": [0], "end": [None], "text": ["a"]}, None, "bad time None"),
    ("v.json", {"start": ["soon"], "end": [1], "text": ["a"]}, None, "bad timestamp 'soon'"),
    ("v.json", {"annotations": [{"segment": [0, 1], "sentence": "a"}, {"segment": [1, 2]}]}, None, "annotation 1 is not"),
    ("v.json", {"annotations": {"segment": [0, 1]}}, None, "'annotations' is not a list"),
    ("yc.json", {"database": {"abc": {"annotations": [{"segment": [0], "sentence": "a"}]}}}, "abc",
     r"\[abc\]: annotation 0"),
    ("v.txt", {}, None, "unsupported caption format"),
])
def test_bad_json_captions_name_the_file_and_video(tmp_path, name, content, video_id, reason):
    p = tmp_path / name
    p.write_text(json.dumps(content))
    with pytest.raises(CaptionError, match=reason) as err:
        read_captions(p, video_id=video_id)
    assert str(p) in str(err.value)


def test_caption_index_rejects_what_is_not_a_corpus_file(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(_howto([(0, 1, "hi")])))
    broken = tmp_path / "broken.json"
    broken.write_text('{"v1": {"start": [0], ')
    with pytest.raises(CaptionError, match=f"{one}: not a corpus-wide caption file"):
        read_caption_index(one)
    with pytest.raises(CaptionError, match=f"{broken}: not valid JSON"):
        read_caption_index(broken)


# --- shards written by other tools ----------------------------------------------------------------

V2D_SUBTITLES = [{"start": "00:00:09.000", "end": "00:00:11.500", "lines": ["crack the", "eggs"]},
                 {"start": "00:00:11.000", "end": "00:00:13.000", "lines": ["whisk"]},
                 {"start": "00:00:20.000", "end": "00:00:21.000", "lines": ["fry"]}]
WHOLE_VIDEO = [{"start": 9.0, "end": 11.0, "text": "crack the eggs"}, {"start": 11.0, "end": 13.0, "text": "whisk"},
               {"start": 20.0, "end": 21.0, "text": "fry"}]


@pytest.mark.parametrize("meta, txt, expected", [
    ({"sentences": [{"start": 0, "end": 1, "text": "ours"}], "caption": "title"}, "title",
     [{"start": 0.0, "end": 1.0, "text": "ours"}]),
    ({"yt_meta_dict": {"info": {}, "subtitles": V2D_SUBTITLES}}, "title", WHOLE_VIDEO),
    ({"yt_meta_dict": {"subtitles": {"en": V2D_SUBTITLES, "de": []}}}, None, WHOLE_VIDEO),
    ({"subtitles": V2D_SUBTITLES}, None, WHOLE_VIDEO),
    # a clip cut from 10 s to 14 s of the source: its subtitles are shifted into the clip and cut to it
    ({"clips": [["00:00:10.000", "00:00:14.000"]], "yt_meta_dict": {},
      "clip_subtitles": [dict(s, lines={"en": s["lines"]}) for s in V2D_SUBTITLES[:2]]}, None,
     [{"start": 0.0, "end": 1.0, "text": "crack the eggs"}, {"start": 1.0, "end": 3.0, "text": "whisk"}]),
    ({"start": [0, 2], "end": [2, 3], "text": ["a", "b"]}, None,
     [{"start": 0.0, "end": 2.0, "text": "a"}, {"start": 2.0, "end": 3.0, "text": "b"}]),
    ({"start": "0:01", "end": "0:09", "caption": " a  title "}, None, [{"start": 0.0, "end": 7.5, "text": "a title"}]),
    ({"sentences": [], "subtitles": []}, "the\ntranscript", [{"start": 0.0, "end": 7.5, "text": "the transcript"}]),
])
def test_sentences_from_meta(meta, txt, expected):
    assert sentences_from_meta(meta, txt, duration=7.5, name="s.tar:k") == expected


def test_sentences_from_meta_whole_caption_takes_the_duration_from_meta():
    assert sentences_from_meta({"duration": 3.0}, "hi", None, "k") == [{"start": 0.0, "end": 3.0, "text": "hi"}]


@pytest.mark.parametrize("meta, txt, duration, reason", [
    ({"caption": "  "}, "", 5.0, "no caption text"),
    ({}, "hello", None, "needs the video's duration"),
    ({"subtitles": [{"start": "00:00:01.000", "end": "00:00:02.000"}]}, None, 5.0, "is not {'start', 'end', 'lines'}"),
    ({"subtitles": [{"start": "00:00:01.000", "end": "00:00:02.000", "lines": [1]}]}, None, 5.0, "are not text"),
    ({"sentences": ["just text"]}, None, 5.0, "'sentences' is not a list of"),
    (["not", "an", "object"], "hello", 5.0, "metadata is list, not a json object"),
])
def test_sentences_from_meta_errors_name_the_sample(meta, txt, duration, reason):
    with pytest.raises(CaptionError, match=reason) as err:
        sentences_from_meta(meta, txt, duration, name="shard-000001.tar:abc")
    assert str(err.value).startswith("shard-000001.tar:abc: ")
