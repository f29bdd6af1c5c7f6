"""`videobert report`: every evaluation task on trained checkpoints, written as one markdown table.

Runs `videobert test` in this process for each (experiment, task) whose checkpoint exists at
`runs/<experiment>/latest/checkpoints/last.ckpt`; fine-tunes the quickstart checkpoint on each task of
experiments/finetune/ (`videobert fit`, then `videobert test`); and writes the metrics next to chance level
and, for orientation only, the paper's YouCook2 numbers (different data). The table goes into the report's
own run folder, `runs/report/<run id>/results.md`, unless `--out` names a file (`make results`, which trains the
quickstart experiments first, passes `--out docs/results.md`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .alignment import alignment_on_test_videos, run_command

PAPER = {"zero_shot/verb_top5": "43.3%", "zero_shot/noun_top5": "33.7%",  # YouCook2, Sun et al. 2019, Table 1
         "captioning/bleu4": "4.33", "captioning/meteor": "11.94", "captioning/rouge_l": "28.80",  # Table 4
         "captioning/cider": "0.55"}
FINETUNES = {"sentiment": ["sentiment.yaml"], "sentiment_video": ["sentiment.yaml", "sentiment_video_only.yaml"],
             "captioning": ["captioning.yaml"]}  # (yamls stacked on quickstart.yaml; from its checkpoint)
TASKS = {"quickstart": ("zero_shot", "retrieval", "forecasting", "summarization", "text_to_video"),
         "factorised_quickstart": ("zero_shot", "retrieval", "forecasting", "summarization", "text_to_video"),
         "cbt_quickstart": ("zero_shot", "retrieval", "summarization"),  # (CBT has no visual words to predict)
         "minilm_quickstart": ("zero_shot", "retrieval", "forecasting", "text_to_video"),
         "minilm_factorised_quickstart": ("zero_shot", "retrieval", "forecasting", "text_to_video")}
SUBSETS = {"": "all steps", "_seen_pairs": "steps of verb-noun pairs seen in training",
           "_unseen_pairs": "steps of verb-noun pairs unseen in training"}


def _zero_shot_rows() -> list[tuple]:
    """Verb and noun top-1 on each subset of steps, the word lookup on the same steps below each."""
    rows = []
    for what in ("verb", "noun"):
        for part, subset in SUBSETS.items():
            base = f"the training majority {what}" if not part else "chance"
            rows += [("zero_shot", f"{what}_top1{part}", f"{what}_top1_majority" if not part else f"{what}_top1_chance",
                      f"zero-shot {what} top-1, {subset} (baseline: {base})"),
                     ("zero_shot", f"{what}_top1_lookup{part}", None, f"zero-shot {what} top-1, {subset}: word lookup "
                      "(baseline with no transformer: each visual word labelled by its training clips' narration)")]
    return rows


ROWS = [  # (task, metric, chance metric or value, what it is)
    *_zero_shot_rows(),
    ("zero_shot", "verb_top5", "verb_top5_chance", "zero-shot verb top-5, all steps"),
    ("zero_shot", "noun_top5", "noun_top5_chance", "zero-shot noun top-5, all steps"),
    ("alignment", "balanced_acc", "constant", "alignment (does this text belong to these clips?) on unmasked test-video pairs: balanced accuracy (any constant answer: 50%; a ground-truth reader: see docs/ablation.md)"),
    ("alignment", "auroc", "constant_auroc", "alignment on unmasked test-video pairs: AUROC (any constant answer: 0.500)"),
    ("alignment", "aligned_recall", None, "alignment on test-video pairs: recall of the aligned pairs"),
    ("alignment", "misaligned_recall", None, "alignment on test-video pairs: recall of the misaligned pairs"),
    ("alignment", "majority_acc", None, "alignment on test-video pairs: share of aligned pairs"),
    ("retrieval", "generative_t2v_r1", "chance_t2v_r1", "text->video R@1, generative (verb, noun at the template's [MASK]s)"),
    ("retrieval", "cross_t2v_r1", "chance_t2v_r1", "text->video R@1, cross-encoder (alignment head), whole pool"),
    ("retrieval", "dual_t2v_r1", "chance_t2v_r1", "text->video R@1, dual encoder (contrastively trained models only)"),
    ("retrieval", "generative_t2v_r10", "chance_t2v_r10", "text->video R@10, generative"),
    ("retrieval", "cross_t2v_r10", "chance_t2v_r10", "text->video R@10, cross-encoder"),
    ("retrieval", "dual_t2v_r10", "chance_t2v_r10", "text->video R@10, dual encoder"),
    ("retrieval", "generative_v2t_r1", "chance_v2t_r1", "video->text R@1, generative"),
    ("retrieval", "cross_v2t_r1", "chance_v2t_r1", "video->text R@1, cross-encoder"),
    ("retrieval", "dual_v2t_r1", "chance_v2t_r1", "video->text R@1, dual encoder"),
    ("retrieval", "pool", None, "retrieval: candidate pool (steps of the test videos)"),
    ("forecasting", "verb_top1", "bigram_verb_top1", "next step's verb top-1, from the clips so far (baseline: training bigram of steps)"),
    ("forecasting", "noun_top1", "bigram_noun_top1", "next step's noun top-1, from the clips so far (baseline: training bigram of steps)"),
    ("forecasting", "repeat_verb_top1", "chance_verb_top1", "next step's verb, repeat the last step (baseline)"),
    ("forecasting", "majority_verb_top1", None, "next step's verb, the training majority (baseline)"),
    ("forecasting", "t1_top1", "t1_repeat_last", "next step's first visual word top-1 (baseline: repeat the last word)"),
    ("forecasting", "t2_top1", "t2_repeat_last", "next step's second visual word top-1 (baseline: repeat the last word)"),
    ("summarization", "coverage", "uniform_coverage", "summary: share of a video's distinct steps shown at 15% length (baseline: evenly spaced clips)"),
    ("summarization", "random_coverage", None, "summary coverage of random clips (exact expectation)"),
    ("summarization", "oracle_coverage", None, "summary coverage of the best possible selection (the budget caps it)"),
    ("summarization", "f1", "random_f1", "summary F1 at 15% length (baseline: random)"),
    ("summarization", "oracle_f1", None, "summary F1 of the best possible selection (the budget caps it)"),
    ("text_to_video", "top1", "most_frequent_top1", "a step's visual words from its narration, top-1 (baseline: most frequent)"),
    ("text_to_video", "top5", "chance_top5", "a step's visual words from its narration, top-5"),
    ("text_to_video", "depicts_top1", "most_frequent_depicts_top1", "a step's visual words from its narration: the predicted word depicts the step, top-1 (baseline: most frequent training word)"),
    ("text_to_video", "depicts_chance_top1", None, "text_to_video depicts, chance (a random word; exact)"),
    ("text_to_video", "depicts_top5", None, "text_to_video depicts, top-5"),
    ("sentiment", "acc", "majority_acc", "sentiment accuracy, fine-tuned (baseline: majority label)"),
    ("sentiment", "macro_f1", "majority_macro_f1", "sentiment macro-F1, fine-tuned (baseline: majority label)"),
    ("sentiment_video", "acc", "majority_acc", "sentiment accuracy, video only (baseline: majority label)"),
    ("sentiment_video", "macro_f1", "majority_macro_f1", "sentiment macro-F1, video only (baseline: majority label)"),
    ("captioning", "bleu4", None, "captioning BLEU-4, fine-tuned (pycocoevalcap)"),
    ("captioning", "meteor", None, "captioning METEOR"),
    ("captioning", "rouge_l", None, "captioning ROUGE-L"),
    ("captioning", "cider", None, "captioning CIDEr-D"),
]


NOTES = [  # what each task's best trivial answer is, and whether a model can beat it on this corpus
    "Which baselines can be beaten here: zero-shot, retrieval and sentiment, yes (chance and the majority are "
    "far below what the picture allows). Forecasting, yes in principle: videos follow recipes that share steps, "
    "so the previous step alone (the bigram, even given its true verb and noun) leaves the next one open, while "
    "the clips before it show the dish and its ingredients. Summary coverage, yes: steps repeat within a video "
    "and the budget holds fewer clips than a video has steps, so evenly spaced or random clips miss steps a "
    "summary that knows the actions would not. Summary F1, no: every action step is key, so any action "
    "detector reaches the oracle; read coverage. text_to_video's exact word mostly encodes a video's look (no "
    "narration can name it); `depicts` counts a word that shows the step's verb and noun."]


NOTES_MARK = "<!-- Written by hand from here on: `videobert report` keeps this part. -->"


def kept_notes(path: Path) -> list[str]:
    """The hand-written part of an earlier report at `path` (from NOTES_MARK on), which a new report keeps."""
    text = path.read_text() if path.is_file() else ""
    return ["", text[text.index(NOTES_MARK):].rstrip("\n")] if NOTES_MARK in text else []


def _test(cli_main, args: list[str], task: str) -> dict[str, float]:
    """`videobert test` (no logger, no callbacks): its `test/<task>/...` metrics."""
    cli = run_command(cli_main, "test", [*args, "--trainer.logger=false", "--trainer.callbacks=[]"])
    prefix = f"test/{task}/"
    return {k[len(prefix):]: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}


def evaluate(cli_main, experiment: str, task: str, ckpt: Path) -> dict[str, float]:
    return _test(cli_main, ["--config", f"experiments/{experiment}.yaml", f"--data.init_args.test_task={task}",
                  f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false"], task)


def finetune(cli_main, name: str, pretrained: Path) -> dict[str, float]:
    """Fine-tune `pretrained` with the yamls of FINETUNES[name] (a run of its own), then test it."""
    stack = [arg for yaml in FINETUNES[name] for arg in ("--config", f"experiments/finetune/{yaml}")]
    args = ["--config", "experiments/quickstart.yaml", *stack, f"--model.init_args.pretrained={pretrained}",
            "--trainer.enable_progress_bar=false"]
    fit = run_command(cli_main, "fit", args)
    ckpt = Path(fit.trainer.default_root_dir) / "checkpoints/last.ckpt"
    return _test(cli_main, [*args, f"--ckpt_path={ckpt}"], name.split("_")[0])


def _fmt(value: float, metric: str) -> str:
    if metric.endswith("auroc"):
        return f"{value:.3f}"
    if metric.endswith("median_rank"):
        return f"{value:.1f}"
    if metric == "pool":
        return f"{value:.0f}"
    if metric == "cider":  # (a score, not a share: the paper's table gives it as is)
        return f"{value:.2f}"
    if metric in ("bleu4", "meteor", "rouge_l"):  # x 100 without %, as the paper's captioning table
        return f"{100 * value:.2f}"
    return f"{100 * value:.1f}%"


def _cell(results: dict[str, float] | None, metric: str, task: str = "") -> str:
    """A figure as the table shows it: value, its 95% interval and n where the task gives them."""
    if not results or results.get(metric) is None:
        return "-"
    text = _fmt(results[metric], metric)
    if f"{metric}_ci_low" in results:  # (in the figure's own unit, without its % sign)
        lo, hi = (_fmt(results[f"{metric}_ci_{end}"], metric).rstrip("%") for end in ("low", "high"))
        text += f" [{lo}, {hi}]"
    n_key = _rates(task).get(metric)
    if n_key and n_key in results:
        text += f" n={int(results[n_key])}"
    return text


def _rates(task: str) -> dict[str, str]:
    """The task's proportions and the key of their n (its metrics class's RATES)."""
    from . import tasks

    classes = {"zero_shot": tasks.ZeroShotMetrics, "retrieval": tasks.RetrievalMetrics,
               "forecasting": tasks.ForecastingMetrics, "text_to_video": tasks.TextToVideoMetrics,
               "sentiment": tasks.SentimentMetrics, "sentiment_video": tasks.SentimentMetrics}
    if task == "alignment":  # (n: the labelled pairs, of each class for its recall)
        return {"balanced_acc": "pairs", "auroc": "pairs", "majority_acc": "pairs", "aligned_recall": "aligned_pairs",
                "misaligned_recall": "misaligned_pairs"}
    if task == "summarization":  # (its intervals are bootstrapped over the videos)
        return {name: "videos" for name in ("coverage", "uniform_coverage", "random_coverage", "f1", "uniform_f1",
                                            "random_f1")}
    return getattr(classes.get(task), "RATES", {})


def table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    exps = list(results)
    lines = ["| metric | " + " | ".join(exps) + " | chance / baseline | paper (YouCook2) |",
             "| --- |" + " --- |" * (len(exps) + 2)]
    for task, metric, base, label in ROWS:
        cells = [_cell(results[e].get(task), metric, task) for e in exps]
        if all(c == "-" for c in cells):
            continue
        base_of = next((results[e][task] for e in exps if base and base in results[e].get(task, {})), None)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cell(base_of, base or '', task)} | "
                     f"{PAPER.get(f'{task}/{metric}', '-')} |")
    return lines


def figure_rows(results: dict[str, dict[str, dict[str, float]]]) -> list[dict]:
    """The table's proportions that carry an interval, one bar each (experiment: label), baseline beside."""
    rows = []
    for exp, tasks in results.items():
        for task, metric, base, label in ROWS:
            got = tasks.get(task, {})
            if f"{metric}_ci_low" in got:
                rows.append({"label": f"{exp}: {label.split(' (')[0]}", "value": got[metric],
                             "low": got[f"{metric}_ci_low"], "high": got[f"{metric}_ci_high"],
                             "baseline": got.get(base) if base else None})
    return rows


