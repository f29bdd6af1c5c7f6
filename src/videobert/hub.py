"""Sharing a model on the Hugging Face Hub: the model card `videobert export` writes (README.md), `videobert push`,
and loading a model by its Hub repo id wherever a model folder is accepted.

A local folder that exists always wins over a repo id of the same spelling. A repo id is fetched with
`huggingface_hub.snapshot_download`, so it lands in (and is read from) the Hub cache: with `HF_HUB_OFFLINE=1`
a filled cache works with no network. The token comes from where `huggingface_hub` looks for it
(`HF_TOKEN`, `huggingface-cli login`); it is never stored or printed here.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .cli_errors import UsageError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# a test task -> (the Hub's task type, what it measures, the data it is measured on)
TASKS = {
    "zero_shot": ("video-classification", "zero-shot verb and noun classification of held-out cooking steps"),
    "retrieval": ("text-to-video-retrieval", "text-to-video and video-to-text retrieval of held-out steps"),
    "forecasting": ("video-classification", "forecasting the next step's verb and noun"),
    "text_to_video": ("text-to-video-retrieval", "finding the clip a sentence depicts"),
    "sentiment": ("video-classification", "video sentiment"),
    "captioning": ("video-text-to-text", "dense video captioning"),
}
UPLOADED = ("README.md", "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "visual_vocab.npz",
            "extractor.json", "captioner.json", "captioner.safetensors")


def model_folder(source: str | Path, option: str = "model") -> Path:
    """The folder of a model given as a local folder or a Hugging Face Hub repo id (`ORG/NAME`, from the Hub
    cache; downloaded into it only when online)."""
    path = Path(source)
    if path.is_dir():
        return path
    name = str(source)
    if path.exists() or name.startswith((".", "/", "~")) or not REPO_ID.match(name):
        raise FileNotFoundError(f"{option}={name}: no such folder (expected a `videobert export` folder or a "
                                "Hugging Face Hub repo id ORG/NAME)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as err:  # noqa: BLE001 -- offline and not cached, no such repo, no access: say both readings
        detail = (str(err).strip().splitlines() or [""])[0]
        raise FileNotFoundError(f"{option}={name}: no such local folder, and not loadable from the Hugging Face "
                                f"Hub ({type(err).__name__}: {detail})") from None


def push(folder: str, repo: str, private: bool = False, message: str = "Upload VideoBERT model") -> None:
    """Upload a `videobert export` folder to the Hugging Face Hub (the repo is created if need be). The token
    is the one `huggingface_hub` finds (HF_TOKEN or `huggingface-cli login`).

    Args:
        folder: a folder written by `videobert export` (with its README.md model card).
        repo: the Hub repo id, ORG/NAME.
        private: create the repo private.
        message: the commit message.
    """
    src = Path(folder)
    missing = [f for f in ("README.md", "config.json", "model.safetensors", "vocab.txt") if not (src / f).is_file()]
    if missing:
        raise UsageError(f"--folder {folder}: missing {missing}; expected a folder written by `videobert export`")
    if "/" not in repo or not REPO_ID.match(repo):
        raise UsageError(f"--repo {repo}: expected a Hugging Face Hub repo id ORG/NAME")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    files = [f for f in UPLOADED if (src / f).is_file()]
    info = api.upload_folder(folder_path=str(src), repo_id=repo, repo_type="model", commit_message=message,
                             allow_patterns=files)
    print(f"pushed {len(files)} files to https://huggingface.co/{repo} ({getattr(info, 'oid', '') or 'done'})")


def find_results(ckpt_path: str | Path) -> dict[str, dict]:
    """{task: results} of every `videobert test` run of this checkpoint: `<task>_results.json` in the run folders
    of the checkpoint's experiment whose config.yaml names it (the newest run of a task wins)."""
    import yaml

    ckpt = Path(ckpt_path).resolve()
    root = ckpt.parents[2] if len(ckpt.parents) > 2 and ckpt.parent.name == "checkpoints" else None
    found: dict[str, dict] = {}
    for run in sorted(root.iterdir()) if root else []:
        if run.is_symlink() or not (run / "config.yaml").is_file():
            continue
        try:
            named = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("ckpt_path")
        except yaml.YAMLError:
            continue
        # (a relative ckpt_path is relative to where the test ran: the cwd, or a folder above the runs)
        if named and any((base / named).resolve() == ckpt for base in (Path.cwd(), *root.parents)):
            for res in run.glob("*_results.json"):
                found[res.name.removesuffix("_results.json")] = json.loads(res.read_text())
    return found


def read_results(paths: list[str]) -> dict[str, dict]:
    """{task: results} of `<task>_results.json` files."""
    out = {}
    for p in paths:
        if not p.endswith("_results.json") or not Path(p).is_file():
            raise UsageError(f"--results {p}: expected a <task>_results.json file written by `videobert test`")
        out[Path(p).name.removesuffix("_results.json")] = json.loads(Path(p).read_text())
    return out


def intervals(results: dict) -> dict[str, tuple[float, float, float]]:
    """{figure: (value, 95% low, 95% high)} of the figures that have an interval."""
    return {k: (float(v), float(results[f"{k}_ci_low"]), float(results[f"{k}_ci_high"]))
            for k, v in sorted(results.items()) if f"{k}_ci_low" in results and f"{k}_ci_high" in results
            and isinstance(v, (int, float)) and math.isfinite(v)}


