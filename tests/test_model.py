import pytest
import torch
import torch.nn.functional as F

from videobert.losses import pretraining_losses
from videobert.model import VideoBert, VideoBertConfig
from videobert.sequences import IGNORE


def tiny(**kw):
    torch.manual_seed(0)
    cfg = VideoBertConfig(text_vocab_size=40, visual_vocab_size=20, hidden_size=32, num_layers=2, num_heads=4,
                          intermediate_size=64, max_positions=16, dropout=0.0, **kw)
    return VideoBert(cfg).eval()


def test_attention_matches_a_reference_implementation():
    m = tiny()
    att = m.layers[0].attention
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    q, k, v = (p(x).view(2, 5, 4, 8).transpose(1, 2) for p in (att.query, att.key, att.value))
    scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = att.dense((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 32))
    real = mask.reshape(-1).nonzero().squeeze(1)  # the model passes real tokens only, (N, C)
    out = att(x.reshape(10, 32)[real], real, (2, 5), mask[:, None, None, :])
    torch.testing.assert_close(out, ref.reshape(10, 32)[real], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens():
    m = tiny()
    ids = torch.tensor([[2, 7, 8, 5, 45, 3]])
    seg = torch.tensor([[0, 0, 0, 1, 1, 1]])
    h = m(ids, seg, torch.ones_like(ids, dtype=torch.bool))
    padded = m(torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1), torch.cat([seg, torch.zeros(1, 3, dtype=torch.long)], 1),
               torch.tensor([[True] * 6 + [False] * 3]))
    torch.testing.assert_close(padded[:, :6], h, atol=1e-5, rtol=1e-5)
    assert (padded[:, 6:] == 0).all()


def test_activation_checkpointing_gives_the_same_gradients():
    m = tiny().train()  # (checkpointing applies in training; dropout is 0, so both passes see one network)
    ids = torch.tensor([[2, 7, 8, 5, 45, 3], [2, 9, 3, 0, 0, 0]])
    args = (ids, torch.zeros_like(ids), ids != 0)
    grads, calls = [], []
    counter = m.layers[0].intermediate.register_forward_hook(lambda *_: calls.append(1))
    for flag in (False, True):
        m.zero_grad()
        m.cfg.checkpointing = flag
        calls.clear()
        m(*args).pow(2).sum().backward()
        grads.append((m.layers[0].intermediate.weight.grad.clone(), len(calls)))
    counter.remove()
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert (grads[0][1], grads[1][1]) == (1, 2)  # checkpointed: the layer ran again during backward


