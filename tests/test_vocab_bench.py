"""benchmarks/vocab.py on tiny data: it runs end to end, and its reference is read back faithfully. Speed itself is
shown by the benchmark, never asserted here."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hkmeans_minibatch")


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks/vocab.py"
    spec = importlib.util.spec_from_file_location("bench_vocab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vocab_benchmark_smoke_compares_at_equal_error(capsys):
    result = _bench().main(["--smoke"])
    out = capsys.readouterr().out
    assert "reference hkmeans-minibatch 1.0.2" in out and "ratio reference / ours" in out, out
    assert "faiss IndexFlatL2" in out and "clips/s" in out, out
    assert result["within"] and abs(result["error"] / result["ref_error"] - 1) <= 0.02
    assert result["ratio"] > 0 and 0.5 < result["assign_agree"] <= 1
    assert result["assign_flat_error"] <= result["assign_tree_error"] + 1e-6  # the flat search is the nearest leaf


def test_reference_tree_is_read_back_and_its_empty_nodes_patched():
    """Three distinct points, 4 clusters: hkmeans-minibatch leaves a node empty (and would raise on it); its tree,
    read back from the per-node centroids, still puts every point on its own centroid."""
    from threadpoolctl import threadpool_limits

    bench = _bench()
    x = np.repeat(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) * 10, 400, 0)
    with threadpool_limits(1):  # (sklearn's two OpenMP threads crawl when another job holds a core)
        vocab, seconds, patched = bench.reference(x, 2, 4, seed=0)
    assert patched >= 1 and seconds > 0 and vocab.size == 16
    assert bench.quantisation_error(vocab.centroids[-1], vocab.words(x), x) < 1e-4
