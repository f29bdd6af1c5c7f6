"""Factorised visual words: the vocabulary per feature group, the model's sum of code embeddings and one softmax
per group, export and reload, and a fit + every test task through the CLI."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import wandb

from videobert.factorised import FactorisedVocab, parse_groups
from videobert.model import VideoBert, VideoBertConfig
from videobert.vq import VisualVocab, hierarchical_kmeans

from .test_end_to_end import ROOT, _cli_args


def test_vocabulary_per_group_numbers_words_in_the_product_space(tmp_path):
    rng = np.random.default_rng(0)
    looks, motions = np.eye(3, dtype=np.float32) * 5, np.eye(4, dtype=np.float32) * 5
    a, b = rng.integers(3, size=200), rng.integers(4, size=200)
    x = np.concatenate([looks[a], motions[b]], 1) + rng.normal(0, 0.1, (200, 7)).astype(np.float32)
    vocab = FactorisedVocab([hierarchical_kmeans(x[:, :3], 1, 3), hierarchical_kmeans(x[:, 3:], 1, 4)], [(0, 3), (3, 7)])
    words = vocab.words(x)
    assert vocab.size == 12 and vocab.group_sizes == [3, 4] and words.max() < 12
    codes = vocab.codes(words)
    assert (words == codes[:, 0] * 4 + codes[:, 1]).all()
    # each group's code tells its own factor, whatever the other one is
    assert all(len(set(codes[a == i, 0])) == 1 for i in range(3)) and all(len(set(codes[b == j, 1])) == 1 for j in range(4))
    assert vocab.centroids[-1].shape == (12, 7)
    assert np.allclose(vocab.centroids[-1][words], x, atol=0.5)  # a word's "centroid": its groups' side by side
    vocab.counts = np.bincount(words, minlength=12)
    vocab.save(tmp_path / "v.npz")
    back = VisualVocab.load(tmp_path / "v.npz")
    assert isinstance(back, FactorisedVocab) and (back.words(x) == words).all() and (back.counts == vocab.counts).all()
    with pytest.raises(ValueError, match="covering the 7 feature columns"):
        parse_groups([[0, 3], [4, 7]], 7)
    with pytest.raises(ValueError, match="dim 7"):
        vocab.words(x[:, :5])


@torch.no_grad()
def test_model_sums_code_embeddings_and_predicts_one_softmax_per_group():
    torch.manual_seed(0)
    cfg = VideoBertConfig(10, 12, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=8,
                          dropout=0.0, visual_groups=(3, 4))
    model = VideoBert(cfg).eval()
    emb = model.embeddings
    ids = torch.tensor([[2, 10 + 7]])  # visual word 7 = codes (1, 3)
    assert emb.codes(torch.tensor(7)).tolist() == [1, 3]
    tokens = emb.factorised(ids)[0]
    assert torch.allclose(tokens[1], emb.group_embeddings[0].weight[1] + emb.group_embeddings[1].weight[3])
    assert torch.allclose(tokens[0], emb.word_embeddings.weight[2])
    h = torch.randn(5, 16)
    logp = model.token_logits(h, slice(10, 22))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(5), atol=1e-5)  # a distribution over the 12 words
    y = torch.tensor([0, 7, 11, 5, 3])
    t = model.lm_norm(F.gelu(model.lm_transform(h)))
    groups = [t @ g.weight.T + model.lm_bias[10 + off:10 + off + g.num_embeddings]
              for g, off in zip(emb.group_embeddings, (0, 3))]
    by_group = F.cross_entropy(groups[0], y // 4) + F.cross_entropy(groups[1], y % 4)
    assert float(F.cross_entropy(logp, y)) == pytest.approx(float(by_group), rel=1e-5)  # the sum of the groups' losses
    text = model.token_logits(h, slice(0, 10))
    assert text.shape == (5, 10)
    with pytest.raises(ValueError, match="product must be visual_vocab_size"):
        VideoBertConfig(10, 13, visual_groups=(3, 4))


def test_factorised_quickstart_fits_exports_and_runs_every_task(quickstart_cache, tmp_path):
    from videobert.cli import export_checkpoint, lightning_main
    from videobert.pretrained import load_pretrained

    extra = ["--data.init_args.factorised=true", "--data.init_args.vocab_levels=1", "--data.init_args.vocab_k=3"]
    cli = lightning_main(["fit", *_cli_args(quickstart_cache, tmp_path / "run", extra)])
    wandb.finish()
    assert cli.model.model.cfg.visual_groups == (3, 3) and cli.model.model.cfg.visual_vocab_size == 9
    assert (quickstart_cache / "visual_vocab-1x3-factorised.npz").exists()  # (beside the plain one: one cache)
    ckpt = tmp_path / "run/ckpt/last.ckpt"
    export_checkpoint(str(ckpt), str(tmp_path / "export"))
    model, _, vocab = load_pretrained(tmp_path / "export")
    assert model.cfg.visual_groups == (3, 3) and isinstance(vocab, FactorisedVocab)
    for task, key in (("zero_shot", "test/zero_shot/verb_top1"), ("forecasting", "test/forecasting/t1_top5"),
                      ("text_to_video", "test/text_to_video/top5"), ("retrieval", "test/retrieval/generative_t2v_r1")):
        config = [] if task == "zero_shot" else ["--config", str(ROOT / f"experiments/eval/{task}.yaml")]
        test = lightning_main(["test", *_cli_args(quickstart_cache, tmp_path / task, extra), *config,
                               f"--ckpt_path={ckpt}"])
        wandb.finish()
        assert 0.0 <= test.trainer.callback_metrics[key] <= 1.0, task


def test_pretraining_loss_is_the_product_cross_entropy_without_building_it():
    from videobert.losses import _factorised_mvm

    torch.manual_seed(1)
    cfg = VideoBertConfig(10, 12, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=8,
                          visual_groups=(3, 4))
    model = VideoBert(cfg)
    h, words = torch.randn(6, 16), torch.tensor([0, 3, 7, 11, 5, 8])
    loss, (pred, target) = _factorised_mvm(model, h, words)
    product = model.token_logits(h, slice(10, 22))
    assert float(loss) == pytest.approx(float(F.cross_entropy(product, words)), rel=1e-5)
    assert pred.tolist() == product.argmax(-1).tolist() and target.tolist() == words.tolist()
