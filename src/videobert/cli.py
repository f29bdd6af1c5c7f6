"""`videobert fit|validate|test|predict --config X.yaml` (LightningCLI) and `videobert data ...`."""
from __future__ import annotations

import netrc
import os
import sys
import warnings


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

    CLI({"corpus": make_corpus, "shards": build_shards, "features": extract_features, "vocab": build_vocab},
        args=argv, as_positional=False)


def lightning_main(argv: list[str] | None = None, run: bool = True):
    from lightning.pytorch.cli import LightningCLI

    from data_modules import VideoBertDataModule

    from .module import VideoBertModule

    return LightningCLI(VideoBertModule, VideoBertDataModule, subclass_mode_data=True, args=argv, run=run,
                        parser_kwargs={"parser_mode": "omegaconf"}, save_config_kwargs={"overwrite": True})


def main() -> None:
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.13 vs Lightning internals: not ours
    # our streams give every worker its own shards and batch count, so their __len__ is exact
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    # W&B: offline unless the user has credentials or chose a mode; never contacts a server by surprise.
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    if len(sys.argv) > 1 and sys.argv[1] == "data":
        data_main(sys.argv[2:])
    else:
        lightning_main()


if __name__ == "__main__":
    main()
