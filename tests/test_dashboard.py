"""The W&B dashboard reads only metric keys a real quickstart fit and test log (their CSV and W&B summary):
renaming a metric without the dashboard fails here. The workspace is built and its save intercepted."""
import csv
import glob

import pytest
import wandb
import yaml

from videobert.cli import lightning_main, main
from videobert.dashboard import SECTIONS, build_workspace, metric_keys

from .test_end_to_end import ROOT, _cli_args


def _logged(cli, run_dir) -> set[str]:
    """The keys of the run's CSV log and of its W&B summary (read in-process: offline W&B writes no summary file)."""
    keys = set()
    for path in glob.glob(f"{run_dir}/csv/*/metrics.csv"):
        keys |= set(next(csv.reader(open(path))))
    for logger in cli.trainer.loggers:
        if hasattr(logger, "log_table"):
            keys |= set(logger.experiment.summary.keys())
    wandb.finish()
    return keys


def _quickstart_args(cache, run_dir, extra=()):
    """The end-to-end test's shrunk quickstart, with the quickstart's learning-rate monitor put back."""
    args = _cli_args(cache, run_dir, extra)
    override = yaml.safe_load((run_dir / "override.yaml").read_text())
    quickstart = yaml.safe_load((ROOT / "experiments/quickstart.yaml").read_text())["trainer"]["callbacks"]
    override["trainer"]["callbacks"] += [c for c in quickstart if c["class_path"].endswith("LearningRateMonitor")]
    (run_dir / "override.yaml").write_text(yaml.safe_dump(override))
    return args


@pytest.fixture(scope="module")
def logged(quickstart_cache, tmp_path_factory) -> set[str]:
    root = tmp_path_factory.mktemp("dashboard")
    fit = lightning_main(["fit", *_quickstart_args(quickstart_cache, root / "fit")])
    keys = _logged(fit, root / "fit")
    ckpt = root / "fit/ckpt/last.ckpt"
    for task in ("zero_shot", "retrieval"):
        extra = ["--config", str(ROOT / "experiments/eval/retrieval.yaml")] if task == "retrieval" else []
        cli = lightning_main(["test", *_quickstart_args(quickstart_cache, root / task, extra), f"--ckpt_path={ckpt}"])
        keys |= _logged(cli, root / task)
    return keys


def test_every_dashboard_key_is_one_a_quickstart_fit_and_test_log(logged):
    missing = [k for k in metric_keys() if k not in logged]
    assert not missing, f"the dashboard reads keys no run logs: {missing}"
    assert len(metric_keys()) > 60 and "test/zero_shot/verb_top1_ci_low" in metric_keys()


def test_the_workspace_holds_exactly_the_listed_panels(monkeypatch, capsys):
    import wandb_workspaces.workspaces as ws

    workspace = build_workspace("my-team", "videobert")
    assert [s.name for s in workspace.sections] == [name for name, _ in SECTIONS]
    names = {"Losses", "Alignment", "Data stream", "Examples", "Throughput, MFU and data wait"}
    assert names <= {s.name for s in workspace.sections}
    shown = []
    for section in workspace.sections:
        for panel in section.panels:
            keys = getattr(panel, "y", None) or getattr(panel, "metrics", None) or getattr(panel, "media_keys", None)
            shown += list(keys) if keys else [panel.table_name]
    assert sorted(set(shown)) == sorted(metric_keys())

    saved = []
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self) or self)
    main(["dashboard", "--entity", "my-team", "--project", "videobert"])
    assert saved[0].entity == "my-team" and saved[0].project == "videobert" and len(saved[0].sections) == len(SECTIONS)
    assert "dashboard: saved workspace 'VideoBERT' with 7 sections" in capsys.readouterr().out


def test_without_credentials_the_dashboard_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # (no ~/.netrc)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--entity", "e", "--project", "p"])
    assert exit_.value.code == 2 and "needs W&B credentials" in capsys.readouterr().err
