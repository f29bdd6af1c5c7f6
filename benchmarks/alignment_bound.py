"""How well a reader of the ground truth tells aligned from misaligned pairs on the quickstart's pairs.

    python benchmarks/alignment_bound.py [experiments/quickstart.yaml]

The reader is scored on exactly the pairs `videobert report` scores the alignment heads on (the experiment's
validation stream over the test videos, unmasked, one pass) and learns its decisions on 5 passes over the
training videos drawn as training draws them; every clip's visual word is replaced by the clip's own id, so
each pair's clips are known. A pair is described by what a reader of text and picture that knows the ground truth sees: whether
its text names a verb-noun pair (or, for a filler or remark, the sentence itself), what kinds of scene its
clips show (action, idle, a result: how it turned out and the dish), whether the named pair is among the
actions shown, and whether its verb and its noun are, each in any pair. The best
decision per description (aligned when its aligned / misaligned ratio, weighted to balance the classes,
favours it) is learned on the training pairs; the interval is a bootstrap over the test videos. Not a proof of an upper bound (a model could know what these descriptions leave out, such
as the clips' order), but it shows what the narration's noise leaves to learn. Fillers,
remarks and the sentences that name another step than the picture shows (the corpus's ASR noise) keep it
far from 100%.
"""
from __future__ import annotations

import io
import json
import sys
from collections import Counter, deque
from pathlib import Path

import numpy as np
import webdataset as wds

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1])]

MIX, NEGATIVE_PROB = (0.8, 0.1, 0.1), 0.3  # experiments/quickstart.yaml's data.mix and data.negative_prob (training pairs)


class ClipIds:
    """A stand-in visual vocabulary whose word for a clip is the clip's global id (feature column 0)."""

    def __init__(self, size: int):
        self.size = size

    def words(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0].astype(np.int64)


