"""`videobert spread`: how much a headline figure moves when only the luck changes.

Trains each quickstart experiment with every training seed on every corpus build — the training seed changes initial weights, masking and stream order; the corpus
seed changes every video and caption, hence the tokenizer and the visual vocabulary — evaluates the
zero-shot task and the alignment head (unmasked test-video pairs, as `videobert report` scores it) on each
build's own held-out videos, and writes every run's figures plus, per figure,
mean, standard deviation and range over all runs, over the seeds and over the builds, to
`runs/spread/spread.json`; `videobert report` puts that table into docs/results.md. A difference between
two builds of the code smaller than this spread is noise.

    videobert spread --seeds [0,1,2] --corpus_seeds [0,1]    # 3 models x 6 fits
    videobert spread --experiments [factorised_quickstart]   # one model anew; the others' runs are kept
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXPERIMENTS = ("quickstart", "factorised_quickstart", "cbt_quickstart")
FIGURES = ("verb_top1", "noun_top1", "verb_top1_seen_pairs", "noun_top1_seen_pairs", "verb_top1_unseen_pairs",
           "noun_top1_unseen_pairs", "verb_top1_lookup", "noun_top1_lookup", "verb_top1_lookup_seen_pairs",
           "noun_top1_lookup_seen_pairs", "align_balanced_acc", "align_auroc")
# (zero-shot, the word lookup of the same build's training data on the same steps, alignment on test-video pairs)


def run_args(experiment: str, corpus_seed: int, seed: int, root: str) -> list[str]:
    """The `videobert fit` arguments of one run: its own cache for each corpus build, its own run folder."""
    cache = "data/quickstart" if corpus_seed == 0 else f"data/quickstart-c{corpus_seed}"
    return ["--config", f"experiments/{experiment}.yaml", f"--seed_everything={seed}",
            f"--data.init_args.corpus_seed={corpus_seed}", f"--data.init_args.cache_dir={cache}",
            f"--trainer.default_root_dir={root}/{experiment}-c{corpus_seed}-s{seed}",
            "--trainer.enable_progress_bar=false"]


def _run(subcommand: str, args: list[str]) -> None:
    """One `videobert` command in its own process (a fresh Lightning and W&B state for each run)."""
    subprocess.run([sys.executable, "-m", "videobert.cli", subcommand, *args], check=True)


def _zero_shot(args: list[str], ckpt: Path, out: Path) -> dict[str, float]:
    _run("test", [*args, f"--ckpt_path={ckpt}", "--trainer.logger=false", "--trainer.callbacks=[]",
                  f"--trainer.default_root_dir={out}"])
    return json.loads(next(out.glob("*/zero_shot_results.json")).read_text())


def _alignment(cli_main, experiment: str, ckpt: Path, args: list[str]) -> dict[str, float]:
    """Balanced accuracy and AUROC of the alignment head on the run's own build's test-video pairs."""
    from .alignment import alignment_on_test_videos

    keep = [a for a in args if a.startswith(("--data.init_args.corpus_seed", "--data.init_args.cache_dir"))]
    got = alignment_on_test_videos(cli_main, experiment, ckpt, tuple(keep))
    return {f"align_{k}": got[k] for k in ("balanced_acc", "auroc")}


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min()),
            "max": float(x.max()), "n": len(x)}


def summarise(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{experiment: {figure: mean, std (ddof 1), min, max, n, seed_range, build_range}} over the runs of each
    experiment; the ranges (max - min) over the seeds of the first build and over the builds at the first seed
    (the two sources of luck apart)."""
    out: dict = {}
    for exp in dict.fromkeys(r["experiment"] for r in runs):
        mine = [r for r in runs if r["experiment"] == exp]
        build0, seed0 = mine[0]["corpus_seed"], mine[0]["seed"]
        for fig in FIGURES:
            x = np.array([r["results"][fig] for r in mine if fig in r["results"]])
            if not len(x):
                continue
            by_seed = [r["results"][fig] for r in mine if r["corpus_seed"] == build0 and fig in r["results"]]
            by_build = [r["results"][fig] for r in mine if r["seed"] == seed0 and fig in r["results"]]
            out.setdefault(exp, {})[fig] = {**_stats(x), "seed_range": float(np.ptp(by_seed)),
                                            "build_range": float(np.ptp(by_build))}
    return out


