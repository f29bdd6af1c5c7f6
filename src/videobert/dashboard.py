"""The W&B dashboard as code: `videobert dashboard --entity E --project P` saves a workspace (W&B's
`wandb-workspaces` library) with the sections a VideoBERT researcher reads.

Every metric key here is one that `videobert fit` and `videobert test` log (tests/test_dashboard.py checks
them against a real quickstart fit and test): renaming a metric without this file fails that test.
"""
from __future__ import annotations

ZS, RET = "test/zero_shot/", "test/retrieval/"


def _with_interval(key: str) -> list[str]:
    return [key, f"{key}_ci_low", f"{key}_ci_high"]


# (section, [(panel kind, title, keys)]): "line" = curves over steps; "bar" = each run's final value
# (a figure beside its 95% interval); "table" = a W&B table; "media" = images
SECTIONS = [
    ("Losses", [
        ("line", "loss", ["train/loss", "val/loss"]),
        ("line", "masked words (MLM)", ["train/mlm_loss", "val/mlm_loss"]),
        ("line", "masked visual words (MVM)", ["train/mvm_loss", "val/mvm_loss"]),
        ("line", "alignment loss", ["train/align_loss", "val/align_loss"]),
        ("line", "masked-token accuracy", ["train/mlm_acc", "val/mlm_acc", "train/mvm_acc", "val/mvm_acc"]),
        ("line", "learning rate", ["lr-AdamW/pg1"]),
    ]),
    ("Zero-shot verb and noun (95% intervals)", [
        ("bar", "verb top-1", _with_interval(f"{ZS}verb_top1")),
        ("bar", "noun top-1", _with_interval(f"{ZS}noun_top1")),
        ("bar", "verb top-5", _with_interval(f"{ZS}verb_top5")),
        ("bar", "noun top-5", _with_interval(f"{ZS}noun_top5")),
        ("bar", "verb top-1: seen vs unseen pairs",
         _with_interval(f"{ZS}verb_top1_seen_pairs") + _with_interval(f"{ZS}verb_top1_unseen_pairs")),
        ("bar", "noun top-1: seen vs unseen pairs",
         _with_interval(f"{ZS}noun_top1_seen_pairs") + _with_interval(f"{ZS}noun_top1_unseen_pairs")),
        ("bar", "verb top-1 beside the word lookup and the majority class",
         [f"{ZS}verb_top1", f"{ZS}verb_top1_lookup", f"{ZS}verb_top1_majority", f"{ZS}verb_top1_chance"]),
        ("bar", "noun top-1 beside the word lookup and the majority class",
         [f"{ZS}noun_top1", f"{ZS}noun_top1_lookup", f"{ZS}noun_top1_majority", f"{ZS}noun_top1_chance"]),
    ]),
    ("Retrieval (95% intervals)", [
        ("bar", f"{scorer} {way} recall@{k}", _with_interval(f"{RET}{scorer}_{way}_r{k}"))
        for scorer in ("cross", "generative") for way in ("t2v", "v2t") for k in (1, 5, 10)
    ]),
    ("Alignment", [
        ("line", "alignment accuracy", ["train/align_acc", "val/align_acc"]),
        ("line", "alignment on validation pairs", ["val/align_auroc", "val/align_balanced_acc",
                                                   "val/align_majority_acc"]),
        ("line", "recall of aligned and misaligned pairs", ["val/align_aligned_recall", "val/align_misaligned_recall"]),
    ]),
    ("Throughput, MFU and data wait", [
        ("line", "tokens per second", ["perf/tokens_per_s"]),
        ("line", "samples per second", ["perf/samples_per_s"]),
        ("line", "model FLOPs utilisation", ["perf/mfu"]),
        ("line", "fraction of time waiting for data", ["perf/data_wait_fraction"]),
        ("line", "sequence length and FLOPs per token", ["perf/seq_len", "perf/flops_per_token"]),
    ]),
    ("Data stream", [
        ("line", "videos read", ["data/videos"]),
        ("line", "samples skipped (unreadable)", ["data/skipped_samples"]),
    ]),
    ("Examples", [
        ("table", "zero-shot examples", [f"{ZS}examples"]),
        ("table", "retrieval examples", [f"{RET}examples"]),
        ("media", "confusion matrices", [f"{ZS}verb_confusion", f"{ZS}noun_confusion"]),
        ("media", "visual words", ["media/visual_words"]),
    ]),
]


def metric_keys() -> list[str]:
    """Every metric key the dashboard reads."""
    return list(dict.fromkeys(k for _, panels in SECTIONS for _, _, keys in panels for k in keys))


def _panel(kind: str, title: str, keys: list[str]):
    import wandb_workspaces.reports.v2 as wr

    if kind == "line":
        return wr.LinePlot(title=title, y=list(keys), smoothing_factor=0.6)
    if kind == "bar":
        return wr.BarPlot(title=title, metrics=list(keys), orientation="h")
    if kind == "table":
        return wr.WeavePanelSummaryTable(table_name=keys[0])
    return wr.MediaBrowser(title=title, media_keys=list(keys), mode="gallery")


def build_workspace(entity: str, project: str, name: str = "VideoBERT"):
    """The workspace (not saved): one section per entry of SECTIONS, the first ones open."""
    import wandb_workspaces.workspaces as ws

    sections = [ws.Section(name=section, panels=[_panel(*p) for p in panels], is_open=i < 3)
                for i, (section, panels) in enumerate(SECTIONS)]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections)


def dashboard(entity: str, project: str, name: str = "VideoBERT") -> str:
    """Save the VideoBERT workspace in a W&B project (needs W&B credentials: `wandb login` or WANDB_API_KEY).

    Args:
        entity: the W&B entity (user or team).
        project: the W&B project the runs log to.
        name: the workspace's name.
    """
    workspace = build_workspace(entity, project, name).save()
    url = getattr(workspace, "url", "") or f"https://wandb.ai/{entity}/{project}"
    print(f"dashboard: saved workspace {name!r} with {len(SECTIONS)} sections: {url}")
    return url