def clip_table(cache: Path, split: str) -> tuple[list[dict], list[tuple]]:
    """The split's videos with id features, and what each global clip id shows."""
    truth = json.loads((cache / f"corpus/{split}/ground_truth.json").read_text())
    videos, shows = [], []
    for shard in sorted((cache / f"features/{split}").glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            meta = json.loads(s["json"])
            n = len(np.load(io.BytesIO(s["features.npy"])))
            mids = np.asarray(meta["clips"], np.float64).reshape(-1, 2).mean(1)[:n]
            steps = truth["videos"][meta["video_id"]]["steps"]
            for t in mids:
                st = next((st for st in steps if st["start"] <= t < st["end"]), steps[-1])
                shows.append((st["verb"], st["noun"]) if st["verb"] else
                             ("result", f"{st['outcome']} {st.get('dish')}") if "outcome" in st else ("idle", None))
            ids = np.arange(len(shows) - n, len(shows), dtype=np.float64)[:, None]
            videos.append({"json": meta, "features": ids})
    return videos, shows


def descriptions(cache: Path, split: str, tok, labels: tuple[set, set], passes: int, seed: int = 0):
    """(description, aligned label) of every paired sequence of `passes` passes over the split, drawn as
    training draws them."""
    from videobert.sequences import SequenceBuilder

    videos, shows = clip_table(cache, split)
    builder = SequenceBuilder(tok, ClipIds(len(shows)), mask_prob=0.0, mix=MIX, negative_prob=NEGATIVE_PROB)
    rng, others, out = np.random.default_rng(seed), deque(maxlen=builder.negatives_buffer), []
    for index, video in [(i, v) for _ in range(passes) for i, v in enumerate(videos)]:
        for ex in builder.video_examples(video, rng, others):
            if ex["align_label"] not in (0, 1):
                continue
            out.append((describe(ex["input_ids"], tok, labels, shows), ex["align_label"], index))
    return out


def describe(ids: np.ndarray, tok, labels: tuple[set, set], shows: list[tuple]) -> tuple:
    """What a ground-truth reader sees of one unmasked pair `[CLS] text [>] clip ids [SEP]`."""
    bridge = int(np.flatnonzero(ids == tok.bridge_id)[0])
    words = tok.decode(ids[1:bridge].tolist()).split()
    verb = next((w for w in words if w in labels[0]), None)
    noun = next((w for w in words if w in labels[1]), None)
    seen = {shows[i - tok.vocab_size] for i in ids[bridge + 1:-1]}
    kinds = tuple(sorted({k if k in ("idle", "result") else "action" for k, _ in seen} |
                         {f"result {o}" for k, o in seen if k == "result"}))
    named = "a verb-noun pair" if verb and noun else " ".join(words)
    parts = (verb in {v for v, _ in seen}, noun in {n for _, n in seen})  # (each word shown, in any pair)
    return named, kinds, (verb, noun) in seen, parts


def balanced_accuracy(pairs: list, decide) -> float:
    hits = {c: [decide(d) == c for d, y, _ in pairs if y == c] for c in (0, 1)}
    return float(np.mean([np.mean(hits[0]), np.mean(hits[1])]))


def with_interval(pairs: list, decide, draws: int = 1000) -> str:
    """Balanced accuracy and its 95% bootstrap interval over the videos (a video's pairs are correlated, and
    the passes draw each video's sentences again)."""
    y = np.array([label for _, label, _ in pairs])
    hit = np.array([decide(d) == label for d, label, _ in pairs])
    video = np.array([v for _, _, v in pairs])
    rows = [np.flatnonzero(video == v) for v in np.unique(video)]
    rng, stats = np.random.default_rng(0), []
    for _ in range(draws):
        i = np.concatenate([rows[j] for j in rng.integers(len(rows), size=len(rows))])
        stats.append(np.mean([hit[i][y[i] == c].mean() for c in (0, 1)]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return f"{balanced_accuracy(pairs, decide):.3f} [{lo:.3f}, {hi:.3f}] n={len(pairs)} pairs of {len(rows)} videos"


class FeatureIds:
    """A stand-in visual vocabulary whose word for a clip is its id in `clip_table`, found by its features."""

    def __init__(self, cache: Path, split: str, dim: int):
        self.ids, self.size, self.dim = {}, 0, dim
        for shard in sorted((cache / f"features/{split}").glob("*.tar")):
            for s in wds.WebDataset(str(shard), shardshuffle=False):
                for row in np.load(io.BytesIO(s["features.npy"])).astype(np.float32):
                    self.ids.setdefault(row.tobytes(), self.size)
                    self.size += 1

    def words(self, features: np.ndarray) -> np.ndarray:
        return np.array([self.ids[row.tobytes()] for row in np.asarray(features, np.float32)], np.int64)


def report_pairs(config: str, tok, labels: tuple[set, set]):
    """(description, aligned label, video) of exactly the pairs `videobert report` scores the alignment head on:
    the experiment's validation stream over the test videos, unmasked, one pass (the same draws: only the
    vocabulary differs, and it draws nothing)."""
    from omegaconf import OmegaConf

    from data_modules import QuickstartDataModule

    args = dict(OmegaConf.to_container(OmegaConf.load(config))["data"]["init_args"])
    dm = QuickstartDataModule(**{**args, "val_split": "test", "val_mask_prob": 0.0, "val_batches": None})
    dm.setup("validate")
    cache = Path(args["cache_dir"])
    _, shows = clip_table(cache, "test")
    dm.vocab = FeatureIds(cache, "test", dm.vocab.dim)
    assert dm.vocab.size == len(shows), "clip_table and the shards disagree"
    out = []
    for batch in dm.val_dataloader():
        for ids, align, key in zip(batch["input_ids"].numpy(), batch["align_label"].tolist(), batch["keys"]):
            if align in (0, 1):
                out.append((describe(ids[ids != tok.pad_id], tok, labels, shows), align, key))
    return out


def main() -> None:
    from videobert.text import TextTokenizer

    config = sys.argv[1] if len(sys.argv) > 1 else "experiments/quickstart.yaml"
    from omegaconf import OmegaConf

    cache = Path(OmegaConf.load(config)["data"]["init_args"]["cache_dir"])
    tok = TextTokenizer(cache / "tokenizer/vocab.txt")
    truth = json.loads((cache / "corpus/train/ground_truth.json").read_text())
    labels = (set(truth["verbs"]), set(truth["nouns"]))
    train, test = descriptions(cache, "train", tok, labels, 5), report_pairs(config, tok, labels)
    counts = Counter((d, y) for d, y, _ in train)
    n_pos, n_neg = sum(y for _, y, _ in train), sum(1 - y for _, y, _ in train)
    # per description: aligned iff P(d | aligned) >= P(d | misaligned) (the balanced-accuracy optimum);
    # unseen descriptions fall back to "the named pair is shown" (or aligned, for text naming none)
    decide = {d: int(counts[(d, 1)] / n_pos >= counts[(d, 0)] / n_neg) for d, _, _ in train}
    rule = lambda d: decide.get(d, int(d[2] or d[0] != "a verb-noun pair"))  # noqa: E731
    named = lambda d: int(d[2]) if d[0] == "a verb-noun pair" else 1  # noqa: E731 (a reader of named pairs only)
    share = np.mean([y for _, y, _ in test])
    print(f"pairs: {len(train)} training, {len(test)} test-video pairs as `videobert report` scores them, unmasked "
          f"(aligned share {share:.3f})")
    print(f"ground-truth reader, best decision per description (learned on training pairs): balanced accuracy "
          f"{with_interval(test, rule)} on the test videos (training {balanced_accuracy(train, rule):.3f})")
    print(f"'aligned iff the named pair is shown, fillers aligned': {with_interval(test, named)}")
    kinds = Counter(("names a pair" if d[0] == "a verb-noun pair" else "names none") + (", shown" if d[2] else "")
                    for d, y, _ in test if y == 1)
    print("aligned test pairs by what their text names:", dict(kinds))


if __name__ == "__main__":
    main()
