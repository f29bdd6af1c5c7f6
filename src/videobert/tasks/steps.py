"""What every evaluation task reads from a held-out video: its ground-truth steps, the clips and the
narration inside a step, and the token ids of the clips; plus gathering a task's items across ranks and
computing on rank 0 for all."""
from __future__ import annotations

import numpy as np

from ..shards import sample_key


def steps_of(truth: dict, video_id: str) -> list[dict]:
    if video_id not in truth["videos"]:
        raise KeyError(f"video {video_id!r} has no ground truth in the evaluation sidecar")
    return truth["videos"][video_id]["steps"]


def clip_mids(meta: dict) -> np.ndarray:
    """The middle time of every clip of a video (its `json`)."""
    return np.asarray(meta["clips"], np.float64).reshape(-1, 2).mean(1)


def step_clips(mids: np.ndarray, step: dict, limit: int) -> np.ndarray:
    """Indices of the clips whose middle lies in the step, at most `limit`."""
    return np.flatnonzero((mids >= step["start"]) & (mids < step["end"]))[:limit]


def step_text(meta: dict, step: dict) -> str:
    """The narration of a step: the caption sentences whose middle lies in it."""
    return " ".join(s["text"] for s in meta["sentences"] if step["start"] <= (s["start"] + s["end"]) / 2 < step["end"])


def clip_token_ids(tok, vocab, features: np.ndarray, continuous: bool) -> np.ndarray:
    """Token ids of the clips: their visual words, or for CBT (`continuous`) the one placeholder id."""
    words = np.zeros(len(features), np.int64) if continuous else vocab.words(features)
    return words + tok.vocab_size


def pair_ids(verbs: list[str], nouns: list[str]) -> dict[tuple[str, str], int]:
    """(verb, noun) -> an id for every pair of the label vocabularies, verb-major."""
    return {(v, n): i * len(nouns) + j for i, v in enumerate(verbs) for j, n in enumerate(nouns)}


def depicted_pairs(vocab, pair_id: dict, videos, truth: dict) -> np.ndarray:
    """(words,) the id (of `pair_id`: (verb, noun) -> id) of the pair most training clips of each visual word
    show (-1: mostly no action, or never used): `videos` decoded training videos, `truth` their ground truth."""
    counts = np.zeros((vocab.size, len(pair_id) + 1), np.int64)  # (last column: no action)
    for video in videos:
        steps = truth["videos"].get(video["json"]["video_id"], {}).get("steps", [])
        for word, mid in zip(vocab.words(video["features"]), clip_mids(video["json"])):
            step = next((s for s in steps if s["start"] <= mid < s["end"]), None)
            counts[word, -1 if step is None or step["verb"] is None else pair_id[(step["verb"], step["noun"])]] += 1
    labels = counts.argmax(1)
    return np.where((labels == len(pair_id)) | (counts.sum(1) == 0), -1, labels)


def video_key(video: dict) -> str:
    """The shard sample key of a decoded test video (what a thumbnail source looks clips up by)."""
    return video.get("__key__") or sample_key(video["json"]["video_id"])


def nearest_clips(features: np.ndarray, centroids: np.ndarray, clips: list) -> tuple[list, list[float]]:
    """For each centroid row, the clip (of `clips`, one per feature row) nearest to it, and the squared distance."""
    f = np.asarray(features, np.float32)
    d = (centroids * centroids).sum(1)[:, None] - 2 * centroids @ f.T + (f * f).sum(1)[None]  # (centroids, clips)
    near = d.argmin(1)
    return [clips[j] for j in near], [round(float(d[i, j]), 3) for i, j in enumerate(near)]


def gather_objects(obj) -> list:
    """`obj` from every rank, in rank order, under torch.distributed (every rank must call this); [obj] alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def print_rank_zero(message: str) -> None:
    """Print on rank 0 only (or in a single process); no Lightning needed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(message, flush=True)


def on_rank_zero(fn, *args):
    """`fn(*args)` computed on rank 0 alone and sent to every rank (every rank must call this), for work that
    must not run once per rank (e.g. one Java process per GPU); an exception on rank 0 is raised on all."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn(*args)
    out = [None]
    if dist.get_rank() == 0:
        try:
            out = [(fn(*args), None)]
        except Exception as err:  # noqa: BLE001  (sent on: the other ranks fail with it, not wait forever)
            out = [(None, err)]
    dist.broadcast_object_list(out, src=0)
    result, err = out[0]
    if err is not None:
        raise err
    return result
