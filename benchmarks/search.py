"""`videobert index` + `videobert search` on the built-in test split, against what `videobert test` reports.

    python benchmarks/search.py [--run runs/quickstart/latest] [--cache data/quickstart]

Exports the run's last checkpoint, indexes the first `--videos` held-out test videos by id (40: the retrieval task's pool; windows of 3 clips), then searches
with the narration of every step that names its verb and noun (the retrieval task's queries) and counts a
hit when a returned window overlaps a step of the same verb and noun (relevance by ground truth). Prints
R@1 / R@10 with their 95% Wilson intervals, the exact chance of a random window, the wall times of
predict-free indexing and of one search, and, beside them, the retrieval figures `videobert test` gave for
the same model (the generative scorer over whole steps, from that run's retrieval_results.json if present).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from videobert.captions import read_captions
    from videobert.cli import export_checkpoint
    from videobert.search import build_index, search
    from videobert.stats import wilson
    from videobert.tasks.retrieval import named_labels
    from videobert.tasks.steps import step_text

    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs/quickstart/latest")
    p.add_argument("--cache", default="data/quickstart")
    p.add_argument("--videos", type=int, default=40, help="the first N test videos by id (the retrieval task's pool)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp())
    export_checkpoint(str(Path(args.run) / "checkpoints/last.ckpt"), str(work / "export"))
    corpus = Path(args.cache) / "corpus/test"
    truth = _pool(corpus, work / "videos", args.videos)
    t0 = time.perf_counter()
    build_index(str(work / "videos"), str(work / "export"), str(work / "index"))
    index_s = time.perf_counter() - t0
    cues = {v: read_captions(corpus / f"{v}.vtt") for v in truth["videos"]}
    hits, relevance = {1: 0, 10: 0}, []
    n, search_s, windows = 0, [], _windows(work / "index")
    for vid, info in sorted(truth["videos"].items()):
        for step in info["steps"]:
            if step["verb"] is None:
                continue
            text = step_text({"sentences": cues[vid]}, step)
            verbs, nouns = named_labels(text, truth["verbs"], truth["nouns"])
            if step["verb"] not in verbs or step["noun"] not in nouns:
                continue  # (not a describing narration: no query, as in the retrieval task)
            t = time.perf_counter()
            found = search(str(work / "index"), text, top=10)
            search_s.append(time.perf_counter() - t)
            rel = [_relevant(h, truth, step) for h in found]
            relevance.append([_relevant(w, truth, step) for w in windows])
            n += 1
            hits[1] += rel[0]
            hits[10] += any(rel)
    import torch

    from videobert.tasks.retrieval import chance_recall

    chance = {k: chance_recall(torch.tensor(relevance), k) for k in (1, 10)}
    print(f"search on {len(truth['videos'])} test videos, {len(windows)} windows of 3 clips, {n} queries")
    for k in (1, 10):
        lo, hi = wilson(hits[k], n)
        print(f"  R@{k}: {100 * hits[k] / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={n}; chance {100 * chance[k]:.1f}%)")
    print(f"  indexing: {index_s:.1f} s; one search: median {1000 * sorted(search_s)[len(search_s) // 2]:.0f} ms "
          f"(loads the index and the model each time, as the command does)")
    test = sorted(Path(args.run).resolve().parent.glob("*-test/retrieval_results.json"))
    if test:
        r = json.loads(test[-1].read_text())
        print(f"  videobert test (whole steps, pool {int(r['pool'])}): generative R@1 {100 * r['generative_t2v_r1']:.1f}%, "
              f"R@10 {100 * r['generative_t2v_r10']:.1f}% (n={int(r['t2v_queries'])})")


def _pool(corpus: Path, folder: Path, n: int) -> dict:
    """The ground truth of the first `n` test videos by id (the retrieval task's pool), linked into `folder`."""
    truth = json.loads((corpus / "ground_truth.json").read_text())
    truth["videos"] = {v: truth["videos"][v] for v in sorted(truth["videos"])[:n]}
    folder.mkdir()
    for vid in truth["videos"]:
        (folder / f"{vid}.mp4").symlink_to((corpus / f"{vid}.mp4").resolve())
    return truth


def _windows(index: Path) -> list[dict]:
    import numpy as np

    meta = json.loads((index / "index.json").read_text())
    names = {v["id"]: v["video"] for v in meta["videos"].values()}
    with np.load(index / "windows.npz") as f:
        return [{"video": names[int(v)], "start": float(s), "end": float(e)} for v, s, e in zip(f["video"], f["start"], f["end"])]


def _relevant(hit: dict, truth: dict, step: dict) -> bool:
    """Does the window overlap a step of the query step's verb and noun?"""
    return any((s["verb"], s["noun"]) == (step["verb"], step["noun"]) and
               min(s["end"], hit["end"]) - max(s["start"], hit["start"]) > 0 for s in truth["videos"][hit["video"]]["steps"])


if __name__ == "__main__":
    main()