def card_data(name: str, results: dict[str, dict], data: str, captioner: bool, license: str = "apache-2.0"):
    """The card's front matter (`huggingface_hub.ModelCardData`): every figure with a 95% interval of each
    task, and the interval's ends, as model-index results."""
    from huggingface_hub import EvalResult, ModelCardData

    evals = []
    for task, res in sorted(results.items()):
        kind, what = TASKS.get(task, ("other", task))
        for key, (value, low, high) in intervals(res).items():
            for metric, v, label in ((key, value, f"{key} ({low:.3f}-{high:.3f}, 95% interval)"),
                                     (f"{key}_ci_low", low, f"{key} 95% interval, low"),
                                     (f"{key}_ci_high", high, f"{key} 95% interval, high")):
                evals.append(EvalResult(task_type=kind, task_name=what, dataset_type=data, dataset_name=data,
                                        dataset_split="test", metric_type=metric, metric_value=v, metric_name=label))
    return ModelCardData(model_name=name, library_name="videobert", license=license,
                         tags=["videobert", "video-text", "visual-words", "pytorch", "safetensors"],
                         pipeline_tag="video-text-to-text" if captioner else "video-classification",
                         eval_results=evals or None)


def write_card(folder: str | Path, results: dict[str, dict] | None = None, data: str = "unknown",
               name: str | None = None, repo: str | None = None) -> Path:
    """Write README.md, the model card, into an export folder (after its other files): front matter in the
    Hub's format, then what the model was trained on, its config, its test figures and how to load it."""
    from huggingface_hub import ModelCard

    from .safe_io import write_text

    folder = Path(folder)
    results, name = results or {}, name or folder.name
    cfg = json.loads((folder / "config.json").read_text())
    extractor = json.loads((folder / "extractor.json").read_text()) if (folder / "extractor.json").is_file() else None
    captioner = (folder / "captioner.json").is_file()
    meta = card_data(name, results, data, captioner)
    body = _card_body(name, repo or f"ORG/{name}", cfg, extractor, results, data, captioner)
    card = ModelCard(f"---\n{meta.to_yaml()}\n---\n\n{body}")
    write_text(folder / "README.md", str(card))
    return folder / "README.md"


def _provenance_lines(prov: dict | None) -> list[str]:
    """The training features' provenance (videobert.provenance), one item per fact."""
    if not prov:
        return ["- feature provenance: not recorded (features extracted before provenance was recorded)"]
    ex = prov.get("extractor", {})
    lines = [f"- extractor weights: sha256 `{ex.get('weights_sha256')}`"
             + (f", model `{ex['model_id']}` at revision `{ex.get('revision')}`" if ex.get("model_id") else ""),
             f"- extractor settings: `{json.dumps(ex.get('settings', {}), sort_keys=True)}` ({ex.get('dim')} features)",
             f"- frames: {prov.get('frame_size')} px, {prov.get('crop')}; features stored as {prov.get('dtype')}",
             f"- decoder: PyAV {prov.get('pyav')}, FFmpeg "
             + ", ".join(f"{k} {v}" for k, v in (prov.get("ffmpeg") or {}).items()),
             f"- extracted with videobert {prov.get('videobert')}"]
    return lines


def _card_body(name, repo, cfg, extractor, results, data, captioner) -> str:
    kind = "CBT (clip features)" if cfg.get("feature_dim") else "VideoBERT (visual words)"
    lines = [f"# {name}", "", f"A {kind} video-language transformer trained with videobert (after VideoBERT, "
             "[arXiv:1904.01766](https://arxiv.org/abs/1904.01766)): BERT over narration word pieces and "
             "visual words (clip features quantised by hierarchical k-means)." + (" With a caption decoder." if captioner else ""),
             "", "## Training data and features", "", f"- data: `{data}`"]
    if extractor:
        lines += [f"- extractor: `{extractor.get('spec')}` at {extractor.get('fps')} fps, "
                  f"{extractor.get('clip_frames')} frames per clip, up to {extractor.get('max_visual_words')} "
                  "clips per sequence"]
        lines += _provenance_lines(extractor.get("provenance"))
        lines += [f"- {k}: `{json.dumps(v)}`" for k, v in sorted(extractor.items())
                  if k not in ("spec", "fps", "clip_frames", "max_visual_words", "provenance")]
    else:
        lines += ["- extractor: unknown (no extractor.json; the model takes features, not raw video)"]
    lines += ["", "## Config", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {json.dumps(v)} |" for k, v in cfg.items()]
    lines += ["", "## Test results", ""]
    for task, res in sorted(results.items()):
        lines += [f"### {task}: {TASKS.get(task, ('', task))[1]}", "", "| figure | value | 95% interval |",
                  "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.4f} | {lo:.4f} - {hi:.4f} |" for k, (v, lo, hi) in intervals(res).items()]
        rest = {k: v for k, v in sorted(res.items()) if "_ci_" not in k and k not in intervals(res)}
        lines += [f"| {k} | {v} | |" for k, v in rest.items()] + [""]
    if not results:
        lines += ["No test results were found for this checkpoint (run `videobert test`, then export again).", ""]
    lines += ["## Use", "", "```python", "from videobert.api import VideoBertPipeline", "",
              f'vb = VideoBertPipeline.from_pretrained("{repo}")  # a Hub repo id or a local folder',
              'vb.classify("video.mp4", verbs=["cut", "stir"], nouns=["egg", "dough"])',
              "```", "", "```bash", f"videobert index --videos my_videos --model {repo} --out my_index",
              'videobert search --index my_index "crack the egg"', "```", "",
              f"Fine-tune from it with `--model.init_args.pretrained={repo}`. Offline, `HF_HUB_OFFLINE=1` loads it "
              "from the Hugging Face cache."]
    return "\n".join(lines) + "\n"
