"""BERT WordPiece text tokenization through `tokenizers`: trained on captions or loaded from a vocab.txt.

`[>]` separates text from visual words (the paper's token); it is a special token of the text vocabulary.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import BertWordPieceTokenizer

from .safe_io import atomic_path, write_text

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[>]"]


class TextTokenizer:
    """WordPiece ids for caption text, with the special-token ids the sequence builder needs."""

    def __init__(self, vocab_file: str | Path, lowercase: bool | None = None):
        """`lowercase`: None reads `do_lower_case` from a tokenizer_config.json beside the vocabulary (a
        BERT checkpoint folder), default True."""
        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no WordPiece vocabulary (vocab.txt) here")
        config = path.with_name("tokenizer_config.json")
        if lowercase is None:
            lowercase = json.loads(config.read_text()).get("do_lower_case", True) if config.is_file() else True
        self.vocab_file, self.lowercase = str(path), lowercase
        self.tok = BertWordPieceTokenizer(str(path), lowercase=lowercase)
        missing = [t for t in SPECIAL_TOKENS if self.tok.token_to_id(t) is None]
        if "[>]" in missing:  # a stock BERT vocab: append the modality separator
            self.tok.add_special_tokens(["[>]"])
            missing.remove("[>]")
        if missing:
            raise ValueError(f"{path}: vocabulary lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bridge_id = (
            self.tok.token_to_id(t) for t in SPECIAL_TOKENS)
        self.special_ids = frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bridge_id))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """WordPiece ids of `text`, without [CLS]/[SEP]."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts in one call (much faster than one by one)."""
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Text of WordPiece ids (special tokens dropped, `##` pieces joined to their word)."""
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def single_id(self, word: str) -> int | None:
        """The id of `word` if it is one known WordPiece token, else None ([UNK] would score every unknown
        label word alike)."""
        ids = self.encode(word)
        return ids[0] if len(ids) == 1 and ids[0] != self.unk_id else None

    def token_id(self, word: str) -> int:
        """The id of a word that must be a single WordPiece token (e.g. a label verb)."""
        ids = self.single_id(word)
        if ids is None:
            raise ValueError(f"{word!r} is not one token in {self.vocab_file} (pieces: "
                             f"{self.tok.encode(word, add_special_tokens=False).tokens})")
        return ids

    def __getstate__(self):  # tokenizers objects are rebuilt in DataLoader workers
        return {"vocab_file": self.vocab_file, "lowercase": self.lowercase}

    def __setstate__(self, state):
        self.__init__(**state)


def extend_vocab(vocab_file: str | Path, words: Iterable[str], out_dir: str | Path) -> list[str]:
    """Copy a BERT `vocab_file` (and its tokenizer_config.json) to `out_dir`, appending each of `words` that
    it does not hold as one token (e.g. a label word BERT splits, which zero-shot needs whole): WordPiece
    matches the longest piece first, so the appended word is then one token. Returns the words appended;
    their embedding rows are new (not pretrained)."""
    source, out = Path(vocab_file), Path(out_dir)
    tok = TextTokenizer(source)
    added = [w for w in dict.fromkeys(words) if tok.single_id(w) is None]
    out.mkdir(parents=True, exist_ok=True)
    config = source.with_name("tokenizer_config.json")
    if config.is_file():  # (first: vocab.txt present marks the folder as done)
        write_text(out / "tokenizer_config.json", config.read_text(encoding="utf-8"))
    lines = source.read_text(encoding="utf-8").rstrip("\n").split("\n")
    with atomic_path(out / "vocab.txt") as tmp:  # (vocab.txt marks the folder done: renamed in last, whole)
        tmp.write_text("\n".join(lines + added) + "\n", encoding="utf-8")
        still = [w for w in added if TextTokenizer(tmp, tok.lowercase).single_id(w) is None]
        if still:  # (e.g. a word with a space or a hyphen: the basic tokenizer splits it before WordPiece)
            raise ValueError(f"{source}: {still} stay more than one token even when appended (zero-shot needs "
                             "label words of one piece: no spaces or punctuation)")
    return added


def train_wordpiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000) -> Path:
    """A lowercase WordPiece vocabulary for `texts`, written to `out_dir/vocab.txt`, the same file for the same
    texts in any process.

    The special tokens, every character seen (alone and as a `##` continuation piece), then whole words by
    frequency (ties alphabetical) until `vocab_size`; a word left out is split into characters by WordPiece.
    Words are cut as BERT's normaliser and pre-tokeniser cut them. (`tokenizers`' own WordPiece trainer breaks
    ties between equally frequent merges in hash order, so two builds of one corpus got different ids and
    trained different models.) Built for small closed vocabularies such as the built-in corpus's; for real
    captions use a pretrained BERT's vocab.txt.
    """
    backend = BertWordPieceTokenizer(lowercase=True)._tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)))
    chars = sorted({c for w in counts for c in w})
    tails = sorted({c for w in counts for c in w[1:]})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in tails]
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} special tokens and characters")
    known = set(vocab)
    words = sorted((w for w in counts if w not in known), key=lambda w: (-counts[w], w))
    vocab += words[:vocab_size - len(vocab)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text(out / "vocab.txt", "\n".join(vocab) + "\n")
