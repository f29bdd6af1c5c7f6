"""Training throughput in model FLOPs: FLOPs per token from the encoder's config, the device's peak, and MFU.

FLOPs per real (non-padding) token of a training step, forward and backward (Kaplan et al. 2020; PaLM's
MFU): 6 N + 12 L d T, with N = L (4 d^2 + 2 d i) the encoder layers' weights (attention projections and
MLP), L layers of width d and MLP width i, T the tokens of the sequence (attention scores and weighted
sums). Embedding lookups and the output heads, which score masked positions only, are left out.
Peak: `VIDEOBERT_PEAK_FLOPS` if set (e.g. a vendor's figure); on a GPU the dense bf16/fp16 tensor-core peak
of its name (the table below); on a CPU the fp32 matmul throughput measured once in this process (so a
CPU MFU reads "share of what a big matmul reaches here").
"""
from __future__ import annotations

import os
import time

import torch

# dense bf16 / fp16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name()
GPU_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
            "A10": 125e12, "A6000": 155e12, "4090": 165e12, "V100": 125e12, "T4": 65e12}


def flops_per_token(cfg, seq_len: float) -> float:
    """Training FLOPs per real token of a sequence of `seq_len` tokens: 6 N + 12 L d T (see the module)."""
    d, layers, inner = cfg.hidden_size, cfg.num_layers, cfg.intermediate_size
    weights = layers * (4 * d * d + 2 * d * inner)
    return 6.0 * weights + 12.0 * layers * d * seq_len


def measured_cpu_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of this process's threads (the best of `repeats` n x n products)."""
    gen = torch.Generator().manual_seed(0)  # (its own generator: measuring must not move a run's random stream)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


_CPU_PEAK: float | None = None


def peak_flops(device: torch.device) -> float | None:
    """The peak this run's MFU is measured against (see the module), or None for an unknown GPU."""
    global _CPU_PEAK
    if os.environ.get("VIDEOBERT_PEAK_FLOPS"):
        return float(os.environ["VIDEOBERT_PEAK_FLOPS"])
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK.items() if k in name), None)
    if _CPU_PEAK is None:
        _CPU_PEAK = measured_cpu_peak()
    return _CPU_PEAK