def spread(cli_main, seeds: list[int] = (0, 1, 2), corpus_seeds: list[int] = (0, 1),
           experiments: list[str] = EXPERIMENTS, root: str = "runs/spread") -> Path:
    """Fit and zero-shot-test every experiment with every seed on every corpus build, and score its alignment head
    (in this process, with the command line's `lightning_main`: `cli_main`); write `<root>/spread.json`."""
    path = Path(root) / "spread.json"
    kept = []  # the other experiments' runs stay (e.g. one experiment measured anew after a change); read first,
    if path.is_file():  # so a bad file stops the command before hours of fits, not after
        try:
            kept = [r for r in json.loads(path.read_text())["runs"] if r["experiment"] not in experiments]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a spread record ({type(err).__name__}: {err}); move it away to start "
                             "a new one") from None
    runs = []
    plan = [(c, s) for c in corpus_seeds for s in seeds]
    for exp in experiments:
        for corpus_seed, seed in plan:
            start, args = time.time(), run_args(exp, corpus_seed, seed, root)
            _run("fit", args)
            folder = Path(f"{root}/{exp}-c{corpus_seed}-s{seed}")
            ckpt = max(folder.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            results = _zero_shot(args, ckpt, folder / "test")
            results.update(_alignment(cli_main, exp, ckpt, args))
            runs.append({"experiment": exp, "corpus_seed": corpus_seed, "seed": seed, "results": results,
                         "seconds": round(time.time() - start), "date": time.strftime("%Y-%m-%d")})
            print(f"spread: {exp} corpus {corpus_seed} seed {seed}: " +
                  ", ".join(f"{f} {results[f]:.3f}" for f in FIGURES if f in results), flush=True)
    order = {e: i for i, e in enumerate(EXPERIMENTS)}  # (the table in the usual order of the experiments)
    runs = sorted(kept + runs, key=lambda r: order.get(r["experiment"], len(order)))
    record = {"date": time.strftime("%Y-%m-%d"), "runs": runs, "summary": summarise(runs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(spread_table(record))
    return path


def spread_table(record: dict) -> str:
    """The spread as markdown: per experiment and figure, mean +- std and the range, over n runs."""
    timed = [r for r in record["runs"] if "seconds" in r]
    when = (f"{sum(r['seconds'] for r in timed) // 60} min for the {len(timed)} runs timed"
            if timed else f"{record['seconds'] // 60} min" if "seconds" in record else "time not recorded")
    lines = [f"Written by `videobert spread` on {record['date']} ({when}): every run's "
             "zero-shot figures on its own corpus build's held-out videos; std over the runs (ddof 1).", "",
             "| experiment | figure | mean | std | min - max | range over seeds | range over builds | runs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for exp, figs in record["summary"].items():
        for fig, s in figs.items():
            lines.append(f"| {exp} | {fig} | {100 * s['mean']:.1f}% | {100 * s['std']:.1f} | "
                         f"{100 * s['min']:.1f} - {100 * s['max']:.1f}% | {100 * s['seed_range']:.1f} | "
                         f"{100 * s['build_range']:.1f} | {s['n']} |")
    runs = ", ".join(f"{r['experiment']} c{r['corpus_seed']}s{r['seed']} {100 * r['results']['verb_top1']:.1f}"
                     for r in record["runs"] if "verb_top1" in r["results"])
    return "\n".join([*lines, "", f"Verb top-1 of each run: {runs}."])
