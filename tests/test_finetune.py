"""Fine-tuning tasks (sentiment, captioning): end to end through the CLI from a tiny pretrained checkpoint,
their metrics against hand computations, and the errors for bad input."""
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from videobert.cli import lightning_main
from videobert.finetune import load_encoder
from videobert.tasks.captioning import CaptioningData
from videobert.tasks.figures import GAP, HEADER, THUMB
from videobert.tasks.sentiment import SentimentData, SentimentMetrics
from videobert.text import TextTokenizer
from videobert.thumbnails import Clip
from videobert.vq import VisualVocab

from .conftest import tiny_data_args

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]


def _data(cache) -> list[str]:
    return [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(cache).items()]


def _examples_with_thumbnails(run_dir: Path, task: str) -> list[dict]:
    """The task's published example rows; checks that the PNG grid shows real frames in its first clip cell."""
    rows = json.loads(next(run_dir.glob(f"**/{task}_examples.json")).read_text())
    png = np.asarray(Image.open(next(run_dir.glob(f"**/{task}_examples.png"))))
    assert len(np.unique(png[HEADER + GAP:HEADER + GAP + THUMB, GAP:GAP + THUMB][..., 0])) > 10  # a frame, not grey
    assert rows and all(1 <= len(r["clips"]) <= 4 and {c["video"] for c in r["clips"]} == {r["video"]} for r in rows)
    return rows


def _finetune(cache, pretrained, run_dir, configs, extra=()):
    """fit 4 steps, then test the last checkpoint; returns the test metrics."""
    args = ["--config", str(ROOT / "experiments/quickstart.yaml"), *[a for c in configs for a in
            ("--config", str(ROOT / "experiments/finetune" / c))], *_data(cache), *QUIET,
            f"--trainer.default_root_dir={run_dir}", f"--model.init_args.pretrained={pretrained}",
            "--model.init_args.warmup_steps=1", "--model.init_args.lr=1e-3", "--data.init_args.batch_size=4", *extra]
    fit = lightning_main(["fit", *args, "--trainer.max_steps=4", "--trainer.val_check_interval=2",
                          "--trainer.limit_val_batches=1"])
    assert fit.trainer.global_step == 4 and torch.isfinite(fit.trainer.callback_metrics["train/loss"])
    ckpt = next(run_dir.glob("**/checkpoints/last.ckpt"))
    return fit, lightning_main(["test", *args, f"--ckpt_path={ckpt}"]).trainer.callback_metrics


def test_sentiment_fine_tunes_and_tests_both_variants(quickstart_cache, pretrained, tmp_path):
    truth = json.loads((quickstart_cache / "corpus/test/ground_truth.json").read_text())
    labels = [v["sentiment"] for v in truth["videos"].values()]
    train = [v["sentiment"] for v in json.loads((quickstart_cache / "corpus/train/labels.json").read_text()).values()]
    counts = [train.count("negative"), train.count("positive")]
    majority = ["negative", "positive"][int(np.argmax(counts))]  # the baseline's answer: the training videos'
    share = labels.count(majority) / len(labels)  # and is scored on the test videos
    for configs in (["sentiment.yaml"], ["sentiment.yaml", "sentiment_video_only.yaml"]):
        fit, res = _finetune(quickstart_cache, pretrained, tmp_path / configs[-1], configs)
        assert "val/sentiment/acc" in fit.trainer.callback_metrics
        stats = fit.trainer.callback_metrics  # the stream's counts, logged as in pretraining
        assert stats["data/videos"] >= 4 * 4 and stats["data/skipped_samples"] == 0  # 4 steps of 4 videos
        assert fit.datamodule.task_data.inputs == ("video" if len(configs) == 2 else "video_text")
        assert 0.0 <= res["test/sentiment/acc"] <= 1.0 and 0.0 <= res["test/sentiment/macro_f1"] <= 1.0
        assert res["test/sentiment/videos"] == len(labels)
        assert res["test/sentiment/majority_acc"] == pytest.approx(share)
        assert fit.datamodule.task_data.train_counts == counts
        rows = _examples_with_thumbnails(tmp_path / configs[-1], "sentiment")
        assert all(r["true"] in labels and r["predicted"] in ("negative", "positive") and 0.5 <= r["confidence"] <= 1
                   for r in rows)  # (a prediction may be a label that no test video has)
        assert len(rows) == len(labels)  # (4 test videos, up to 8 shown)


