"""The `videobert` command: `fit|validate|test|predict --config X.yaml` (LightningCLI), `data ...` (the offline
stages), `export --ckpt_path X.ckpt --out DIR` (a standard model folder with its model card), `push` (to the
Hugging Face Hub), `dashboard` (the W&B workspace), `index` / `search` (text-to-video
search), `report` (every evaluation task on the quickstart checkpoints) and `spread`; `videobert --help` lists
them (`cli_errors.COMMANDS`). A user's mistake ends in one line and exit status 2 (see `cli_errors`)."""
from __future__ import annotations

import difflib
import netrc
import os
import sys
from pathlib import Path

from .cli_errors import COMMANDS, UsageError, check_paths, fail, print_help, run_reporting_errors, unknown_command

# OpenMP threads that wait for work sleep instead of spinning (read when torch loads, so set before it is
# imported): with DataLoader workers or another job on a few cores, spinning threads starved the others
# (a 60-step quickstart fit on 2 shared cores: 11 s spinning, 5.5 s passive). Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def export_checkpoint(ckpt_path: str, out: str, tokenizer: str | None = None, visual_vocab: str | None = None,
                      results: list[str] | None = None, repo: str | None = None) -> None:
    """Write a training checkpoint as a standard folder: config.json, model.safetensors, vocab.txt, visual_vocab.npz
    and README.md, a model card for the Hugging Face Hub with the checkpoint's test results.

    Args:
        ckpt_path: a checkpoint written by `videobert fit`.
        out: the folder to write.
        tokenizer: the WordPiece vocab.txt (default: the one the checkpoint's DataModule used).
        visual_vocab: the visual vocabulary .npz (default: the one the checkpoint's DataModule used).
        results: `<task>_results.json` files for the model card (default: those of every `videobert test` run
            of this checkpoint in its experiment's folder).
        repo: the Hub repo id the card's examples load it by (default: ORG/<folder name>).
    """
    from .hub import find_results, read_results, write_card
    from .pretrained import export, export_head, model_from_checkpoint

    model, ckpt = model_from_checkpoint(ckpt_path)
    dm = _datamodule(ckpt, ckpt_path) if "datamodule_hyper_parameters" in ckpt else None
    if tokenizer is None or (visual_vocab is None and not model.cfg.feature_dim):
        if dm is None:
            raise UsageError(f"{ckpt_path}: no DataModule settings saved; pass --tokenizer and --visual_vocab")
        paths = dm._paths()
        tokenizer, visual_vocab = tokenizer or paths["tokenizer"], visual_vocab or paths["visual_vocab"]
    extractor = None
    if dm is not None and dm._paths().get("train") and Path(str(dm._paths()["train"])).is_dir():
        from .predict import extractor_record

        extractor = extractor_record(dm._train_samples())
        if extractor is not None:
            extractor["max_visual_words"] = dm.hparams.max_visual_words
    found = read_results(results) if results is not None else find_results(ckpt_path)
    print(f"exported to {export(model, out, tokenizer, visual_vocab, extractor=extractor, card=False)}")
    if export_head(ckpt, out):
        print("export: with the captioning decoder (videobert.api: VideoBertPipeline.caption)")
    write_card(out, found, _data_name(dm), repo=repo)
    print(f"export: model card README.md with {', '.join(sorted(found)) or 'no'} test results"
          + ("" if found else " (run `videobert test` on this checkpoint, then export again)"))
    if extractor is None:
        print("export: the training features' extractor is unknown (no local training shards): without "
              "extractor.json, videobert.api takes features, not raw video")


def _data_name(dm) -> str:
    """What the model was trained on, for its card: the built-in corpus, or the training shards' folder."""
    if dm is None:
        return "unknown"
    if type(dm).__name__ == "QuickstartDataModule":
        return "videobert-builtin-cooking-corpus"
    train = dm._paths().get("train")
    return Path(str(train)).name if train else type(dm).__name__


