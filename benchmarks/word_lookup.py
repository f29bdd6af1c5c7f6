"""How much verb and noun a quickstart cache's visual words carry, with no transformer: an upper bound.

    python benchmarks/word_lookup.py data/quickstart data/quickstart/visual_vocab-2x12.npz

Each visual word (each group's code, for factorised words: motion codes for the verb, appearance codes for the
noun) is labelled with the majority verb and noun of its training clips (from the training ground truth); a
test step's clips then vote. Prints the accuracy on the test steps of seen and of unseen verb-noun pairs.
"""
from __future__ import annotations

import io
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def steps(cache: Path, split: str, vocab):
    """(step, (clips, groups) codes of its clips) for every action step of a split."""
    truth = json.loads((cache / f"corpus/{split}/ground_truth.json").read_text())
    for shard in sorted((cache / f"features/{split}").glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            meta, feats = json.loads(s["json"]), np.load(io.BytesIO(s["features.npy"])).astype(np.float32)
            words = vocab.words(feats)
            codes = vocab.codes(words) if hasattr(vocab, "codes") else np.stack([words, words], 1)
            mids = np.asarray(meta["clips"]).reshape(-1, 2).mean(1)
            for st in truth["videos"][meta["video_id"]]["steps"]:
                if st["verb"]:
                    yield st, codes[(mids >= st["start"]) & (mids < st["end"])]


def main() -> None:
    from videobert.vq import VisualVocab

    cache, vocab = Path(sys.argv[1]), VisualVocab.load(sys.argv[2])
    side = {"verb": 1, "noun": 0}  # the code each label reads (the same one for joint words)
    labels = defaultdict(Counter)
    for st, codes in steps(cache, "train", vocab):
        for row in codes:
            for what, g in side.items():
                labels[(what, row[g])][st[what]] += 1
    hits = defaultdict(list)
    for st, codes in steps(cache, "test", vocab):
        for what, g in side.items():
            votes = Counter(labels[(what, row[g])].most_common(1)[0][0] for row in codes if labels[(what, row[g])])
            hits[(what, bool(st.get("unseen_pair")))].append(bool(votes) and votes.most_common(1)[0][0] == st[what])
    used = int((vocab.counts > 0).sum()) if vocab.counts is not None else "?"
    print(f"{sys.argv[2]}: {vocab.size} words ({used} used in training)")
    for (what, unseen), h in sorted(hits.items()):
        print(f"  {what} {'unseen pairs' if unseen else 'seen pairs'}: {100 * np.mean(h):.1f}% (n={len(h)})")


if __name__ == "__main__":
    main()