def test_captioning_fine_tunes_generates_and_scores(quickstart_cache, pretrained, tmp_path):
    _, res = _finetune(quickstart_cache, pretrained, tmp_path, ["captioning.yaml"])
    for key in ("bleu4", "meteor", "rouge_l", "cider"):
        assert np.isfinite(float(res[f"test/captioning/{key}"])), key
    rows = _examples_with_thumbnails(tmp_path, "captioning")
    narration = {c for p in (quickstart_cache / "corpus/test").glob("*.vtt") for c in p.read_text().splitlines()}
    assert rows and all(r["reference"] in narration and isinstance(r["generated"], str) for r in rows)
    # the exported captioner (Python API) writes, for the same sentences' clips, the captions the test wrote
    from videobert.api import VideoBertPipeline
    from videobert.cli import export_checkpoint

    export_checkpoint(str(next(tmp_path.glob("**/checkpoints/last.ckpt"))), str(tmp_path / "export"))
    vb = VideoBertPipeline.from_pretrained(tmp_path / "export")
    key = rows[0]["video"]
    mine = [r for r in rows if r["video"] == key]
    sample = next(s for t in sorted((quickstart_cache / "features/test").glob("*.tar"))
                  for s in wds.WebDataset(str(t), shardshuffle=False) if s["__key__"] == key)
    meta, feats = json.loads(sample["json"]), np.load(io.BytesIO(sample["features.npy"])).astype(np.float32)
    got = vb.caption(feats, spans=[tuple(r["span"]) for r in mine], clip_spans=meta["clips"])
    assert [g["caption"] for g in got] == [r["generated"] for r in mine]
    pretrained_only = VideoBertPipeline.from_pretrained(tmp_path / "export")
    (tmp_path / "export/captioner.json").unlink()
    with pytest.raises(FileNotFoundError, match="no captioning decoder.*captioning.yaml"):
        VideoBertPipeline.from_pretrained(tmp_path / "export").caption(feats)
    assert pretrained_only._captioner is None


def test_macro_f1_and_majority_baseline_by_hand():
    metrics = SentimentMetrics(["negative", "positive"], train_counts=[30, 10])  # training majority: negative
    label, pred = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 0, 1, 0])
    clips = [[Clip(f"v{i}", 0, 0.0, 1.5)] for i in range(5)]
    metrics.update(lambda batch: torch.nn.functional.one_hot(pred, 2).float(),
                   {"label": label, "keys": [f"v{i}" for i in range(5)], "clips": clips})
    out = metrics.compute()
    assert [(r["video"], r["true"], r["predicted"]) for r in metrics.examples()][:2] == [
        ("v0", "negative", "negative"), ("v1", "negative", "positive")]
    assert metrics.examples()[1]["confidence"] == pytest.approx(np.e / (1 + np.e))  # softmax of a one-hot row
    # class 0: tp 2, fp 1, fn 1 -> F1 2/3; class 1: tp 1, fp 1, fn 1 -> F1 1/2
    assert out["acc"] == pytest.approx(3 / 5) and out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["macro_f1_ci_low"] < out["macro_f1"] < out["macro_f1_ci_high"]  # (a bootstrap over the 5 videos)
    # always "negative": class 0 precision 3/5, recall 1 -> F1 3/4; class 1 F1 0
    assert out["majority_acc"] == pytest.approx(3 / 5) and out["majority_macro_f1"] == pytest.approx(3 / 8)
    # the baseline is training's majority, not the test labels': "positive" in training scores 2 of 5 here
    other = SentimentMetrics(["negative", "positive"], train_counts=[10, 30])
    other.update(lambda batch: torch.nn.functional.one_hot(pred, 2).float(), {"label": label})
    res = other.compute()
    assert res["majority_acc"] == pytest.approx(2 / 5) and res["majority_macro_f1"] == pytest.approx(0.8 / 1.4 / 2)
    assert "majority_acc" not in SentimentMetrics(["negative", "positive"]).compute()  # (no training counts)


def _test_video(cache) -> dict:
    """The first held-out video of the tiny corpus, decoded as the DataModule does."""
    from videobert.samples import decode_video

    shard = sorted((cache / "features/test").glob("*.tar"))[0]
    return decode_video(next(iter(wds.WebDataset(str(shard), shardshuffle=False))))


