"""Writing shared caches and outputs safely: locks, atomic writes, a full disk as one clear line.

- `folder_lock(path)`: a `filelock` lock beside a stage's output (`<output>.lock`), so a second job that builds
  the same output waits, then finds it complete and reuses it (several sweep agents on one cache).
- `atomic_path(path)`: yields a temporary name unique to this process (`.<name>.<pid>-<random>.tmp` in the
  same folder); on success it is renamed over `path`, on any error removed: a reader sees either nothing or
  the whole file under the final name, and two writers never share a temporary file.
- A full disk (ENOSPC, EDQUOT) while writing becomes `DiskFull`, one line naming the folder, what was written
  so far and the space left; the CLI prints it without a traceback. A rerun after space is freed completes.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

FULL = (errno.ENOSPC, errno.EDQUOT)


class OneLineError(Exception):
    """An error the CLI prints as one line (`videobert: <message>`), with no traceback: the user's input or
    machine is at fault, not the code."""


class DiskFull(OneLineError, OSError):
    """No space left while writing (ENOSPC or a quota)."""


class NoReadableData(OneLineError, ValueError):
    """A shard set with nothing readable left in it."""


class TooManySkips(OneLineError, RuntimeError):
    """More bad samples than the configured share (`data.max_skip_rate`)."""


def lock_file(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def folder_lock(path: str | Path, what: str = ""):
    """Hold `<path>.lock` (an output folder or file) while building it; say so when another job holds it."""
    lock = lock_file(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with disk_full(lock.parent):
        held = FileLock(str(lock))
        try:
            held.acquire(timeout=0)
        except Timeout:
            print(f"{what or path}: another job is building {path}; waiting for it ({lock})", flush=True)
            held.acquire()
    try:
        yield
    finally:
        held.release()


def unique_tmp(path: str | Path) -> Path:
    """A temporary sibling of `path` that no other process uses; it never matches `*.tar`, `*.npz`, ..."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def sweep_temps(folder: str | Path, name_glob: str = "*") -> int:
    """Remove temporary files `unique_tmp` made for `name_glob` in `folder` (left by a killed job); call it
    holding the folder's lock. Returns how many."""
    stale = list(Path(folder).glob(f".{name_glob}.*-*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def full_message(folder: Path, written: int | None = None, needed: int | None = None) -> str:
    try:
        free = _human(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    so_far = f"; {_human(written)} written so far" if written is not None else ""
    need = f"; {_human(needed)} needed" if needed else ""
    return (f"{folder}: disk full (no space left on the device{need}{so_far}; {free} free): free space or "
            "choose another folder, then rerun (finished outputs are kept)")


def is_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and not isinstance(err, DiskFull) and err.errno in FULL


@contextlib.contextmanager
def disk_full(folder: str | Path, written=lambda: None, needed: int | None = None):
    """Turn ENOSPC raised inside into `DiskFull` naming `folder` (`written()`: bytes written so far)."""
    try:
        yield
    except OSError as err:
        if not is_full(err):
            raise
        raise DiskFull(full_message(Path(folder), written(), needed)) from None


@contextlib.contextmanager
def atomic_path(path: str | Path, needed: int | None = None):
    """Yield a unique temporary path to write; rename it over `path` when the block ends without error."""
    path = Path(path)
    tmp = unique_tmp(path)
    try:
        with disk_full(path.parent, lambda: _size(tmp), needed):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """`path.write_text(text)`, atomically, with a full disk as `DiskFull`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def report(err: OneLineError) -> None:
    """What the CLI does with a `OneLineError`: one line on stderr and exit status 1."""
    message = str(err).strip()
    if "Original Traceback" in message:  # (raised in a DataLoader worker: its last line is the message)
        message = message.splitlines()[-1].split(": ", 1)[-1]
    print(f"videobert: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)
