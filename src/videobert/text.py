"""BERT WordPiece text tokenization through `tokenizers`: trained on captions or loaded from a vocab.txt.

`[>]` separates text from visual words (the paper's token); it is a special token of the text vocabulary.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import BertWordPieceTokenizer

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

    def token_id(self, word: str) -> int:
        """The id of a word that must be a single WordPiece token (e.g. a label verb)."""
        ids = self.encode(word)
        if len(ids) != 1 or ids[0] == self.unk_id:  # ([UNK] would score every unknown label word alike)
            raise ValueError(f"{word!r} is not one token in {self.vocab_file} (pieces: "
                             f"{self.tok.encode(word, add_special_tokens=False).tokens})")
        return ids[0]

    def __getstate__(self):  # tokenizers objects are rebuilt in DataLoader workers
        return {"vocab_file": self.vocab_file, "lowercase": self.lowercase}

    def __setstate__(self, state):
        self.__init__(**state)


def train_wordpiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000) -> Path:
    """Train a lowercase WordPiece vocabulary on `texts`; write `out_dir/vocab.txt`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tok.save_model(str(out))
    return out / "vocab.txt"