def _datamodule(ckpt: dict, ckpt_path: str):
    """The DataModule saved in a checkpoint, rebuilt from its settings. Only our own DataModule classes are
    rebuilt (a checkpoint must not pick what code runs)."""
    import importlib

    from data_modules import VideoBertDataModule

    dm_hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    module, _, name = dm_hp.pop("_class_path", "data_modules.VideoBertDataModule").rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module == "data_modules" else None
    if not (isinstance(cls, type) and issubclass(cls, VideoBertDataModule)):
        raise UsageError(f"{ckpt_path}: DataModule {module}.{name} is not one of data_modules'; pass --tokenizer "
                         "and --visual_vocab")
    return cls(**{k: v for k, v in dm_hp.items() if not k.startswith("_")})


def lightning_main(argv: list[str] | None = None, run: bool = True):
    """`videobert fit|validate|test|predict ...` in this process; a user's mistake raises UsageError."""
    from jsonargparse import ArgumentError

    from .cli_errors import bad_key, parse_error_message
    from .console import quiet_warnings

    quiet_warnings()
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        return _videobert_cli()(args=argv, run=run)
    except ArgumentError as err:
        raise UsageError(bad_key(given) or parse_error_message(err)) from err


def _videobert_cli():
    import functools

    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.cli import LightningCLI

    from data_modules import VideoBertDataModule

    from .cli_errors import CKPT_WORDS, check_path, root_message
    from .console import drop_wandb_anonymous, fit_summary, progress_bar
    from .runs import AtomicCheckpointIO, LinkLatest, place_run
    from .tracking import RunRecord, SaveRunConfig, Throughput

    class VideoBertCLI(LightningCLI):
        """LightningCLI + run folders (see runs.py), the run record (see tracking.py), one-line errors
        (cli_errors.py) and our console output (console.py)."""

        def add_arguments_to_parser(self, parser):
            # `model:` is VideoBertModule unless an experiment names another LightningModule (fine-tuning)
            parser.set_defaults({"model": {"class_path": "videobert.module.VideoBertModule"}})
            parser.add_argument("--run_id", type=str | None, default=None,
                                help="this run's folder name and W&B id (default: from the environment, or new)")

        def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            if subcommand == "test":  # the test task prints its own summary, not Lightning's table of every metric
                parser.set_defaults({"verbose": False})
            return parser

        def before_instantiate_classes(self):
            config = self.config[self.subcommand] if self.subcommand else self.config
            ckpt = config.get("ckpt_path")
            if ckpt and not (self.subcommand == "fit" and ckpt in CKPT_WORDS):  # (fit: `last` = newest run's)
                check_path("ckpt_path", ckpt, "checkpoint", "a checkpoint written by `videobert fit`")
            self.run_dir = place_run(config, self.subcommand or "fit", config.get("run_id"))

        def instantiate_classes(self):
            try:
                super().instantiate_classes()
            except ValueError as err:  # a setting out of range or of the wrong kind, before anything is written
                raise UsageError(root_message(err)) from err

        def _instantiate_trainer(self, config, callbacks):
            callbacks = [*callbacks, RunRecord(self.run_dir), Throughput(), LinkLatest(self.run_dir)]
            if config.get("enable_progress_bar") is not False and not any(
                    isinstance(c, ProgressBar) for c in [*callbacks, *(config.get("callbacks") or [])]):
                callbacks.append(progress_bar())
            if self.subcommand == "predict":
                from .predict import PredictionWriter

                callbacks.append(PredictionWriter(self.run_dir))
            plugins = config.get("plugins")
            plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
            if not any(hasattr(p, "save_checkpoint") for p in plugins):  # a CheckpointIO of the user's wins
                config["plugins"] = [*plugins, AtomicCheckpointIO()]
            trainer = super()._instantiate_trainer(config, callbacks)
            if trainer.is_global_zero:  # (before W&B starts: it looks for the git root from there)
                self.run_dir.mkdir(parents=True, exist_ok=True)
            drop_wandb_anonymous(trainer)
            return trainer

        def after_fit(self):
            if self.trainer.is_global_zero:
                print("\n".join(fit_summary(self.trainer, self.run_dir)))

    return functools.partial(VideoBertCLI, L.LightningModule, VideoBertDataModule, subclass_mode_model=True,
                             subclass_mode_data=True, parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False, "prog": "videobert"},
                             save_config_callback=SaveRunConfig, save_config_kwargs={"overwrite": True})


