"""Downstream-task metrics against references computed another way on hand-made cases."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videobert.tasks.forecasting import ForecastingData
from videobert.tasks.retrieval import ranks_from_scores, recall_and_median
from videobert.tasks.steps import on_rank_zero


def test_retrieval_ranks_and_recall_from_a_known_similarity_matrix():
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.0],   # query 0: its item (col 0) ranks 1st
                           [0.8, 0.1, 0.7, 0.3],   # query 1: 4th
                           [0.1, 0.9, 0.5, 0.2],   # query 2: 2nd
                           [0.3, 0.2, 0.1, 0.4]])  # query 3: 1st
    assert ranks_from_scores(scores).tolist() == [1, 4, 2, 1]
    out = recall_and_median(scores)
    ranks = np.array([1, 4, 2, 1])  # the same, computed by hand
    for k in (1, 5, 10):
        assert out[f"r{k}"] == pytest.approx(np.mean(ranks <= k))
    assert out["median_rank"] == np.median(ranks) == 1.5
    tied = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.3, 0.3]])
    assert ranks_from_scores(tied).tolist() == [2, 2, 3]  # a tie with a wrong item counts against the query
    assert recall_and_median(tied)["r1"] == 0.0 and recall_and_median(tied)["median_rank"] == 2.0
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])  # same narration
    assert ranks_from_scores(tied, same).tolist() == [1, 2, 3]


def _steps(*spec):
    """Ground-truth steps of 2 clips (3 s) each: (verb, noun) or None (idle)."""
    return [{"verb": p and p[0], "noun": p and p[1], "start": 3.0 * i, "end": 3.0 * i + 3.0} for i, p in enumerate(spec)]


def test_forecasting_steps_and_training_baselines_by_hand():
    from videobert.tasks.forecasting import ForecastingMetrics

    class Tok:
        vocab_size, cls_id, sep_id, bridge_id, mask_id, pad_id = 10, 2, 3, 5, 4, 0

    class Vocab:  # word of a clip = its feature
        size = 4

        def words(self, f):
            return f[:, 0].astype(np.int64)

    verbs, nouns = ["cut", "stir"], ["egg", "fish"]
    train = {"verbs": verbs, "nouns": nouns, "videos": {
        "t0": {"steps": _steps(("cut", "egg"), ("stir", "egg"), ("cut", "fish"))},
        "t1": {"steps": _steps(("cut", "egg"), None, ("stir", "egg"))},
        "t2": {"steps": _steps(("cut", "egg"), ("cut", "fish"))}}}
    feats = {"t0": [0, 0, 1, 1, 2, 2], "t1": [0, 0, 3, 3, 1, 1], "t2": [0, 0, 2, 2]}
    videos = [{"json": {"video_id": k, "clips": [[1.5 * i, 1.5 * i + 1.5] for i in range(len(f))]},
               "features": np.array(f, np.float32)[:, None]} for k, f in feats.items()]
    test = {"verbs": verbs, "nouns": nouns, "videos": {"v": {"steps": _steps(("cut", "egg"), None, ("stir", "egg"),
                                                                            ("cut", "fish"))}}}
    data = ForecastingData(Tok(), Vocab(), test, max_visual_words=5)
    data.learn_baselines(videos, train)
    assert data.word_labels.tolist() == [0, 2, 1, -1]  # word 0: cut-egg (pair 0), 1: stir-egg (2), 2: cut-fish (1), 3: idle
    # after cut-egg, training shows stir-egg twice and cut-fish once; after stir-egg, cut-fish
    # overall, stir-egg and cut-fish follow twice each: the majority takes the first of tied labels (cut, egg)
    assert data.baselines(("cut", "egg")) == {"bigram": (1, 0), "repeat": (0, 0), "majority": (0, 0)}
    assert data.baselines(("stir", "egg"))["bigram"] == (0, 1)
    assert data.baselines(("stir", "fish"))["bigram"] == (0, 0)  # never seen in training: the overall counts
    video = {"__key__": "v", "features": np.array([0, 0, 3, 3, 1, 1, 2, 2], np.float32)[:, None],
             "json": {"video_id": "v", "clips": [[1.5 * i, 1.5 * i + 1.5] for i in range(8)]}}
    exs = list(data.examples(video))
    assert [(e["verb"], e["noun"]) for e in exs] == [(1, 0), (0, 1)]  # the steps that follow another
    assert exs[0]["input_ids"].tolist() == [2, 5, 10, 13, 13, 4, 4, 3]  # the last 3 clips before, then [MASK] x 2
    assert exs[0]["labels"][5:7].tolist() == [11, 11] and exs[0]["last"] == 13
    assert exs[1]["baselines"]["bigram"] == (0, 1) and exs[1]["baselines"]["repeat"] == (1, 0)
    batch = data.collate(exs)
    metrics = ForecastingMetrics(10, 4, None, data.word_labels, (2, 2))
    # the model puts its mass on word 1 (stir-egg) for the first step and word 0 (cut-egg) for the second
    logits = torch.tensor([[[0.0, 9, 0, 0]] * 2, [[9.0, 0, 0, 0]] * 2])
    metrics._update_steps(logits, batch)
    metrics.transitions.update(2.0)
    out = {k: v for k, v in metrics.compute().items() if k.endswith("_top1") and ("verb" in k or "noun" in k)}
    assert out == {"verb_top1": 1.0, "noun_top1": 0.5, "bigram_verb_top1": 1.0, "bigram_noun_top1": 1.0,
                   "repeat_verb_top1": 0.0, "repeat_noun_top1": 0.5, "majority_verb_top1": 0.5,
                   "majority_noun_top1": 0.5, "chance_verb_top1": 0.5, "chance_noun_top1": 0.5}
    with pytest.raises(ValueError, match="not CBT"):
        ForecastingData(Tok(), None, test, features=True)


def test_summary_selection_and_f1_by_hand():
    from videobert.tasks.summarization import f1, select

    segments = [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, 6.0)]
    chosen = select(segments, [0.2, 0.9, 0.5, 0.8], budget=3.0)  # the two best that fit: 1.5-3 and 4.5-6
    assert sorted(chosen) == [(1.5, 3.0), (4.5, 6.0)]
    assert select(segments, [0.2, 0.9, 0.5, 0.8], budget=1.0) == []  # nothing fits
    key = [(0.0, 3.0)]  # 3 s of key time; 1.5 s of the 3 s chosen hit it
    p, r = 1.5 / 3.0, 1.5 / 3.0
    assert f1(chosen, key) == pytest.approx(2 * p * r / (p + r))
    assert f1([(3.0, 4.5)], key) == 0.0


def test_results_table_puts_metrics_next_to_baselines():
    from videobert.report import table

    results = {"quickstart": {"zero_shot": {"verb_top5": 0.9, "verb_top5_chance": 0.5},
                              "retrieval": {"pool": 220.0, "chance_t2v_r1": 0.01}},
               "cbt_quickstart": {"zero_shot": {"verb_top5": 1.0, "verb_top5_chance": 0.5}}}
    lines = table(results)
    assert lines[0].startswith("| metric | quickstart | cbt_quickstart |")
    assert "| zero-shot verb top-5, all steps | 90.0% | 100.0% | 50.0% | 43.3% |" in lines
    assert "| retrieval: candidate pool (steps of the test videos) | 220 | - | - | - |" in lines
    assert not any("noun" in line for line in lines)  # rows without any value are left out


def test_confusion_figure_is_saved_as_png(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from videobert.plots import confusion_figure, curves_figure, results_figure
    from videobert.tasks.figures import publish

    img = confusion_figure(np.array([[3, 1], [0, 4]]), ["stir", "roll"], "verbs")
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), loggers=[])
    (path,) = publish(trainer, {"zero_shot/verb_confusion": img})
    assert path.name == "zero_shot_verb_confusion.png" and Image.open(path).size == img.size
    pixels = np.asarray(img)
    assert (pixels.min(-1) < 60).mean() > 0.001 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn
    rows = [{"step": str(s), "val/align_auroc": str(0.5 + s / 40)} for s in range(5)] + [{"step": "5", "x": ""}]
    assert curves_figure(rows, ["val/align_auroc", "x"]).size[0] > 200 and curves_figure(rows, ["x"]) is None
    bars = results_figure([{"label": "verb top-1", "value": 0.8, "low": 0.7, "high": 0.9, "baseline": 0.1},
                           {"label": "F1", "value": 0.3, "low": None, "high": None, "baseline": None},
                           {"label": "all", "value": 1.0, "low": 0.98, "high": 0.9999, "baseline": 0.5}])
    assert bars.size[1] > 100


def _rank_zero_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)

    def score(x):
        (Path(folder) / f"called-{rank}").touch()
        return {"double": 2 * x, "rank": rank}

    def fail():
        raise ValueError("no java")

    got = on_rank_zero(score, 21)
    try:
        on_rank_zero(fail)
        failed = None
    except ValueError as err:
        failed = str(err)
    (Path(folder) / f"result-{rank}.json").write_text(json.dumps([got, failed]))
    dist.destroy_process_group()


def test_on_rank_zero_computes_once_and_every_rank_gets_the_result(tmp_path):
    torch.multiprocessing.spawn(_rank_zero_worker, args=(str(tmp_path),), nprocs=2)
    assert sorted(p.name for p in tmp_path.glob("called-*")) == ["called-0"]  # rank 1 never ran it
    for rank in (0, 1):  # rank 0's result, and rank 0's error raised on every rank (no rank left waiting)
        assert json.loads((tmp_path / f"result-{rank}.json").read_text()) == [{"double": 42, "rank": 0}, "no java"]
    assert on_rank_zero(lambda x: x + 1, 1) == 2  # one process: just the call


def test_retrieval_chance_is_exact_and_relevance_follows_the_labels_not_the_words():
    from itertools import permutations

    from videobert.tasks.retrieval import chance_recall, named_labels

    relevant = torch.tensor([[True, False, False, False], [True, True, False, False]])  # 1 and 2 of 4 relevant
    assert chance_recall(relevant, 1) == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert chance_recall(relevant, 2) == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)  # 1 - C(N-r,k)/C(N,k)
    for k in (1, 2, 3):  # against every ordering of the 4 candidates
        hits = [np.mean([any(relevant[q, list(order)[:k]]) for q in range(2)]) for order in permutations(range(4))]
        assert chance_recall(relevant, k) == pytest.approx(np.mean(hits))
    verbs, nouns = ["stir", "cut"], ["egg", "fish"]
    assert named_labels("so now we're gonna cut the fish, then stir", verbs, nouns) == (["cut", "stir"], ["fish"])
    assert named_labels("don't forget to subscribe", verbs, nouns) == ([], [])
    # relevance: the same (verb, noun) whatever the sentence; a filler is no query
    labels = torch.tensor([[1, 1], [1, 1], [0, 1]])
    rel = (labels[[0]][:, None] == labels[None]).all(-1)
    assert rel.tolist() == [[True, True, False]]


def test_summary_coverage_by_hand_and_random_coverage_exactly():
    from itertools import combinations

    from videobert.tasks.summarization import coverage, random_coverage, select

    steps = [{"verb": "cut", "noun": "egg", "start": 0.0, "end": 3.0}, {"verb": "stir", "noun": "egg", "start": 3.0, "end": 4.5},
             {"verb": "cut", "noun": "egg", "start": 4.5, "end": 6.0}]  # 2 distinct pairs, one repeated
    segments = [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, 6.0)]
    assert coverage([(0.0, 1.5), (4.5, 6.0)], steps) == 0.5  # the same step twice shows one of the two
    assert coverage([(1.5, 3.0), (3.0, 4.5)], steps) == 1.0 and coverage([], steps) == 0.0
    for m in (1, 2, 3):  # against every m-subset
        expect = np.mean([coverage([segments[i] for i in c], steps) for c in combinations(range(4), m)])
        assert random_coverage(segments, steps, m) == pytest.approx(expect)
    # one clip per predicted action first: the best 2 of 1.5 s would be two "cut egg" clips
    pairs = [("cut", "egg"), ("cut", "egg"), ("stir", "egg"), ("cut", "egg")]
    assert select(segments, [0.9, 0.8, 0.5, 0.7], 3.0) == [(0.0, 1.5), (1.5, 3.0)]
    assert select(segments, [0.9, 0.8, 0.5, 0.7], 3.0, pairs) == [(0.0, 1.5), (3.0, 4.5)]
