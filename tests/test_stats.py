"""Confidence intervals and training-data baselines: against scipy and hand computations."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from videobert.stats import bootstrap_mean, wilson, with_intervals
from videobert.tasks.text_to_video import TextToVideoMetrics
from videobert.training import summary
from videobert.vq import VisualVocab


@pytest.mark.parametrize("k,n", [(2, 18), (0, 10), (10, 10), (154, 192), (1, 1), (500, 1000)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_by_hand_on_the_unseen_pairs_of_the_issue():
    lo, hi = wilson(2, 18)  # 11.1% of 18 steps: the interval spans ~3-33%
    assert (round(lo, 4), round(hi, 4)) == (0.0310, 0.3280)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson(0, 0)


def test_bootstrap_mean_of_constant_and_of_coin_flips():
    assert bootstrap_mean([0.4] * 30) == (pytest.approx(0.4), pytest.approx(0.4))
    x = np.r_[np.zeros(500), np.ones(500)]
    lo, hi = bootstrap_mean(x, draws=4000)
    se = 0.5 / np.sqrt(len(x))  # the normal approximation for 1,000 draws of a fair coin
    assert lo == pytest.approx(0.5 - 1.96 * se, abs=0.006) and hi == pytest.approx(0.5 + 1.96 * se, abs=0.006)
    assert bootstrap_mean(x, seed=3) == bootstrap_mean(x, seed=3)  # reproducible


def test_with_intervals_adds_every_rate_with_its_n_and_the_summary_shows_them():
    out = with_intervals({"verb_top1": 2 / 18, "steps": 18.0, "verb_top1_chance": 0.1, "recall": 0.5},
                         {"verb_top1": "steps", "recall": "missing_n", "absent": "steps"})
    assert (out["verb_top1_ci_low"], out["verb_top1_ci_high"]) == pytest.approx(wilson(2, 18))
    assert "recall_ci_low" not in out and "absent_ci_low" not in out  # (no n, no metric: no interval)
    text = summary(out)
    assert "verb_top1" in text and f"[{out['verb_top1_ci_low']:.4f}, {out['verb_top1_ci_high']:.4f}]" in text
    assert "_ci_low" not in text


def test_report_cells_carry_interval_and_n():
    from videobert.report import table

    zs = with_intervals({"verb_top1": 0.75, "verb_top1_majority": 0.2, "steps": 200.0},
                        {"verb_top1": "steps", "verb_top1_majority": "steps"})
    lines = table({"quickstart": {"zero_shot": zs}})
    (lo, hi), (blo, bhi) = ((100 * v for v in wilson(k, 200)) for k in (150, 40))
    assert (f"| zero-shot verb top-1, all steps (baseline: the training majority verb) | 75.0% [{lo:.1f}, {hi:.1f}] n=200 | "
            f"20.0% [{blo:.1f}, {bhi:.1f}] n=200 | - |") in lines


def test_report_measures_alignment_on_test_video_pairs(pretrained, quickstart_cache, tmp_path):
    from data_modules import QuickstartDataModule
    from tests.conftest import tiny_data_args
    from videobert.cli import lightning_main
    from videobert.report import alignment_on_test_videos, table
    from videobert.stats import Z95, wilson

    args = {k: v for k, v in tiny_data_args(quickstart_cache).items() if k != "val_batches"}  # (one whole pass)
    model = ["--model.hidden_size=32", "--model.num_layers=2", "--model.num_heads=2", "--model.intermediate_size=64"]
    data = [f"--data.init_args.{k}={v}" for k, v in args.items()]
    got = alignment_on_test_videos(lightning_main, "quickstart", pretrained, (*model, *data, f"--trainer.default_root_dir={tmp_path}"))
    n1, n0 = got["aligned_pairs"], got["misaligned_pairs"]
    assert n1 + n0 == got["pairs"] >= 4 and min(n1, n0) >= 1
    assert got["balanced_acc"] == pytest.approx((got["aligned_recall"] + got["misaligned_recall"]) / 2, abs=1e-6)
    k1, k0 = round(got["aligned_recall"] * n1), round(got["misaligned_recall"] * n0)
    p1, p0 = (k1 + 2) / (n1 + 4), (k0 + 2) / (n0 + 4)  # Agresti-Caffo, by hand
    half = Z95 / 2 * (p1 * (1 - p1) / (n1 + 4) + p0 * (1 - p0) / (n0 + 4)) ** 0.5
    assert got["balanced_acc_ci_low"] == pytest.approx(max(0, (p1 + p0) / 2 - half))
    assert got["balanced_acc_ci_high"] == pytest.approx(min(1, (p1 + p0) / 2 + half))
    assert got["balanced_acc_ci_high"] - got["balanced_acc_ci_low"] > 0.05  # (never zero width on a few pairs)
    assert (got["aligned_recall_ci_low"], got["aligned_recall_ci_high"]) == pytest.approx(wilson(k1, n1))
    lines = table({"quickstart": {"alignment": got}})
    row = next(line for line in lines if line.startswith("| alignment (does this text belong to these clips?)"))
    assert f"n={n1 + n0} | 50.0% | - |" in row
    assert any("recall of the misaligned pairs" in line and f"n={n0} |" in line for line in lines)
    dm = QuickstartDataModule(**args, val_split="test")
    assert dm._paths()["val"].endswith("features/test")
    with pytest.raises(ValueError, match="data.val_split=test while fitting"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="data.val_split='dev': expected one of"):
        QuickstartDataModule(**args, val_split="dev")


def test_text_to_video_baseline_is_the_most_frequent_training_word_not_the_test_mode():
    centroids = [np.eye(4, dtype=np.float32)]
    vocab = VisualVocab(centroids, 4, counts=np.array([1, 9, 3, 0]))  # word 1 is the most used in training
    metrics = TextToVideoMetrics(text_vocab_size=10, vocab=vocab)
    y = torch.tensor([2, 2, 2, 1])  # the test targets' mode is 2: an oracle baseline would score 3/4
    metrics.targets = [y]
    for m in metrics.acc.values():
        m.update(torch.nn.functional.one_hot(y, 4).float(), y)
    out = metrics.compute()
    assert out["most_frequent_top1"] == pytest.approx(1 / 4) and out["steps"] == 4 and out["top1"] == 1.0
    metrics.vocab = VisualVocab(centroids, 4)  # (a vocabulary file without counts: no baseline, not a guess)
    metrics.targets = [y]
    assert "most_frequent_top1" not in metrics.compute()


def test_vocabulary_file_keeps_its_training_counts(tmp_path):
    import io

    import webdataset as wds

    from videobert.vq import build_vocab

    rng = np.random.default_rng(0)
    (tmp_path / "feat").mkdir()
    with wds.TarWriter(str(tmp_path / "feat/f-000.tar")) as w:
        for i in range(3):
            w.write({"__key__": f"v{i}", "features.npy": rng.normal(size=(20, 4)).astype(np.float16),
                     "json": json.dumps({}).encode()})
    build_vocab(str(tmp_path / "feat"), str(tmp_path / "v.npz"), levels=1, k=3)
    vocab = VisualVocab.load(tmp_path / "v.npz")
    assert vocab.counts.sum() == 60 and len(vocab.counts) == 3
    x = np.concatenate([np.load(io.BytesIO(s["features.npy"])) for s in
                        wds.WebDataset(str(tmp_path / "feat/f-000.tar"), shardshuffle=False)]).astype(np.float32)
    assert np.array_equal(vocab.counts, np.bincount(vocab.words(x), minlength=3))


def test_report_results_reach_wandb(tmp_path, monkeypatch):
    import wandb

    from videobert.report import log_to_wandb

    seen = {}
    real_init = wandb.init

    def init(**kwargs):
        run = real_init(**kwargs)
        finish = run.finish
        run.finish = lambda: (seen.update(id=run.id, summary=dict(run.summary)), finish())  # (read it while open)
        return run

    monkeypatch.setattr(wandb, "init", init)
    (tmp_path / "results.md").write_text("| metric |\n")
    results = {"quickstart": {"zero_shot": {"verb_top1": 0.75, "steps": 200.0}}}
    run_id = log_to_wandb(results, tmp_path / "results.md", save_dir=str(tmp_path / "runs"))
    assert seen["id"] == run_id and seen["summary"]["quickstart/zero_shot/verb_top1"] == 0.75
    assert list((tmp_path / "runs/wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))  # (offline: no server)


def test_spread_over_runs_by_hand():
    from videobert.spread import run_args, spread_table, summarise

    runs = [{"experiment": "quickstart", "corpus_seed": c, "seed": s, "results": {"verb_top1": v, "noun_top1": 0.5}}
            for (c, s), v in zip([(0, 0), (0, 1), (1, 0)], [0.70, 0.80, 0.90])]
    got = summarise(runs)["quickstart"]
    assert got["verb_top1"] == pytest.approx({"mean": 0.8, "std": 0.1, "min": 0.7, "max": 0.9, "n": 3,
                                              "seed_range": 0.1, "build_range": 0.2})  # (seeds: c0; builds: s0)
    assert got["noun_top1"]["std"] == 0.0 and "verb_top1_unseen_pairs" not in got
    runs[0]["results"]["verb_top1_lookup"] = 0.85  # (the build's word lookup, beside the model, where a run has it)
    assert summarise(runs)["quickstart"]["verb_top1_lookup"]["mean"] == 0.85
    table = spread_table({"date": "2026-12-01", "seconds": 600, "runs": runs, "summary": summarise(runs)})
    assert "| quickstart | verb_top1 | 80.0% | 10.0 | 70.0 - 90.0% | 10.0 | 20.0 | 3 |" in table
    args = run_args("cbt_quickstart", 1, 2, "runs/spread")
    assert "--data.init_args.cache_dir=data/quickstart-c1" in args and "--seed_everything=2" in args
    assert "--trainer.default_root_dir=runs/spread/cbt_quickstart-c1-s2" in args
    assert "--data.init_args.cache_dir=data/quickstart" in run_args("quickstart", 0, 0, "r")  # (build 0: the demo's)


def test_spread_of_one_experiment_keeps_the_others_runs(tmp_path, monkeypatch):
    from itertools import count
    from pathlib import Path

    from videobert import spread as sp

    def fake_fit(subcommand, args):  # (a fit leaves its checkpoint where spread looks for it)
        root = next(a.split("=", 1)[1] for a in args if a.startswith("--trainer.default_root_dir="))
        (Path(root) / "run/checkpoints").mkdir(parents=True, exist_ok=True)
        (Path(root) / "run/checkpoints/last.ckpt").write_text("")

    seed_of = lambda args: int(next(a.split("=")[1] for a in args if a.startswith("--seed_everything=")))  # noqa: E731
    clock = count(0, 30)  # each time.time() call 30 s later: a run (start, end) takes 30 s
    monkeypatch.setattr(sp.time, "time", lambda: next(clock))
    monkeypatch.setattr(sp, "_run", fake_fit)
    monkeypatch.setattr(sp, "_zero_shot", lambda args, ckpt, out: {"verb_top1": 0.5 + 0.1 * seed_of(args)})
    aligned = []  # (alignment is measured on each run's own build: its cache and corpus seed)
    monkeypatch.setattr(sp, "_alignment", lambda cli_main, exp, ckpt, args: aligned.append((exp, ckpt, args)) or
                        {"align_balanced_acc": 0.8, "align_auroc": 0.9})
    root = tmp_path / "spread"
    root.mkdir()
    (root / "spread.json").write_text('{"date": "2026-01-01"}')  # (not a record: stop before any fit)
    with pytest.raises(ValueError, match="not a spread record"):
        sp.spread(None, [0], [0], ["quickstart"], str(root))
    (root / "spread.json").unlink()
    sp.spread(None, [0, 1], [0], ["quickstart", "cbt_quickstart"], str(root))
    old = json.loads((root / "spread.json").read_text())
    old["runs"][0].pop("seconds")  # (a run of an older record, not timed)
    (root / "spread.json").write_text(json.dumps(old))
    monkeypatch.setattr(sp, "_zero_shot", lambda args, ckpt, out: {"verb_top1": 0.9})
    record = json.loads(sp.spread(None, [0, 1], [0], ["cbt_quickstart", "factorised_quickstart"], str(root)).read_text())
    assert [(r["experiment"], r["seed"], r["results"]["verb_top1"]) for r in record["runs"]] == [
        ("quickstart", 0, 0.5), ("quickstart", 1, pytest.approx(0.6)), ("factorised_quickstart", 0, 0.9),
        ("factorised_quickstart", 1, 0.9), ("cbt_quickstart", 0, 0.9), ("cbt_quickstart", 1, 0.9)]
    assert record["summary"]["quickstart"]["verb_top1"]["mean"] == pytest.approx(0.55)
    assert record["summary"]["cbt_quickstart"]["verb_top1"]["std"] == 0.0
    assert [r.get("seconds") for r in record["runs"]] == [None, 30, 30, 30, 30, 30]
    assert "(2 min for the 5 runs timed)" in sp.spread_table(record)
    assert record["summary"]["cbt_quickstart"]["align_balanced_acc"]["mean"] == 0.8 and len(aligned) == 8
    assert "--data.init_args.cache_dir=data/quickstart" in aligned[0][2]


def test_text_to_video_depicts_by_hand():
    from videobert.tasks.text_to_video import TextToVideoData

    truth = {"verbs": ["cut", "stir"], "nouns": ["egg", "fish"], "videos": {"a": {"steps": [
        {"verb": "cut", "noun": "egg", "start": 0.0, "end": 3.0}, {"verb": None, "noun": None, "start": 3.0, "end": 4.5},
        {"verb": "stir", "noun": "fish", "start": 4.5, "end": 9.0}]}}}
    vocab = VisualVocab([np.eye(4, dtype=np.float32)], 4, counts=np.array([5, 1, 1, 0]))
    data = TextToVideoData(SimpleNamespace(), vocab, truth)
    # clips (middles 0.75, 2.25, 3.75, 5.25, 6.75, 8.25) show words 0, 0, 1, 2, 2, 0
    video = {"json": {"video_id": "a", "clips": [[1.5 * i, 1.5 * (i + 1)] for i in range(6)]},
             "features": np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 2, 0]]}
    data.learn_baselines([video], truth)
    labels = data.word_labels
    cut_egg, stir_fish = data.pair_id[("cut", "egg")], data.pair_id[("stir", "fish")]
    assert labels.tolist() == [cut_egg, -1, stir_fish, -1]  # word 0: 2 of 3 clips cut-egg; 1: idle; 3: unused
    metrics = TextToVideoMetrics(10, vocab, labels)
    rows = torch.tensor([[cut_egg, 0, 2, 1, 3, 0], [stir_fish, 0, 2, 1, 3, 0], [stir_fish, 1, 2, 0, 3, 0]])
    out = metrics._depicts(rows)  # (pair, then the top-5 predicted words)
    assert out["depicts_top1"] == pytest.approx(1 / 3) and out["depicts_top5"] == 1.0
    assert out["depicts_chance_top1"] == pytest.approx(1 / 4)  # one word of 4 depicts each of these pairs
    assert out["most_frequent_depicts_top1"] == pytest.approx(1 / 3)  # word 0 (most used) depicts cut-egg


def test_zero_shot_majority_baseline_comes_from_training_steps():
    from videobert.tasks.zero_shot import ZeroShotData, ZeroShotMetrics

    data = ZeroShotData.__new__(ZeroShotData)  # (only the label vocabularies matter here)
    data.verbs, data.nouns, data.features = ["cut", "stir"], ["egg", "fish"], True  # (CBT: no lookup)
    train = {"videos": {"a": {"steps": [{"verb": "stir", "noun": "fish"}, {"verb": None, "noun": None},
                                        {"verb": "stir", "noun": "egg"}, {"verb": "cut", "noun": "fish"}]}}}
    data.learn_baselines(iter(()), train)
    assert data.majority == {"verb": "stir", "noun": "fish"}
    metrics = ZeroShotMetrics(data.verbs, data.nouns, data.majority)
    verbs, nouns = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1])  # the test steps: mostly cut, egg
    for what, y in (("verb", verbs), ("noun", nouns)):
        metrics.majority_hits[what].update((y == metrics.majority[what]).sum().float())
    metrics.steps.update(4.0)
    out = metrics.compute()
    assert out["verb_top1_majority"] == 0.25 and out["noun_top1_majority"] == 0.5  # not the test mode's 0.75


def test_report_keeps_the_hand_written_notes(tmp_path):
    from videobert.report import NOTES_MARK, kept_notes

    out = tmp_path / "results.md"
    assert kept_notes(out) == []  # (no earlier report)
    out.write_text(f"# generated table\n\n{NOTES_MARK}\n\n## How the figures were measured\n\ntext\n\n")
    assert kept_notes(out) == ["", f"{NOTES_MARK}\n\n## How the figures were measured\n\ntext"]
    out.write_text("# generated table only\n")
    assert kept_notes(out) == []
