"""Feature provenance: a run refuses shard sets of two provenances, or a vocabulary fit on other features, with
one line naming both, unless data.allow_mixed_provenance; an output folder keeps one provenance."""
import json

import pytest

from data_modules import VideoBertDataModule
from videobert.cli_errors import UsageError
from videobert.features import extract_features
from videobert.provenance import fingerprint
from videobert.testing import make_feature_shards, make_text_and_vocab


def _stamp(folder, fps):
    """Give a synthetic shard set the provenance record `videobert data features` writes (index.json)."""
    index = json.loads((folder / "index.json").read_text())
    index["provenance"] = {"extractor": {"name": "builtin", "spec": "builtin", "settings": {"version": 2},
                                         "dim": 16, "weights_sha256": "ab" * 32},
                           "pyav": "18.1.0", "ffmpeg": {}, "fps": fps, "clip_frames": 30, "frame_size": 32,
                           "crop": "centre", "dtype": "float16", "videobert": "0.1.0"}
    (folder / "index.json").write_text(json.dumps(index))
    return index["provenance"]


@pytest.fixture
def sets(tmp_path):
    make_feature_shards(tmp_path / "a", [4], prefix="a")
    make_feature_shards(tmp_path / "b", [4], prefix="b", seed=1)
    a, b = _stamp(tmp_path / "a", 20.0), _stamp(tmp_path / "b", 10.0)
    assert fingerprint(a) != fingerprint(b)
    vocab_txt, npz = make_text_and_vocab(tmp_path, tmp_path / "a", k=4)  # fit on set a: recorded in its sidecar
    assert json.loads((tmp_path / "visual_vocab.json").read_text())["features_provenance"] == a
    return tmp_path, vocab_txt, npz


def _dm(root, train, val, vocab_txt, npz, **kw):
    return VideoBertDataModule(train_shards=str(root / train), val_shards=str(root / val), tokenizer=vocab_txt,
                               visual_vocab=npz, batch_size=2, num_workers=0, batches_per_epoch=1, **kw)


def test_shard_sets_of_two_provenances_are_refused_unless_allowed(sets):
    root, vocab_txt, npz = sets
    with pytest.raises(UsageError) as err:
        _dm(root, "a", "b", vocab_txt, npz).setup("fit")
    message = str(err.value)
    assert f"train shards {root / 'a'}: extractor builtin" in message and "at 20.0 fps" in message
    assert f"val shards {root / 'b'}: extractor builtin" in message and "at 10.0 fps" in message
    assert "data.allow_mixed_provenance=true" in message and "\n" not in message
    _dm(root, "a", "b", vocab_txt, npz, allow_mixed_provenance=True).setup("fit")  # the override
    _dm(root, "a", "a", vocab_txt, npz).setup("fit")  # one provenance: fine


def test_a_vocabulary_fit_on_other_features_is_refused_unless_allowed(sets):
    root, vocab_txt, npz = sets
    with pytest.raises(UsageError, match=r"data.visual_vocab .* was fit on features of extractor builtin .* at "
                                         r"20.0 fps.*; but train shards .*b: .* at 10.0 fps"):
        _dm(root, "b", "b", vocab_txt, npz).setup("fit")
    _dm(root, "b", "b", vocab_txt, npz, allow_mixed_provenance=True).setup("fit")


def test_extraction_into_a_folder_of_other_provenance_is_refused(tmp_path):
    from videobert.corpus import make_corpus
    from videobert.shards import build_shards

    make_corpus(str(tmp_path / "videos"), num_videos=2, seed=3, workers=1)
    build_shards(str(tmp_path / "videos"), str(tmp_path / "shards"), samples_per_shard=1)
    extract_features(str(tmp_path / "shards"), str(tmp_path / "feats"), workers=1, trainer=None)
    (tmp_path / "feats/shard-000001.tar").unlink()  # (one shard left to do: a resumed job)
    with pytest.raises(UsageError, match=r"--out .*feats: holds features of extractor builtin .* at 20.0 fps.*; "
                                         r"this run extracts extractor builtin .* at 10.0 fps"):
        extract_features(str(tmp_path / "shards"), str(tmp_path / "feats"), fps=10.0, workers=1, trainer=None)
