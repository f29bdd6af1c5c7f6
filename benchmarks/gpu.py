"""The GPU check, one script under 5 minutes on one GPU; without a GPU it says so and exits 0.

    python benchmarks/gpu.py                       # on a machine with a CUDA GPU
    python benchmarks/gpu.py --device cpu --smoke  # the same code path on a CPU, tiny sizes (the tests run it)

1. bf16 training throughput (forward, backward, AdamW) of VideoBERT at BERT-base and BERT-large sizes with
   the paper's 20,736 visual words, VideoBERT-shaped batches (benchmarks/encoder.py): real tokens/s and
   model FLOPs utilisation against the device's dense bf16 peak (`videobert.perf`), eager and with
   `torch.compile` on each layer (as `model.compile: true`).
2. No host sync in a training step: a few steps under `torch.cuda.set_sync_debug_mode("error")`.
3. A short bf16 fit of the quickstart through the Trainer (`bf16-mixed`): the loss falls and stays finite.
4. Feature throughput of a Hugging Face video encoder (`hf:` extractors; a small random VideoMAE, since no
   weights are downloaded): clips per second.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

SIZES = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "tiny": (64, 2, 2, 128)}


def throughput(size: str, device: str, compile_layers: bool, batch: int, steps: int) -> dict:
    """Real tokens/s and MFU of bf16 training steps of VideoBERT at `size`."""
    from encoder import TEXT_VOCAB, VISUAL_VOCAB, make_batches

    from videobert.losses import pretraining_losses
    from videobert.model import VideoBert, VideoBertConfig
    from videobert.perf import flops_per_token, peak_flops

    h, layers, heads, inner = SIZES[size]
    torch.manual_seed(0)
    model = VideoBert(VideoBertConfig(TEXT_VOCAB, VISUAL_VOCAB, h, layers, heads, inner, max_positions=64)).to(device)
    if compile_layers:
        for layer in model.layers:
            layer.compile(dynamic=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    batches = [{k: v.to(device) for k, v in b.items()} for b in make_batches(steps + 3, batch)]

    def step(b):
        with torch.autocast(device, dtype=torch.bfloat16):
            losses, _ = pretraining_losses(model, b)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:3]:  # warm-up (and compilation)
        step(b)
    _sync(device)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[3:])
    seq = tokens / sum(len(b["input_ids"]) for b in batches[3:])
    start = time.perf_counter()
    for b in batches[3:]:
        step(b)
    _sync(device)
    rate = tokens / (time.perf_counter() - start)
    peak = peak_flops(torch.device(device))
    return {"size": size, "compile": compile_layers, "tokens_per_s": rate,
            "mfu": rate * flops_per_token(model.cfg, seq) / peak if peak else None}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def no_sync_steps(device: str) -> str:
    """A few training steps of the real LightningModule step under CUDA's sync debug mode ("error")."""
    from encoder import make_batches

    from videobert.losses import pretraining_losses
    from videobert.model import VideoBert, VideoBertConfig

    model = VideoBert(VideoBertConfig(30_523, 20_736, 128, 2, 2, 256, max_positions=64)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    batches = [{k: v.to(device) for k, v in b.items()} for b in make_batches(3, 16)]
    if device != "cuda":
        return "sync check: CUDA only (skipped)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in batches:
            with torch.autocast(device, dtype=torch.bfloat16):
                losses, _ = pretraining_losses(model, b)
            sum(losses.values()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return "sync check: no host sync in 3 training steps (loss + backward + AdamW)"
    except RuntimeError as err:
        return f"sync check: FAILED, a step synchronised with the host: {err}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def quickstart_fit(device: str, steps: int, extra: list[str]) -> str:
    """`videobert fit` of the quickstart in bf16 through the Trainer: loss at the start and the end."""
    import csv

    from videobert.cli import lightning_main

    out = Path(tempfile.mkdtemp())
    accel = "gpu" if device == "cuda" else "cpu"
    cli = lightning_main(["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--trainer.precision=bf16-mixed",
                          f"--trainer.accelerator={accel}", "--trainer.devices=1", f"--trainer.max_steps={steps}",
                          "--trainer.log_every_n_steps=10", "--trainer.limit_val_batches=0",
                          "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
                          "--trainer.logger=[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: "
                          "{save_dir: ., name: csv}}]", *extra])
    rows = [r for f in Path(cli.trainer.default_root_dir).glob("csv/*/metrics.csv") for r in csv.DictReader(open(f))]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    mfu = [float(r["perf/mfu"]) for r in rows if r.get("perf/mfu")]
    ok = bool(losses) and all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0]
    return (f"quickstart bf16 fit, {steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
            f"({'falls, finite' if ok else 'FAILED'}); perf/mfu last {mfu[-1] if mfu else float('nan'):.4f}")


def hf_features(device: str, clips: int) -> str:
    """Clips per second of a small random VideoMAE through the `hf:` extractor."""
    import transformers

    from videobert.hf_extractors import load_hf_extractor

    folder = Path(tempfile.mkdtemp()) / "videomae"
    cfg = transformers.VideoMAEConfig(image_size=112, num_frames=16, hidden_size=384, num_hidden_layers=6,
                                      num_attention_heads=6, intermediate_size=1536)
    transformers.VideoMAEModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    ext = load_hf_extractor(str(folder)).to(device).eval()
    x = torch.randint(0, 255, (clips, 30, ext.size, ext.size, 3), dtype=torch.uint8, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        ext(x[:2])
        _sync(device)
        start = time.perf_counter()
        ext(x)
        _sync(device)
    return f"HF extractor (random VideoMAE, 6 layers, 112 px, 16 frames): {clips / (time.perf_counter() - start):.0f} clips/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and steps (a code-path check, e.g. on a CPU)")
    ap.add_argument("--fit_args", default="[]", help="json list of extra `videobert fit` arguments for step 3")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU: torch.cuda.is_available() is False; nothing measured (run it on a machine with a CUDA GPU)")
        return
    start = time.time()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}")
    sizes, batch, steps = (["tiny"], 4, 2) if args.smoke else (["base", "large"], 64, 10)
    for size in sizes:
        for compiled in (False,) if args.smoke else (False, True):  # (compiling on a CPU takes minutes)
            r = throughput(size, args.device, compiled, batch, steps)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (unknown peak)"
            print(f"bf16 train BERT-{size}{' compiled' if compiled else ''}: {r['tokens_per_s']:,.0f} real tokens/s, "
                  f"MFU {mfu}")
    print(no_sync_steps(args.device))
    print(quickstart_fit(args.device, 20 if args.smoke else 300, json.loads(args.fit_args)))
    print(hf_features(args.device, 4 if args.smoke else 256))
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
