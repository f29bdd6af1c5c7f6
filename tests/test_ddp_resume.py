"""Exact mode resumed mid-epoch: every remaining sample of the epoch once, over 2 ranks x 2 workers (gloo)."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from videobert.testing import make_feature_shards, make_text_and_vocab

ROOT = Path(__file__).resolve().parents[1]


def batches(out: Path, phase: str) -> list[dict]:
    return [json.loads(line) for r in (0, 1) if (out / f"keys.{phase}.rank{r}.jsonl").exists()
            for line in (out / f"keys.{phase}.rank{r}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_exact_run_killed_mid_epoch_resumes_every_sample_once(tmp_path):
    from tests.test_ddp import clean_env

    root, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    keys = make_feature_shards(root / "train", [6, 6, 6, 6], sentences=1, prefix="t")  # 4 readers, 3 batches each
    make_text_and_vocab(root, root / "train")
    for phase in ("first", "resume"):
        with open(out / f"{phase}.log", "w") as log:  # (a file, not a pipe: a killed rank's workers may linger)
            proc = subprocess.run([sys.executable, "tests/ddp_resume.py", str(root), str(out), phase], cwd=ROOT,
                                  env=clean_env(), stdout=log, stderr=subprocess.STDOUT, timeout=300)
        log_text = (out / f"{phase}.log").read_text()
        if phase == "first":
            assert proc.returncode == -9, log_text[-3000:]  # SIGKILL at the start of batch 3, as the script does
            assert (out / "ckpt/last.ckpt").is_file()
        else:
            assert proc.returncode == 0, log_text[-5000:]
            assert "resuming epoch 0 after 2 of its 6 batches per rank" in log_text
    first, resumed = batches(out, "first"), batches(out, "resume")
    assert sorted(b["batch"] for b in first) == [0, 0, 1, 1, 2, 2]  # batch 2 trained, not in the checkpoint
    assert sorted(b["batch"] for b in resumed) == [2, 2, 3, 3, 4, 4, 5, 5]
    seen = Counter(k for b in first if b["batch"] < 2 for k in b["keys"]) + Counter(k for b in resumed for k in b["keys"])
    assert seen == Counter(keys)  # every sample of the epoch exactly once over both runs, ranks and workers
