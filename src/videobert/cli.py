"""`videobert fit|validate|test|predict --config X.yaml` (LightningCLI), `videobert data ...` (the offline
stages), `videobert export --ckpt_path X.ckpt --out DIR` (a standard model folder) and `videobert report`
(every evaluation task on the quickstart checkpoints -> docs/results.md)."""
from __future__ import annotations

import netrc
import os
import sys
import warnings
from pathlib import Path

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


def data_main(argv: list[str]) -> None:
    from jsonargparse import CLI

    from .corpus import make_corpus
    from .features import extract_features
    from .shards import build_shards
    from .vq import build_vocab
    from .youcook2 import build_youcook2_truth

    CLI({"corpus": make_corpus, "shards": build_shards, "features": extract_features, "vocab": build_vocab,
         "youcook2": build_youcook2_truth}, args=argv, as_positional=False)


def export_checkpoint(ckpt_path: str, out: str, tokenizer: str | None = None, visual_vocab: str | None = None) -> None:
    """Write a training checkpoint as a standard folder (config.json, model.safetensors, vocab.txt,
    visual_vocab.npz). Tokenizer and visual vocabulary default to the ones the checkpoint's DataModule used."""
    from .pretrained import export, export_head, model_from_checkpoint

    model, ckpt = model_from_checkpoint(ckpt_path)
    dm = _datamodule(ckpt, ckpt_path) if "datamodule_hyper_parameters" in ckpt else None
    if tokenizer is None or (visual_vocab is None and not model.cfg.feature_dim):
        if dm is None:
            raise ValueError(f"{ckpt_path}: no DataModule settings saved; pass --tokenizer and --visual_vocab")
        paths = dm._paths()
        tokenizer, visual_vocab = tokenizer or paths["tokenizer"], visual_vocab or paths["visual_vocab"]
    extractor = None
    if dm is not None and dm._paths().get("train") and Path(str(dm._paths()["train"])).is_dir():
        from .predict import extractor_record

        extractor = extractor_record(dm._train_samples())
        if extractor is not None:
            extractor["max_visual_words"] = dm.hparams.max_visual_words
    print(f"exported to {export(model, out, tokenizer, visual_vocab, extractor=extractor)}")
    if export_head(ckpt, out):
        print("export: with the captioning decoder (videobert.api: VideoBertPipeline.caption)")
    if extractor is None:
        print("export: the training features' extractor is unknown (no local training shards): without "
              "extractor.json, videobert.api takes features, not raw video")


def _datamodule(ckpt: dict, ckpt_path: str):
    """The DataModule saved in a checkpoint, rebuilt from its settings. Only our own DataModule classes are
    rebuilt (a checkpoint must not pick what code runs)."""
    import importlib

    from data_modules import VideoBertDataModule

    dm_hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    module, _, name = dm_hp.pop("_class_path", "data_modules.VideoBertDataModule").rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module == "data_modules" else None
    if not (isinstance(cls, type) and issubclass(cls, VideoBertDataModule)):
        raise ValueError(f"{ckpt_path}: DataModule {module}.{name} is not one of data_modules'; pass --tokenizer "
                         "and --visual_vocab")
    return cls(**{k: v for k, v in dm_hp.items() if not k.startswith("_")})


def lightning_main(argv: list[str] | None = None, run: bool = True):
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from data_modules import VideoBertDataModule

    from .runs import AtomicCheckpointIO, link_latest, place_run
    from .tracking import RunRecord, SaveRunConfig, Throughput

    class VideoBertCLI(LightningCLI):
        """LightningCLI + run folders (see runs.py) and the run record (see tracking.py)."""

        def add_arguments_to_parser(self, parser):
            # `model:` is VideoBertModule unless an experiment names another LightningModule (fine-tuning)
            parser.set_defaults({"model": {"class_path": "videobert.module.VideoBertModule"}})
            parser.add_argument("--run_id", type=str | None, default=None,
                                help="this run's folder name and W&B id (default: from the environment, or new)")

        def before_instantiate_classes(self):
            config = self.config[self.subcommand] if self.subcommand else self.config
            self.run_dir = place_run(config, self.subcommand or "fit", config.get("run_id"))

        def _instantiate_trainer(self, config, callbacks):
            callbacks = [*callbacks, RunRecord(self.run_dir), Throughput()]
            if self.subcommand == "predict":
                from .predict import PredictionWriter

                callbacks.append(PredictionWriter(self.run_dir))
            plugins = config.get("plugins")
            plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
            if not any(hasattr(p, "save_checkpoint") for p in plugins):  # a CheckpointIO of the user's wins
                config["plugins"] = [*plugins, AtomicCheckpointIO()]
            trainer = super()._instantiate_trainer(config, callbacks)
            if trainer.is_global_zero and (self.subcommand or "fit") == "fit":
                self.run_dir.mkdir(parents=True, exist_ok=True)
                link_latest(self.run_dir)
            return trainer

    return VideoBertCLI(L.LightningModule, VideoBertDataModule, subclass_mode_model=True, subclass_mode_data=True,
                        args=argv, run=run, parser_kwargs={"parser_mode": "omegaconf"},
                        save_config_callback=SaveRunConfig, save_config_kwargs={"overwrite": True})


def report(out: str = "docs/results.md", experiments: list[str] | None = None) -> None:
    """Evaluate every task on each experiment's last checkpoint and write the table to `out`."""
    from .report import report as write_report

    write_report(lightning_main, out, experiments)


def spread(seeds: list[int] = (0, 1, 2), corpus_seeds: list[int] = (0, 1), experiments: list[str] | None = None,
           root: str = "runs/spread") -> None:
    """Fit and zero-shot-test each quickstart experiment (default: all) with every training seed on every corpus
    seed, score its alignment head, and write `<root>/spread.json` (`videobert report` puts it into its table)."""
    from .spread import EXPERIMENTS, spread as measure

    measure(lightning_main, seeds, corpus_seeds, experiments or list(EXPERIMENTS), root)


def main() -> None:
    from .safe_io import OneLineError, report

    try:
        _main()
    except OneLineError as err:  # (a full disk, a shard set with nothing readable: one line, no traceback)
        report(err)


def _main() -> None:
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.13 vs Lightning internals: not ours
    # our streams give every worker its own shards and batch count, so their __len__ is exact
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    # W&B: offline unless the user has credentials or chose a mode; never contacts a server by surprise.
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    if len(sys.argv) > 1 and sys.argv[1] == "data":
        data_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] in ("index", "search"):
        from .search import index_main, search_main

        (index_main if sys.argv[1] == "index" else search_main)(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] in ("export", "report", "spread"):
        from jsonargparse import CLI

        CLI({"export": export_checkpoint, "report": report, "spread": spread}[sys.argv[1]], args=sys.argv[2:],
            as_positional=False)
    else:
        lightning_main()


if __name__ == "__main__":
    main()
