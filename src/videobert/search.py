"""Text-to-video search over a collection of videos with an exported model (no Lightning needed).

    videobert index  --videos path/to/videos --model models/videobert-quickstart --out my_index
    videobert search --index my_index "stir the egg"          # top clips: video, start, end, score
    videobert search --index my_index "stir the egg" --json   # the same, for scripts

The unit is a window of `window` consecutive clips (default 3: 4.5 s). For each window the index keeps
(a) its video embedding (`VideoBertPipeline.embed_video`), the first stage: faiss inner product against
the query's text embedding picks `candidates` windows (all of them for a collection smaller than that);
(b) what the model reads off it through the zero-shot template "now let me show you how to [MASK] the
[MASK]": the `keep` most likely WordPiece tokens at each [MASK], with log-probabilities. The candidates
are reranked by the generative scorer of the retrieval evaluation: log p(a query word at the verb [MASK])
+ log p(a query word at the noun [MASK]), each the best over the query's words (a token outside a
window's kept list scores that list's lowest value). No model runs at query time but the text encoder.
Incremental: `index` on the same folder embeds only videos that are new or changed (size, mtime) and drops
the ones that are gone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .cli_errors import check_range
from .safe_io import atomic_path, folder_lock, write_text
from .shards import VIDEO_EXTS
from .tasks.zero_shot import TEMPLATE, template_masks

ARRAYS = ("embedding", "verb_ids", "verb_lp", "noun_ids", "noun_lp", "video", "start", "end")


def _window_rows(pipe, path: Path, window: int, keep: int) -> dict[str, np.ndarray]:
    """The index rows of one video: one per window of `window` clips."""
    feats, clips = pipe._decode(path)
    wins = [(i, min(len(feats), i + window)) for i in range(0, len(feats), window)]
    emb = np.stack([pipe.embed_video(feats[a:b]) for a, b in wins])
    ids = pipe.tok.encode(TEMPLATE)
    masks = template_masks(pipe.tok, ids)
    h = pipe._hidden(pipe._batch([ids] * len(wins), [feats[a:b] for a, b in wins]))[:, masks]  # (W, 2, C)
    rows = {"embedding": emb, "start": np.array([clips[a][0] for a, _ in wins]),
            "end": np.array([clips[b - 1][1] for _, b in wins])}
    with torch.no_grad():
        for i, name in enumerate(("verb", "noun")):
            lp = pipe.model.token_logits(h[:, i], slice(0, pipe.tok.vocab_size)).float().log_softmax(-1)
            top = lp.topk(min(keep, lp.shape[1]), -1)
            rows[f"{name}_ids"], rows[f"{name}_lp"] = top.indices.cpu().numpy(), top.values.cpu().numpy()
    return rows


def build_index(videos: str, model: str, out: str, window: int = 3, keep: int = 64) -> Path:
    """Index every video of the folder `videos` with the export folder `model` into the folder `out`; a rerun
    embeds only new or changed videos. Returns `out`. Jobs indexing into one folder take turns (a lock)."""
    with folder_lock(out, "index"):
        return _build_index(videos, model, out, window, keep)


def _build_index(videos: str, model: str, out: str, window: int, keep: int) -> Path:
    from .api import VideoBertPipeline

    out_dir, found = Path(out), sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise FileNotFoundError(f"{videos}: no videos ({', '.join(VIDEO_EXTS)})")
    meta, old = _load(out_dir) if (out_dir / "index.json").is_file() else ({"videos": {}}, None)
    model = str(Path(model).resolve()) if Path(model).is_dir() else model  # (else a Hugging Face Hub repo id)
    if meta.get("model") not in (None, model) or meta.get("window", window) != window:
        raise ValueError(f"{out}: built with model {meta.get('model')} and window {meta.get('window')}; this run "
                         f"asks {model} and {window}: use another --out")
    pipe, parts, videos_meta, skipped, added = VideoBertPipeline.from_pretrained(model), [], {}, [], 0
    for path in found:
        stamp = {"size": path.stat().st_size, "mtime": path.stat().st_mtime}
        prev = meta["videos"].get(path.name)
        if prev is not None and {k: prev[k] for k in stamp} == stamp and old is not None:  # (unchanged: reuse)
            rows = {k: v[old["video"] == prev["id"]] for k, v in old.items()}
        else:
            try:
                rows = _window_rows(pipe, path, window, keep)
                added += 1
            except Exception as err:  # noqa: BLE001 -- one bad video is a counted skip, the others are indexed
                skipped.append(f"{path.name}: {err}")
                continue
        vid = len(videos_meta)
        rows["video"] = np.full(len(rows["start"]), vid)
        videos_meta[path.name] = {"id": vid, "video": path.stem, "source": str(path.resolve()), **stamp}
        parts.append(rows)
    if not parts:
        raise ValueError(f"{videos}: no video could be indexed ({skipped})")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "windows.npz") as tmp, open(tmp, "wb") as f:  # (each file renamed in whole)
        np.savez(f, **{k: np.concatenate([p[k] for p in parts]) for k in ARRAYS})
    write_text(out_dir / "index.json", json.dumps({"model": model, "window": window,
                                                   "keep": keep, "videos": videos_meta}, indent=1))
    print(f"index: {len(videos_meta)} videos ({added} embedded now, {len(videos_meta) - added} kept), "
          f"{sum(len(p['start']) for p in parts)} windows -> {out_dir}; skipped {len(skipped)}")
    for line in skipped:
        print(f"skip {line}")
    return out_dir


def _load(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((folder / "index.json").read_text())
    with np.load(folder / "windows.npz") as f:
        return meta, {k: f[k] for k in ARRAYS}


def _token_scores(ids: np.ndarray, lp: np.ndarray, query: list[int]) -> np.ndarray:
    """(windows,) the best log-probability of any query token at one [MASK] (the kept list's floor if absent)."""
    best = np.full(len(ids), -np.inf)
    for t in query:
        hit = ids == t
        best = np.maximum(best, np.where(hit.any(1), np.where(hit, lp, -np.inf).max(1), lp[:, -1]))
    return best


def search(index: str, query: str, top: int = 10, candidates: int = 1000) -> list[dict]:
    """The `top` windows for `query`: faiss first stage on the embeddings, generative rerank (see above)."""
    import faiss

    from .api import VideoBertPipeline

    meta, rows = _load(Path(index))
    pipe = VideoBertPipeline.from_pretrained(meta["model"])
    tokens = [t for t in pipe.tok.encode(query) if t not in pipe.tok.special_ids]
    if not tokens:
        raise ValueError(f"query {query!r}: no word the model's vocabulary knows")
    flat = faiss.IndexFlatIP(rows["embedding"].shape[1])
    flat.add(np.ascontiguousarray(rows["embedding"], np.float32))
    _, cand = flat.search(pipe.embed_text(query)[None].astype(np.float32), min(candidates, flat.ntotal))
    cand = cand[0][cand[0] >= 0]
    score = (_token_scores(rows["verb_ids"][cand], rows["verb_lp"][cand], tokens)
             + _token_scores(rows["noun_ids"][cand], rows["noun_lp"][cand], tokens))
    order = cand[np.argsort(-score, kind="stable")][:top]
    names = {v["id"]: v for v in meta["videos"].values()}
    by_row = dict(zip(cand.tolist(), score.tolist()))
    return [{"video": names[int(rows["video"][r])]["video"], "source": names[int(rows["video"][r])]["source"],
             "start": float(rows["start"][r]), "end": float(rows["end"][r]), "score": by_row[int(r)]} for r in order]


def index_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="videobert index", description="index a folder of videos for search")
    p.add_argument("--videos", required=True, help="a folder of videos (mp4, webm, mkv, avi, mov)")
    p.add_argument("--model", required=True, help="a `videobert export` folder or a Hugging Face Hub repo id")
    p.add_argument("--out", required=True, help="the index folder (a rerun embeds only new or changed videos)")
    p.add_argument("--window", type=int, default=3, help="clips per indexed window")
    args = p.parse_args(argv)
    check_range("--window", args.window, 1)
    build_index(args.videos, args.model, args.out, args.window)


def search_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="videobert search", description="text-to-video search in an index")
    p.add_argument("query", help="what to look for, in words (e.g. \"cut the tomato\")")
    p.add_argument("--index", required=True, help="a folder written by `videobert index`")
    p.add_argument("--top", type=int, default=10, help="how many hits to print (default: 10)")
    p.add_argument("--json", action="store_true", help="print the hits as json")
    args = p.parse_args(argv)
    check_range("--top", args.top, 1)
    hits = search(args.index, args.query, args.top)
    if args.json:
        json.dump(hits, sys.stdout, indent=1)
        print()
        return
    for i, h in enumerate(hits, 1):
        print(f"{i:3d}  {h['video']:<28} {h['start']:7.1f} - {h['end']:7.1f} s   score {h['score']:8.3f}")
