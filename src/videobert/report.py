"""`videobert report`: every evaluation task on trained checkpoints, written as one markdown table.

Runs `videobert test` in this process for each (experiment, task) whose checkpoint exists at
`runs/<experiment>/latest/checkpoints/last.ckpt`; fine-tunes the quickstart checkpoint on each task of
experiments/finetune/ (`videobert fit`, then `videobert test`); and writes the metrics next to chance level
and, for orientation only, the paper's YouCook2 numbers (different data). `make results` trains both
quickstart experiments first.
"""
from __future__ import annotations

import time
from pathlib import Path

PAPER = {"zero_shot/verb_top5": "43.3%", "zero_shot/noun_top5": "33.7%",  # YouCook2, Sun et al. 2019, Table 1
         "captioning/bleu4": "4.33", "captioning/meteor": "11.94", "captioning/rouge_l": "28.80",  # Table 4
         "captioning/cider": "0.55"}
FINETUNES = {"sentiment": ["sentiment.yaml"], "sentiment_video": ["sentiment.yaml", "sentiment_video_only.yaml"],
             "captioning": ["captioning.yaml"]}  # (yamls stacked on quickstart.yaml; from its checkpoint)
TASKS = {"quickstart": ("zero_shot", "retrieval", "forecasting", "summarization", "text_to_video"),
         "cbt_quickstart": ("zero_shot", "retrieval", "summarization")}  # (CBT has no visual words to predict)
ROWS = [  # (task, metric, chance metric or value, what it is)
    ("zero_shot", "verb_top1", "verb_top1_chance", "zero-shot verb top-1"),
    ("zero_shot", "verb_top5", "verb_top5_chance", "zero-shot verb top-5"),
    ("zero_shot", "noun_top1", "noun_top1_chance", "zero-shot noun top-1"),
    ("zero_shot", "noun_top5", "noun_top5_chance", "zero-shot noun top-5"),
    ("zero_shot", "verb_top1_unseen_pairs", "verb_top1_chance", "zero-shot verb top-1, verb-noun pairs unseen in training"),
    ("zero_shot", "noun_top1_unseen_pairs", "noun_top1_chance", "zero-shot noun top-1, verb-noun pairs unseen in training"),
    ("retrieval", "dual_t2v_r1", "chance_r1", "text->video R@1, dual encoder"),
    ("retrieval", "cross_t2v_r1", "chance_r1", "text->video R@1, cross-encoder rerank"),
    ("retrieval", "dual_t2v_r10", None, "text->video R@10, dual encoder"),
    ("retrieval", "dual_t2v_median_rank", None, "text->video median rank, dual"),
    ("retrieval", "dual_v2t_r10", None, "video->text R@10, dual encoder"),
    ("forecasting", "t1_top1", "t1_repeat_last", "next visual word top-1 (baseline: repeat the last)"),
    ("forecasting", "t3_top1", "t3_repeat_last", "+3 clips visual word top-1 (baseline: repeat the last)"),
    ("summarization", "f1", "random_f1", "summary F1 at 15% length (baseline: random)"),
    ("summarization", "oracle_f1", None, "summary F1 of the best possible selection (the budget caps it)"),
    ("text_to_video", "top1", "most_frequent_top1", "a step's visual words from its narration, top-1 (baseline: most frequent)"),
    ("text_to_video", "top5", "chance_top5", "a step's visual words from its narration, top-5"),
    ("sentiment", "acc", "majority_acc", "sentiment accuracy, fine-tuned (baseline: majority label)"),
    ("sentiment", "macro_f1", "majority_macro_f1", "sentiment macro-F1, fine-tuned (baseline: majority label)"),
    ("sentiment_video", "acc", "majority_acc", "sentiment accuracy, video only (baseline: majority label)"),
    ("sentiment_video", "macro_f1", "majority_macro_f1", "sentiment macro-F1, video only (baseline: majority label)"),
    ("captioning", "bleu4", None, "captioning BLEU-4, fine-tuned (pycocoevalcap)"),
    ("captioning", "meteor", None, "captioning METEOR"),
    ("captioning", "rouge_l", None, "captioning ROUGE-L"),
    ("captioning", "cider", None, "captioning CIDEr-D"),
]