def report(cli_main, out: str | None = None, experiments: list[str] | None = None) -> Path:
    """Evaluate every task on each experiment's last checkpoint (with `cli_main`, the command line's
    `lightning_main`) and write the table as markdown.

    Args:
        out: the markdown file to write (default: `runs/report/<run id>/results.md`, beside the report's W&B
            run; `make results` passes docs/results.md).
        experiments: the experiment names to evaluate, each from `runs/<name>/latest` (default: every
            quickstart experiment that has a checkpoint).
    """
    results, missing = {}, []
    for exp in experiments or list(TASKS):
        ckpt = Path(f"runs/{exp}/latest/checkpoints/last.ckpt")
        if not ckpt.exists():
            missing.append(str(ckpt))
            continue
        results[exp] = {task: evaluate(cli_main, exp, task, ckpt) for task in TASKS.get(exp, ("zero_shot",))}
        if exp in TASKS:  # (the built-in corpus's experiments: their DataModule can validate on the test split)
            results[exp]["alignment"] = alignment_on_test_videos(cli_main, exp, ckpt)
        if exp == "quickstart":
            results[exp].update({name: finetune(cli_main, name, ckpt) for name in FINETUNES})
    if not results:
        raise FileNotFoundError(f"no checkpoint to evaluate: {missing} (train first, e.g. make results)")
    run_dir = _report_folder()
    out = out or str(run_dir / "results.md")
    text = ["# Results on the built-in corpus", "",
            f"Written by `videobert report` on {time.strftime('%Y-%m-%d')} from the checkpoints in `runs/`; "
            "`make results` trains and evaluates everything (its time: \"How the figures were measured\" below).",
            "Held-out test videos of the built-in procedural cooking corpus. The paper's column is YouCook2 "
            "(real video): for orientation only, it is not comparable.", "",
            "A proportion reads `value [95% Wilson interval] n=items` (zero-shot: action steps; retrieval: "
            "text queries, or video queries for video->text; forecasting: steps that follow another; text_to_video: masked clips; "
            "sentiment: videos; alignment: labelled text-clips pairs of the test videos, and its balanced accuracy's interval "
            "is Agresti-Caffo's for the mean of two recalls); summary figures' intervals are a bootstrap over the test videos. Chance levels are exact; every baseline is learned "
            "from the training videos (text_to_video's most frequent word and what each word depicts, the "
            "sentiment majority label) and scored on the test videos. Steps of a video are correlated, so "
            "Wilson's interval over steps is narrower than a bootstrap over videos would be.", "",
            *table(results), "", *NOTES]
    figure = figure_rows(results)
    if figure:
        from .plots import results_figure

        png = Path(out).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        results_figure(figure).save(png)
        text += ["", f"![every proportion with its 95% interval and baseline]({png.name})"]
    spread_file = Path("runs/spread/spread.json")
    if spread_file.is_file():  # (measured apart: `videobert spread`, ~50 min)
        from .spread import spread_table

        text += ["", "## Spread over training seeds and corpus builds", "", spread_table(json.loads(spread_file.read_text()))]
    else:
        text += ["", "No spread over training seeds and corpus seeds measured yet (`make spread`)."]
    if "captioning" in results.get("quickstart", {}) and "meteor" not in results["quickstart"]["captioning"]:
        from .tasks.caption_metrics import find_java

        text.append(f"Captioning METEOR not computed: {find_java()[1]}.")
    if missing:
        text.append(f"Not evaluated (no checkpoint): {', '.join(missing)}.")
    text += kept_notes(Path(out))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(text) + "\n")
    log_to_wandb(results, Path(out), str(run_dir))
    print(f"report: {len(results)} experiment(s) -> {out}")
    return Path(out)


def _report_folder() -> Path:
    from .runs import new_run_id

    return Path("runs/report") / new_run_id()


def log_to_wandb(results: dict[str, dict[str, dict[str, float]]], path: Path, save_dir: str = "runs/report") -> str:
    """The report as a W&B run of its own (job type `report`; offline unless W&B is set up, as every command):
    every figure in its summary as `<experiment>/<task>/<metric>`, one table with a row per figure, and the
    markdown file as a `report` artifact (one name: W&B versions it). Returns the run's id."""
    import wandb

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project="videobert", job_type="report", dir=save_dir, config={"experiments": list(results)})
    flat = {f"{exp}/{task}/{k}": v for exp, tasks in results.items() for task, m in tasks.items() for k, v in m.items()}
    run.summary.update(flat)
    run.log({"report/results": wandb.Table(columns=["experiment", "task", "metric", "value"],
                                            data=[[*key.split("/", 2), v] for key, v in flat.items()])})
    artifact = wandb.Artifact("results", type="report")
    artifact.add_file(str(path))
    run.log_artifact(artifact)
    run_id = run.id
    run.finish()
    return run_id
