import pytest

from videobert.captions import CaptionError, read_captions


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
