"""The command line as a new user meets it: every command listed and documented, and each mistake answered by
one line that names the option, key or file and what was expected, exit status 2, and nothing written."""
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import lightning  # noqa: F401 -- (imported here, not under capsys: its log handler keeps the real stderr)
import pytest
import wandb

from videobert.cli import main
from videobert.cli_errors import COMMANDS

from .conftest import tiny_data_args

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "experiments/quickstart.yaml")


def _fails(argv, capsys) -> str:
    """Run `videobert <argv>`: it must exit 2 with exactly one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


def test_help_lists_every_command_and_each_has_its_own_help(capsys):
    main(["--help"])
    listing = capsys.readouterr().out
    for name, line in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(line)}$", listing, re.M), name
    stages = ("corpus", "shards", "features", "vocab", "youcook2")
    for argv in [[name] for name in COMMANDS] + [["data", stage] for stage in stages]:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, argv
        usage = out[out.index("usage:"):].split("\n\n")[0]
        assert f"videobert {' '.join(argv)}" in " ".join(usage.replace("[options] ", "").split()), (argv, usage)
        if argv[0] not in ("fit", "validate", "test", "predict"):  # (Lightning's: from Lightning's docstrings)
            undescribed = re.findall(r"^  (--\w+)(?:,? (?:--\S+|[A-Z_\[\]=+.]+))*\s+\((?:required|type)[,:]", out, re.M)
            assert not undescribed, (argv, undescribed)


def test_unknown_commands_suggest_the_closest(capsys):
    assert _fails(["fitt"], capsys) == "videobert: error: unknown command 'fitt': did you mean `videobert fit`?"
    err = _fails(["data", "featurs"], capsys)
    assert err == "videobert data: error: unknown data stage 'featurs': did you mean `videobert data features`?"


@pytest.mark.parametrize("argv, option", [
    (["data", "shards", "--videos", "no-videos", "--out", "shards"], "--videos no-videos: no such folder"),
    (["data", "features", "--shards=no-shards", "--out", "feats"], "--shards no-shards: no such folder"),
    (["data", "vocab", "--features", "no-feats", "--out", "vocab.npz"], "--features no-feats: no such folder"),
    (["export", "--ckpt_path", "no.ckpt", "--out", "export"], "--ckpt_path no.ckpt: no such file"),
    (["search", "eggs", "--index", "no-index"], "--index no-index: no such folder"),
    (["index", "--videos", "no-videos", "--model", "m", "--out", "index"], "--videos no-videos: no such folder"),
    (["test", "--config", QUICKSTART, "--ckpt_path", "runs/quickstart/latest/checkpoints/last.ckpt"],
     "--ckpt_path runs/quickstart/latest/checkpoints/last.ckpt: no such file"),
])
def test_a_missing_path_names_the_option_and_writes_nothing(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _fails(argv, capsys)
    named = " ".join(argv[:2] if argv[0] == "data" else argv[:1])
    assert err.startswith(f"videobert {named}: error: {option}") and "expected" in err
    assert _files(tmp_path) == []


def test_a_file_that_is_no_checkpoint_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("notes.ckpt").write_text("not a checkpoint")
    for argv in (["export", "--ckpt_path", "notes.ckpt", "--out", "export"],
                 ["test", "--config", QUICKSTART, "--ckpt_path=notes.ckpt"]):
        err = _fails(argv, capsys)
        assert err.endswith("--ckpt_path notes.ckpt: not a PyTorch checkpoint; expected a checkpoint written by "
                            "`videobert fit`")
    assert _files(tmp_path) == [tmp_path / "notes.ckpt"]


def test_shards_of_a_folder_without_a_usable_video_fail(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos/a.mp4").write_bytes(b"not a video")
    err = _fails(["data", "shards", "--videos", "videos", "--out", "shards"], capsys)
    assert err.startswith("videobert data shards: error: --videos videos: none of its 1 videos is usable")
    assert not (tmp_path / "shards").exists()


def _lightning_fails(argv, tmp_path, capsys) -> str:
    err = _fails(argv, capsys)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("wandb"))
    return err


def test_bad_keys_name_the_closest_key_and_their_file(quickstart_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["fit", "--config", QUICKSTART, "--trainer.default_root_dir=runs/x",
            *[f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()]]
    err = _lightning_fails([*base, "--model.lrr=0.1"], tmp_path, capsys)
    assert err == "videobert fit: error: --model.lrr is not a setting of VideoBertModule; did you mean --model.lr?"
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  init_args:\n    mask_probability: 0.2\n")
    err = _lightning_fails([*base, "--config", str(typo)], tmp_path, capsys)
    assert err == (f"videobert fit: error: {typo}: data.init_args.mask_probability is not a setting of "
                   "QuickstartDataModule; did you mean data.init_args.mask_prob?")
    typo.write_text("trainer:\n  max_stepz: 3\n")
    err = _lightning_fails([*base, "--config", str(typo)], tmp_path, capsys)
    assert err.endswith(f"{typo}: trainer.max_stepz is not a setting of Trainer; did you mean trainer.max_steps?")
    typo.unlink()
    err = _lightning_fails([*base, "--model.lr=abc"], tmp_path, capsys)
    assert err == "videobert fit: error: model.lr: expected a float, got value: abc"
    err = _lightning_fails([*base, "--trainer.max_steps=abc"], tmp_path, capsys)
    assert err == "videobert fit: error: trainer.max_steps: expected an int, got value: abc"


@pytest.mark.parametrize("option, message", [
    ("--data.init_args.mask_prob=1.5", "data.mask_prob=1.5: expected a value in [0, 1]"),
    ("--data.init_args.batch_size=0", "data.batch_size=0: expected a value >= 1"),
    ("--model.lr=0", "model.lr=0.0: expected a value > 0"),
])
def test_numeric_settings_are_range_checked_before_anything_is_written(option, message, quickstart_cache, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()]
    err = _lightning_fails(["fit", "--config", QUICKSTART, "--trainer.default_root_dir=runs/x", *data, option],
                           tmp_path, capsys)
    assert err == f"videobert fit: error: {message}"


def test_a_checkpoint_of_other_data_is_one_line(quickstart_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()]
    err = _fails(["test", "--config", QUICKSTART, "--trainer.default_root_dir=runs/x", *data, "--trainer.logger=false",
                  "--model.text_vocab_size=999", "--model.visual_vocab_size=7"], capsys)
    assert err.startswith("videobert test: error: the model has 999 text + 7 visual tokens, the data ")


def test_a_crashed_fit_leaves_latest_on_the_last_run_with_a_checkpoint(quickstart_cache, tmp_path, monkeypatch):
    from videobert.cli import lightning_main
    from videobert.module import VideoBertModule
    from videobert.runs import link_latest

    root = tmp_path / "runs/quickstart"
    (root / "complete/checkpoints").mkdir(parents=True)
    (root / "complete/checkpoints/last.ckpt").write_bytes(b"a checkpoint")
    link_latest(root / "complete")

    def crash(self, batch, batch_idx):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(VideoBertModule, "training_step", crash)
    data = [f"--data.init_args.{k}={v}" for k, v in tiny_data_args(quickstart_cache).items()]
    with pytest.raises(RuntimeError, match="out of memory"):
        lightning_main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={root}", *data,
                        "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2",
                        "--model.intermediate_size=64", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
                        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[{class_path: "
                        "lightning.pytorch.callbacks.ModelCheckpoint, init_args: {save_last: true}}]"])
    wandb.finish()
    crashed = [p for p in root.iterdir() if p.name not in ("complete", "latest")]
    assert len(crashed) == 1 and not list(crashed[0].rglob("*.ckpt"))  # (the crashed run's folder stays, for its logs)
    assert (root / "latest").resolve() == (root / "complete").resolve()


def test_make_demo_tests_the_model_its_experiment_trained(tmp_path):
    runs = {}
    for exp in ("experiments/cbt_quickstart.yaml", "experiments/quickstart.yaml", str(tmp_path / "mine.yaml")):
        Path(tmp_path / "mine.yaml").write_text("seed_everything: 1\n")
        out = subprocess.run(["make", "-n", "demo", f"EXP={exp}"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        runs[Path(exp).stem] = re.search(r"test --config \S+ --ckpt_path (\S+)", out).group(1)
    assert runs == {"cbt_quickstart": "runs/cbt_quickstart/latest/checkpoints/last.ckpt",
                    "quickstart": "runs/quickstart/latest/checkpoints/last.ckpt",
                    "mine": "runs/mine/latest/checkpoints/last.ckpt"}  # (no default_root_dir: as `fit` names it)


def test_report_writes_into_its_own_run_folder_unless_told(tmp_path, monkeypatch):
    from videobert import report as report_module

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/mine/latest/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/mine/latest/checkpoints/last.ckpt").write_bytes(b"a checkpoint")
    logged = []
    monkeypatch.setattr(report_module, "evaluate", lambda cli_main, exp, task, ckpt: {"verb_top1": 0.5})
    monkeypatch.setattr(report_module, "log_to_wandb", lambda results, path, save_dir: logged.append(save_dir))
    out = report_module.report(None, experiments=["mine"])
    assert out.parent.parent == Path("runs/report") and out.name == "results.md" and out.is_file()
    assert logged == [str(out.parent)] and not (tmp_path / "docs").exists()
    assert report_module.report(None, out="elsewhere/results.md", experiments=["mine"]) == Path("elsewhere/results.md")


def test_the_progress_bar_counts_epochs_to_the_real_end():
    from videobert.console import last_epoch

    by_steps = SimpleNamespace(max_epochs=-1, max_steps=1800, num_training_batches=600, accumulate_grad_batches=1)
    assert last_epoch(by_steps) == 2  # (Lightning's own bar: "Epoch 0/-2")
    assert last_epoch(SimpleNamespace(max_epochs=5, max_steps=-1)) == 4
    endless = SimpleNamespace(max_epochs=-1, max_steps=-1, num_training_batches=float("inf"), accumulate_grad_batches=1)
    assert last_epoch(endless) is None