def _run(subcommand: str, args: list[str]):
    """One `videobert <subcommand>` in this process, its W&B run closed as the shell would."""
    import wandb

    from .cli import lightning_main

    cli = lightning_main([subcommand, *args])
    wandb.finish()
    return cli


def _test(args: list[str], task: str) -> dict[str, float]:
    """`videobert test` (no logger, no callbacks): its `test/<task>/...` metrics."""
    cli = _run("test", [*args, "--trainer.logger=false", "--trainer.callbacks=[]"])
    prefix = f"test/{task}/"
    return {k[len(prefix):]: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}


def evaluate(experiment: str, task: str, ckpt: Path) -> dict[str, float]:
    return _test(["--config", f"experiments/{experiment}.yaml", f"--data.init_args.test_task={task}",
                  f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false"], task)


def finetune(name: str, pretrained: Path) -> dict[str, float]:
    """Fine-tune `pretrained` with the yamls of FINETUNES[name] (a run of its own), then test it."""
    stack = [arg for yaml in FINETUNES[name] for arg in ("--config", f"experiments/finetune/{yaml}")]
    args = ["--config", "experiments/quickstart.yaml", *stack, f"--model.init_args.pretrained={pretrained}",
            "--trainer.enable_progress_bar=false"]
    fit = _run("fit", args)
    ckpt = Path(fit.trainer.default_root_dir) / "checkpoints/last.ckpt"
    return _test([*args, f"--ckpt_path={ckpt}"], name.split("_")[0])


def _cell(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric.endswith("median_rank"):
        return f"{value:.1f}"
    if metric == "cider":  # (a score, not a share: the paper's table gives it as is)
        return f"{value:.2f}"
    if metric in ("bleu4", "meteor", "rouge_l"):  # x 100 without %, as the paper's captioning table
        return f"{100 * value:.2f}"
    return f"{100 * value:.1f}%"


def table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    exps = list(results)
    lines = ["| metric | " + " | ".join(exps) + " | chance / baseline | paper (YouCook2) |",
             "| --- |" + " --- |" * (len(exps) + 2)]
    for task, metric, base, label in ROWS:
        cells = [_cell(results[e].get(task, {}).get(metric), metric) for e in exps]
        if all(c == "-" for c in cells):
            continue
        base_val = next((results[e][task].get(base) for e in exps if base and task in results[e]), None)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cell(base_val, metric)} | "
                     f"{PAPER.get(f'{task}/{metric}', '-')} |")
    return lines


def report(out: str = "docs/results.md", experiments: list[str] | None = None) -> Path:
    """Evaluate every task on each experiment's last checkpoint and write the table to `out`."""
    results, missing = {}, []
    for exp in experiments or list(TASKS):
        ckpt = Path(f"runs/{exp}/latest/checkpoints/last.ckpt")
        if not ckpt.exists():
            missing.append(str(ckpt))
            continue
        results[exp] = {task: evaluate(exp, task, ckpt) for task in TASKS.get(exp, ("zero_shot",))}
        if exp == "quickstart":
            results[exp].update({name: finetune(name, ckpt) for name in FINETUNES})
    if not results:
        raise FileNotFoundError(f"no checkpoint to evaluate: {missing} (train first, e.g. make results)")
    text = ["# Results on the built-in corpus", "",
            f"Written by `videobert report` on {time.strftime('%Y-%m-%d')} from the checkpoints in `runs/`; "
            "`make results` trains and evaluates everything (2 CPU cores: about 20 minutes).",
            "Held-out test videos of the built-in procedural cooking corpus. The paper's column is YouCook2 "
            "(real video): for orientation only, it is not comparable.", "", *table(results), ""]
    if "captioning" in results.get("quickstart", {}) and "meteor" not in results["quickstart"]["captioning"]:
        from .tasks.caption_metrics import find_java

        text.append(f"Captioning METEOR not computed: {find_java()[1]}.")
    if missing:
        text.append(f"Not evaluated (no checkpoint): {', '.join(missing)}.")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(text) + "\n")
    print(f"report: {len(results)} experiment(s) -> {out}")
    return Path(out)
