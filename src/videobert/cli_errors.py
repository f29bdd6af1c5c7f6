"""What a user's mistake on the command line becomes: one line that names the option, key or file and what was
expected, exit status 2, no traceback and nothing written. `VIDEOBERT_DEBUG=1` shows the full traceback.

The checks that need no model, data or Lightning run first (`check_paths`, before `import lightning`): a missing
checkpoint fails in a second, not after the corpus build. A misspelled key is named with the closest valid one
and the yaml file it came from (`bad_key`), instead of jsonargparse's report on every Union subtype.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import zipfile
from pathlib import Path

DEBUG_ENV = "VIDEOBERT_DEBUG"

# every subcommand, with its one line for `videobert --help`
COMMANDS = {
    "fit": "train a model: videobert fit --config experiments/quickstart.yaml",
    "validate": "validation metrics of a checkpoint: --config X.yaml --ckpt_path X.ckpt",
    "test": "evaluate a checkpoint on held-out videos (data.test_task: zero_shot, retrieval, ...)",
    "predict": "answers for your own videos (data.predict_videos) from a checkpoint",
    "data": "the offline data stages: corpus, shards, features, vocab, youcook2; verify-features (a parity check)",
    "export": "write a checkpoint as a standard model folder (config.json, model.safetensors, vocab.txt, model card)",
    "push": "upload an exported model folder to the Hugging Face Hub: --folder models/NAME --repo ORG/NAME",
    "index": "index a folder of videos for text search with an exported model",
    "search": "text-to-video search in an index built by videobert index",
    "report": "every evaluation task on the quickstart checkpoints -> a results table",
    "spread": "the spread of the zero-shot figures over training seeds and corpus builds",
    "dashboard": "save the VideoBERT W&B workspace (losses, zero-shot, retrieval, ...): --entity E --project P",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Lightning's own --ckpt_path words, which name no file
CKPT_WORDS = ("last", "best", "hpc", "registry")

# the paths each command reads: (command, option) -> (kind, what is expected)
PATHS = {
    ("data shards", "videos"): ("dir", "a folder of videos with their caption files"),
    ("data shards", "captions"): ("file", "a caption json file (HowTo100M or YouCook2)"),
    ("data shards", "labels"): ("file", "a json file {video stem: {field: value}}"),
    ("data features", "shards"): ("dir", "a folder of .tar shards written by `videobert data shards`"),
    ("data verify-features", "shards"): ("dir", "a folder of feature shards written by `videobert data features`"),
    ("data verify-features", "reference"): ("dir", "a folder of feature shards of the same videos"),
    ("data verify-features", "raw"): ("dir", "a folder of raw shards written by `videobert data shards`"),
    ("data vocab", "features"): ("dir", "a folder of feature shards written by `videobert data features`"),
    ("export", "ckpt_path"): ("checkpoint", "a checkpoint written by `videobert fit`"),
    ("push", "folder"): ("dir", "a model folder written by `videobert export`"),
    ("index", "videos"): ("dir", "a folder of videos"),
    ("search", "index"): ("dir", "a folder written by `videobert index`"),
    **{(c, "ckpt_path"): ("checkpoint", "a checkpoint written by `videobert fit`") for c in LIGHTNING_COMMANDS},
}


class UsageError(ValueError):
    """A mistake in what the user asked for (an option, a file, a setting): reported in one line."""


def root_message(err: BaseException) -> str:
    """The message of the error that started it all: jsonargparse reports a class's own ValueError as one of
    "Errors:" of a Union (the other subtype, None, never matches), with the class's whole config after it."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    lines = [line.strip()[2:] for line in str(err).splitlines() if line.strip().startswith("- ")]
    lines = [line for line in lines if not line.startswith("Expected a <class 'NoneType'>")]
    return lines[0] if lines else (str(err).strip().splitlines() or ["invalid settings"])[0]


def parse_error_message(err: BaseException) -> str:
    """jsonargparse's report of a value of the wrong type, in one line: `model.lr: expected a float, got value: abc`."""
    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    keys = []
    for e in chain:
        match = re.match(r'\s*Parser key "([^"]+)"', str(e))
        if match and match.group(1) not in keys:
            keys.append(match.group(1))
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Expected")), lines[-1] if lines else "invalid value")
    detail = re.sub(r"<class '([\w.]+)'>", r"\1", detail).replace("Expected", "expected", 1).replace(". Got", ", got")
    detail = re.sub(r"\ba (?=[aeiou])", "an ", detail)
    return f"{'.'.join(keys)}: {detail}" if keys else detail


def print_help() -> None:
    width = max(map(len, COMMANDS))
    lines = ["usage: videobert <command> [options]   (videobert <command> --help: its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    lines += ["", f"A mistake is reported in one line; {DEBUG_ENV}=1 shows the full traceback."]
    print("\n".join(lines))


def unknown_command(name: str) -> str:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.5)
    hint = f"did you mean `videobert {close[0]}`?" if close else "see `videobert --help`"
    return f"unknown command {name!r}: {hint}"


def run_reporting_errors(command: str, fn, *args) -> None:
    """Run `fn(*args)`; a user's mistake (UsageError, a missing file) becomes one line on stderr and exit 2."""
    try:
        fn(*args)
    except (UsageError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        message = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.filename}: {err.strerror}"
        fail(command, message)


