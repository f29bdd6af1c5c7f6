"""Bootstrap intervals over test videos, by hand: whole videos resample together; macro-F1 from resampled
confusion cells; captioning figures recomputed per resample; AUROC by video."""
import numpy as np
import pytest

from videobert.stats import bootstrap_confusion, bootstrap_groups, macro_f1


def test_whole_groups_are_resampled_together():
    groups = ["a"] * 10 + ["b"]
    values = np.array([1.0] * 10 + [0.0])
    seen = set()

    def mean(idx):
        seen.add(round(float(values[idx].mean()), 6))
        return values[idx].mean()

    low, high = bootstrap_groups(groups, mean, draws=400)
    assert seen == {0.0, round(10 / 11, 6), 1.0}  # b alone, a and b, a alone: never a share of a's items
    assert (low, high) == (0.0, 1.0)  # P(b twice) = P(a twice) = 1/4, beyond both 2.5% tails
    assert bootstrap_groups([1, 1, 2, 2], lambda idx: 0.5) == (0.5, 0.5)
    with pytest.raises(ValueError, match="undefined"):
        bootstrap_groups([1, 2], lambda idx: (_ for _ in ()).throw(ValueError("one class")))


def test_macro_f1_by_hand_and_its_interval():
    c = np.array([[8, 2], [1, 9]])  # rows: truth
    f_a, f_b = 2 * 8 / (16 + 1 + 2), 2 * 9 / (18 + 2 + 1)
    assert macro_f1(c) == pytest.approx((f_a + f_b) / 2)
    assert macro_f1(np.array([[5, 0, 0], [0, 0, 0], [0, 0, 5]])) == 1.0  # an absent class is left out
    low, high = bootstrap_confusion(c, macro_f1)
    assert low < macro_f1(c) < high and 0 <= low and high <= 1
    assert bootstrap_confusion(np.diag([10, 10]), macro_f1) == (1.0, 1.0)
    from sklearn.metrics import f1_score  # the same figure as the usual implementation, on items
    y = np.repeat([0, 0, 1, 1], [8, 2, 1, 9])
    p = np.repeat([0, 1, 0, 1], [8, 2, 1, 9])
    assert macro_f1(c) == pytest.approx(f1_score(y, p, average="macro"))


def test_caption_figures_get_intervals_over_videos():
    from videobert.tasks import caption_metrics

    refs = ["stir the egg", "cut the fish", "pour the milk now", "peel the lemon", "roll the bread", "toss the salad"]
    preds = ["stir the egg", "cut a fish", "pour milk", "peel the lemon", "roll the dough", "shake the salad"]
    videos = ["v1", "v1", "v2", "v2", "v3", "v3"]
    java = caption_metrics.find_java()[0]
    scores = caption_metrics.caption_scores(refs, preds, videos, draws=30)
    for metric in ("bleu4", "rouge_l", "cider") + (("meteor",) if java else ()):
        assert scores[f"{metric}_ci_low"] <= scores[metric] + 1e-9 <= scores[f"{metric}_ci_high"] + 2e-9, metric
        assert scores[f"{metric}_ci_low"] < scores[f"{metric}_ci_high"], metric
    same = caption_metrics.caption_scores(refs, refs, videos, draws=10)
    assert same["rouge_l_ci_low"] == same["rouge_l_ci_high"] == 1.0


def test_auroc_by_hand():
    from videobert.stats import auroc

    assert auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.9], [1, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5  # ties count half
    # 3 positives, 2 negatives: pairs (pos > neg): 0.7>{0.4,0.6}: 2, 0.5>{0.4}: 1, 0.3: 0 -> 3 of 6
    assert auroc([0.7, 0.5, 0.3, 0.4, 0.6], [1, 1, 1, 0, 0]) == 0.5
    with pytest.raises(ValueError, match="both are needed"):
        auroc([0.1, 0.2], [1, 1])