def test_labels_reach_the_shards_and_missing_ones_are_clear_errors(quickstart_cache):
    tok, vocab = TextTokenizer(quickstart_cache / "tokenizer/vocab.txt"), VisualVocab.load(quickstart_cache / "visual_vocab-2x6.npz")
    video = _test_video(quickstart_cache)
    truth = json.loads((quickstart_cache / "corpus/test/ground_truth.json").read_text())
    assert video["json"]["sentiment"] == truth["videos"][video["json"]["video_id"]]["sentiment"]
    assert SentimentData(tok, vocab).example(video)["label"] == ["negative", "positive"].index(video["json"]["sentiment"])
    no_label = {**video, "json": {k: v for k, v in video["json"].items() if k != "sentiment"}}
    with pytest.raises(KeyError, match=f"{video['__key__']}: no 'sentiment' label"):
        SentimentData(tok, vocab).example(no_label)
    with pytest.raises(ValueError, match="expected one of \\['bad', 'good'\\]"):
        SentimentData(tok, vocab, classes=("bad", "good")).example(video)
    no_captions = {**video, "json": {k: v for k, v in video["json"].items() if k != "sentences"}}
    with pytest.raises(KeyError, match="no 'sentences'.*reference captions"):
        list(CaptioningData(tok, vocab)([no_captions]))


def test_wrong_checkpoint_or_task_settings_are_clear_errors(quickstart_cache, pretrained, tmp_path):
    from data_modules import QuickstartDataModule

    def data(sizes=(300, 36), feature_dim=0, longest=51):
        return SimpleNamespace(vocab_sizes=lambda: sizes, feature_dim=lambda: feature_dim,
                               max_sequence_length=lambda: longest)

    ckpt = torch.load(pretrained, weights_only=True)
    sizes = (ckpt["videobert_config"]["text_vocab_size"], ckpt["videobert_config"]["visual_vocab_size"])
    assert load_encoder(str(pretrained), data(sizes)).cfg.hidden_size == 32
    with pytest.raises(ValueError, match="another tokenizer or visual vocabulary"):
        load_encoder(str(pretrained), data((sizes[0] + 1, sizes[1])))
    with pytest.raises(ValueError, match="set data.video_input"):
        load_encoder(str(pretrained), data(sizes, feature_dim=165))
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder(str(pretrained), data(sizes, longest=999))
    torch.save({"state_dict": ckpt["state_dict"]}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a pretrained VideoBERT checkpoint"):
        load_encoder(str(tmp_path / "other.ckpt"), data(sizes))
    with pytest.raises(ValueError, match="expected a fine-tuning task"):
        QuickstartDataModule(**tiny_data_args(quickstart_cache), task="zero_shot")
    with pytest.raises(ValueError, match="set data.task='sentiment'"):
        QuickstartDataModule(**tiny_data_args(quickstart_cache), test_task="sentiment")
    with pytest.raises(ValueError, match="built with other settings .*burnt_prob"):
        QuickstartDataModule(**tiny_data_args(quickstart_cache), burnt_prob=0.9).prepare_data()


def test_results_table_has_fine_tuning_rows_next_to_the_paper():
    from videobert.report import table

    lines = table({"quickstart": {"sentiment": {"acc": 0.9, "majority_acc": 0.55},
                                  "captioning": {"bleu4": 0.12, "cider": 1.234}}})
    assert "| sentiment accuracy, fine-tuned (baseline: majority label) | 90.0% | 55.0% | - |" in lines
    assert "| captioning BLEU-4, fine-tuned (pycocoevalcap) | 12.00 | - | 4.33 |" in lines  # (x 100, as the paper)
    assert "| captioning CIDEr-D | 1.23 | - | 0.55 |" in lines


def test_adamw_groups_and_warmup_then_linear_decay():
    from videobert.training import adamw_warmup_decay

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    net[1].weight.requires_grad_(False)  # (a frozen tensor is left out)
    conf = adamw_warmup_decay(net.named_parameters(), lr=1.0, weight_decay=0.1, warmup_steps=2, total_steps=10)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 2] and opt.param_groups[1]["weight_decay"] == 0.0
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])  # (10 - step) / 8
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        adamw_warmup_decay(net.named_parameters(), 1.0, 0.1, 2, float("inf"))