def fail(command: str, message: str):
    print(f"videobert{' ' + command if command else ''}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def option_value(argv: list[str], name: str) -> str | None:
    """The value given to `--name` on the command line (`--name X` or `--name=X`), else None."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_path(option: str, value, kind: str, expected: str) -> None:
    """`value` of `--option` is a "dir", a "file" or a "checkpoint" (a torch.save file); Lightning's checkpoint
    words (`last`, `best`, ...), remote URLs and unset values pass."""
    if value is None or str(value) in CKPT_WORDS or "://" in str(value) or str(value) in ("null", "None"):
        return
    path = Path(str(value))
    ok = path.is_dir() if kind == "dir" else path.is_file()
    if ok and kind == "checkpoint" and not zipfile.is_zipfile(path):  # (torch.save writes a zip archive)
        raise UsageError(f"--{option} {value}: not a PyTorch checkpoint; expected {expected}")
    if not ok:
        why = "no such " + ("folder" if kind == "dir" else "file") if not path.exists() else \
            f"not a {'folder' if kind == 'dir' else 'file'}"
        hint = " (train first: `videobert fit --config <experiment>.yaml`)" if "latest" in path.parts else ""
        raise UsageError(f"--{option} {value}: {why}; expected {expected}{hint}")


def check_paths(command: str, argv: list[str]) -> None:
    """Every path option of `command` given on the command line exists and is what it should be."""
    for (cmd, option), (kind, expected) in PATHS.items():
        if cmd == command:
            check_path(option, option_value(argv, option), kind, expected)


def check_range(name: str, value, low: float, high: float | None = None, low_open: bool = False) -> None:
    """`name=value` lies in [low, high] (`(low, ...` with low_open); None passes (an unset option)."""
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else \
            f"{'>' if low_open else '>='} {low:g}"
        raise UsageError(f"{name}={value}: expected a value {'in ' if high is not None else ''}{span}")


# settings that are not a class's own: LightningCLI's top-level keys and the class/argument wrappers
TOP_LEVEL = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path", "run_id",
             "config", "print_config", "verbose", "return_predictions", "weights_only")
WRAPPERS = ("class_path", "init_args", "dict_kwargs", "help")
DEFAULT_MODEL = "videobert.module.VideoBertModule"


def given_settings(argv: list[str]) -> list[tuple[str, str, object]]:
    """(where, dotted key, value) of every setting in the `--config` files and `--a.b=...` options, in order."""
    import yaml

    out = []
    for i, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            name = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                loaded = yaml.safe_load(Path(name).read_text())
            except (OSError, yaml.YAMLError):
                continue
            out += [(name, k, v) for k, v in _flatten(loaded if isinstance(loaded, dict) else {})]
        elif arg.startswith("--") and "." in arg.split("=", 1)[0]:
            key = arg[2:].split("=", 1)[0]
            out.append((f"--{key}", key, arg.split("=", 1)[1] if "=" in arg else None))
    return out


def _flatten(tree: dict, prefix: str = "", depth: int = 3):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 1 and key not in ("dict_kwargs",):
            yield dotted, None
            yield from _flatten(value, dotted + ".", depth - 1)
        else:
            yield dotted, value


def class_settings(path: str) -> set[str] | None:
    """The keyword arguments `path`'s class takes (through `**kwargs` into its parents); None when unknown."""
    module, _, name = path.rpartition(".")
    candidates = [module] if module else ["data_modules", "videobert.module", "videobert.finetune"]
    for mod in candidates:
        try:
            cls = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            cls = None
        if isinstance(cls, type):
            break
    else:
        return None
    names: set[str] = set()
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def bad_key(argv: list[str]) -> str | None:
    """The first given setting that no class of the experiment takes, as one line naming where it came from and
    the closest valid key; None when every key is known (the error is elsewhere)."""
    settings = given_settings(argv)
    classes = {"model": DEFAULT_MODEL, "data": None}
    for _, key, value in settings:
        if key in ("model.class_path", "data.class_path") and isinstance(value, str):
            classes[key.split(".")[0]] = value
    valid = {section: class_settings(path) for section, path in classes.items() if path}
    valid["trainer"] = class_settings("lightning.Trainer")
    for where, key, _ in settings:
        parts = key.split(".")
        if len(parts) == 1:
            if parts[0] not in TOP_LEVEL:
                return _unknown(where, parts, 0, TOP_LEVEL, "a top-level key")
            continue
        rest = parts[2:] if parts[1] == "init_args" else parts[1:]
        known = valid.get(parts[0])
        if not rest or rest[0] in WRAPPERS or known is None:
            continue
        if rest[0] not in known:
            owner = classes.get(parts[0]) or "lightning.Trainer"
            return _unknown(where, parts, len(parts) - len(rest), known, f"a setting of {owner.rpartition('.')[2]}")
    return None


def _unknown(where: str, parts: list[str], i: int, valid, what: str) -> str:
    """`parts[i]` is the unknown name: the line names the key as given and the closest valid one."""
    dash = "--" if where.startswith("--") else ""
    close = difflib.get_close_matches(parts[i], sorted(valid), n=1, cutoff=0.6)
    hint = f"did you mean {dash}{'.'.join([*parts[:i], close[0]])}?" if close else "see `videobert fit --help`"
    origin = "" if dash else f"{where}: "
    return f"{origin}{dash}{'.'.join(parts[:i + 1])} is not {what}; {hint}"