def report(out: str | None = None, experiments: list[str] | None = None) -> None:
    """Evaluate every task on each experiment's last checkpoint and write the table as markdown.

    Args:
        out: the markdown file to write (default: `runs/report/<run id>/results.md`, beside the report's W&B
            run; `make results` passes docs/results.md).
        experiments: the experiment names to evaluate, each from `runs/<name>/latest` (default: every
            quickstart experiment that has a checkpoint).
    """
    from .report import report as write_report

    write_report(lightning_main, out, experiments)


def spread(seeds: list[int] = (0, 1, 2), corpus_seeds: list[int] = (0, 1), experiments: list[str] | None = None,
           root: str = "runs/spread") -> None:
    """Fit and zero-shot-test each quickstart experiment with every training seed on every corpus seed, score
    its alignment head on unmasked test-video pairs, and write `<root>/spread.json` (the report's spread table).

    Args:
        seeds: the training seeds.
        corpus_seeds: the seeds of the corpus builds.
        experiments: the experiment names (files experiments/<name>.yaml; default: the three quickstart models).
        root: the folder for the runs and spread.json.
    """
    from .spread import EXPERIMENTS, spread as measure

    measure(lightning_main, seeds, corpus_seeds, experiments or list(EXPERIMENTS), root)


DATA_COMMANDS = ("corpus", "shards", "features", "vocab", "youcook2", "verify-features")


def data_main(argv: list[str]) -> None:
    from .corpus import make_corpus
    from .features import extract_features
    from .parity import verify_features
    from .shards import build_shards
    from .vq import build_vocab
    from .youcook2 import build_youcook2_truth

    functions_cli({"corpus": make_corpus, "shards": build_shards, "features": extract_features, "vocab": build_vocab,
                   "youcook2": build_youcook2_truth, "verify-features": verify_features}, argv, "videobert data")


def functions_cli(components, argv: list[str], prog: str) -> None:
    """jsonargparse's CLI of our functions; a bad option is one line (UsageError), not usage plus error."""
    from jsonargparse import CLI, ArgumentError

    try:
        CLI(components, args=argv, as_positional=False, prog=prog, exit_on_error=False)
    except ArgumentError as err:
        raise UsageError(f"{str(err).splitlines()[0]} (see `{prog} --help`)") from err


def dispatch(argv: list[str]) -> None:
    """Run one `videobert <command> ...`; the checks that need no model or data come first."""
    command = argv[0]
    if command == "data":
        sub = argv[1] if len(argv) > 1 else "--help"
        if not sub.startswith("-") and sub not in DATA_COMMANDS:
            close = difflib.get_close_matches(sub, DATA_COMMANDS, n=1, cutoff=0.5)
            raise UsageError(f"unknown data stage {sub!r}: " + (f"did you mean `videobert data {close[0]}`?" if close
                             else f"expected one of {', '.join(DATA_COMMANDS)}"))
        check_paths(f"data {sub}", argv[2:])
        data_main(argv[1:] or ["--help"])
        return
    check_paths(command, argv[1:])
    if command in ("index", "search"):
        from .search import index_main, search_main

        (index_main if command == "index" else search_main)(argv[1:])
    elif command in ("export", "report", "spread", "push", "dashboard"):
        from .dashboard import dashboard
        from .hub import push

        if command == "dashboard" and not wandb_has_credentials() and not {"-h", "--help"} & set(argv):
            raise UsageError("saving a W&B workspace needs W&B credentials: run `wandb login` or set WANDB_API_KEY")
        functions_cli({"export": export_checkpoint, "report": report, "spread": spread, "push": push,
                       "dashboard": dashboard}[command], argv[1:], f"videobert {command}")
    else:
        lightning_main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # W&B: offline unless the user has credentials or chose a mode; never contacts a server by surprise.
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        fail("", unknown_command(argv[0]))
    named = argv[:2] if argv[0] == "data" and len(argv) > 1 and argv[1] in DATA_COMMANDS else argv[:1]
    from .safe_io import OneLineError, report as print_one_line

    try:
        run_reporting_errors(" ".join(named) if not argv[0].startswith("-") else "", dispatch, argv)
    except OneLineError as err:  # (a full disk, a shard set with nothing readable: one line, exit 1)
        if os.environ.get("VIDEOBERT_DEBUG"):
            raise
        print_one_line(err)


if __name__ == "__main__":
    main()