def test_losses_only_at_masked_positions_and_per_modality():
    m = tiny()
    ids = torch.tensor([[2, 4, 8, 5, 4, 3], [2, 9, 4, 5, 50, 3]])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 1], labels[0, 4], labels[1, 2] = 11, 45, 12
    batch = {"input_ids": ids, "segment_ids": torch.tensor([[0, 0, 0, 1, 1, 1]] * 2),
             "attention_mask": torch.ones_like(ids, dtype=torch.bool), "labels": labels,
             "align_label": torch.tensor([1, IGNORE])}
    losses, preds = pretraining_losses(m, batch)
    h = m(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
    full = m.token_logits(h.reshape(-1, 32))  # every position over the whole vocabulary
    text = full.view(2, 6, -1)[[0, 1], [1, 2], :40]
    torch.testing.assert_close(losses["mlm_loss"], F.cross_entropy(text, torch.tensor([11, 12])))
    vis = full.view(2, 6, -1)[0, 4, 40:]
    torch.testing.assert_close(losses["mvm_loss"], F.cross_entropy(vis[None], torch.tensor([5])))
    torch.testing.assert_close(losses["align_loss"], F.cross_entropy(m.align_logits(h)[:1], torch.tensor([1])))
    assert preds["mvm"][1].tolist() == [5]

    batch["labels"] = torch.full_like(ids, IGNORE)  # nothing masked: zero loss, graph intact
    losses, _ = pretraining_losses(m, batch)
    assert losses["mlm_loss"].item() == 0 and losses["mlm_loss"].requires_grad


@pytest.mark.slow  # torch.compile on a CPU takes ~30-60 s; run with `make test-full`
def test_compiled_layers_match_and_keep_parameter_names():
    m = tiny()
    ref = tiny()
    ref.load_state_dict(m.state_dict())
    for layer in m.layers:  # what model.compile=true does
        layer.compile(dynamic=True)
    m.eval(), ref.eval()
    for t in (7, 11):  # dynamic shapes: a new length does not recompile
        ids = torch.randint(5, 40, (3, t))
        mask = torch.ones(3, t, dtype=torch.bool)
        mask[1, t - 2:] = False
        args = (ids, torch.zeros_like(ids), mask)
        torch.testing.assert_close(m(*args), ref(*args), atol=1e-5, rtol=1e-5)
    m.train()
    m(*args).sum().backward()
    assert list(m.state_dict()) == list(ref.state_dict())  # checkpoints stay loadable without compile


def test_initial_weights_follow_the_seed_not_what_ran_before(monkeypatch):
    """A first run builds its data in prepare_data, which draws from torch's generator; its model must still
    start from the same weights as a rerun with the same seed (found by `videobert spread`)."""
    from types import SimpleNamespace

    import lightning as L

    from videobert.module import VideoBertModule

    dm = SimpleNamespace(max_sequence_length=lambda: 12, vocab_sizes=lambda: (40, 9), feature_dim=lambda: 0)

    def built(draw_before: int) -> dict:
        L.seed_everything(5, verbose=False)
        torch.rand(draw_before)  # (what a data build would draw)
        module = VideoBertModule(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=16,
                                 init_visual_from_centroids=False)
        module._trainer = SimpleNamespace(datamodule=dm)
        module.configure_model()
        return module.model.state_dict()

    first, rerun = built(1000), built(0)
    assert all(torch.equal(first[k], rerun[k]) for k in first)


def test_gpu_check_skips_without_a_gpu_and_runs_its_code_path_on_the_cpu(quickstart_cache, tmp_path):
    """benchmarks/gpu.py: "no GPU" and exit 0 here; `--device cpu --smoke` runs every step of it, tiny."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import tiny_data_args
    from .test_ddp import clean_env

    root = Path(__file__).resolve().parents[1]
    if not torch.cuda.is_available():
        out = subprocess.run([sys.executable, "benchmarks/gpu.py"], cwd=root, env=clean_env(), capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.startswith("no GPU:"), out.stdout + out.stderr
    fit = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()] + [
        "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2", "--model.intermediate_size=64",
        "--model.warmup_steps=2", "--model.lr=3e-3", "--trainer.log_every_n_steps=2"]
    out = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--smoke", "--fit_args", json.dumps(fit)],
                         cwd=root, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "bf16 train BERT-tiny" in out.stdout and "MFU" in out.stdout and "sync check" in out.stdout
    assert "falls, finite" in out.stdout and "clips/s" in out.stdout, out.stdout


@pytest.mark.parametrize("groups", [(), (4, 5)])
def test_untied_visual_output_scores_visual_words_by_its_own_matrix(groups):
    m = tiny(visual_groups=groups, untie_visual_output=True)
    tied = tiny(visual_groups=groups)
    m.load_state_dict(tied.state_dict(), strict=False)  # same encoder and embeddings, other visual outputs
    h = torch.randn(3, 32)
    text = torch.tensor([5, 9, 11])
    torch.testing.assert_close(m.token_logits(h, text), tied.token_logits(h, text))  # text: tied as before
    visual = slice(40, 60)
    assert not torch.allclose(m.token_logits(h, visual), tied.token_logits(h, visual))
    with torch.no_grad():  # scored by the decoders, not the input embeddings
        for d, table in zip(m.visual_decoders, [t.weight for t in m.embeddings.group_embeddings] if groups
                            else [m.embeddings.word_embeddings.weight[40:]]):
            d.copy_(table)
    torch.testing.assert_close(m.token_logits(h, visual), tied.token_logits(h, visual))
    if not groups:  # an index tensor across both ranges picks the same rows as the slices
        both = torch.tensor([3, 45, 59])
        full = m.token_logits(h, slice(0, 60))
        torch.testing.assert_close(m.token_logits(h, both), full[:, both])
    with pytest.raises(ValueError, match="CBT"):
        VideoBertConfig(40, 1, feature_dim=8, untie_visual_output=True)
