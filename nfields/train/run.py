"""Run folders: checked before anything is written, opened for a job, and never left worse than they were found.

- A fresh run in a new (or empty) folder is removed again (or emptied) when it fails before its first checkpoint.
- `--overwrite` replaces only a folder that holds an nfields run, and only once the new run has started: the new
  run is staged in a hidden sibling (`.NAME.nfields-staging-PID-...`) and swapped in at its first checkpoint (or
  when the job ends); a failure before that leaves the old run exactly as it was.
- A failed `--resume` (before its first new checkpoint) puts config.json back and removes what it added.
- Leftovers of a killed process (staging folders, half-written files) are tidied at the next start.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator, TypeVar

import torch

from ..errors import NfieldsError
from ..io import refuse_replacing_cwd, write_bytes_atomic
from .checkpoint import checkpoints, load_latest, remove_leftovers
from .device import resolve_device
from .manifest import (FORMAT, KINDS, command_of, is_manifest, manifest, read_manifest, run_kind,
                       settings_from_manifest)
from .weights import load_weights

__all__ = ["FORMAT", "KINDS", "RESUMABLE", "check_run_dir", "commit_run_dir", "holds_run", "load_run_config",
           "load_trained", "manifest", "model_state", "open_run_dir", "read_manifest", "resolved_for_resume",
           "run_kind"]

C = TypeVar("C")

#: Settings a resuming command may change: the budget and how it is watched, never the experiment.
RESUMABLE = frozenset({"steps", "device", "checkpoint_every", "log_every", "eval_every", "eval_at",
                       "seconds", "eval_at_seconds"})

#: Hidden siblings of a run folder while --overwrite replaces it: `.NAME.nfields-staging-PID-NS` holds the new
#: run until the swap; `.NAME.nfields-replaced-PID-NS` holds the old one during a swap without renameat2.
SIBLING = re.compile(r"^\.(?P<name>.+)\.nfields-(?P<role>staging|replaced)-(?P<pid>\d+)-\d+$")

#: Staging folder -> the run folder it replaces, for the swap at the first checkpoint (this process only).
_STAGED: dict[Path, Path] = {}


def holds_run(folder: Path) -> bool:
    """True when `folder` holds an nfields run: checkpoints, or a config.json that is a run manifest."""
    folder = Path(folder)
    if checkpoints(folder):
        return True
    try:
        return is_manifest(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError):
        return False


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a folder that cannot be used as asked. (It finishes or undoes what
    a killed `--overwrite` left beside `out`: that restores a run folder, it writes nothing new.)"""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NfieldsError(f"--out '{out}' is a file; give a folder for the run.")
    tidy_siblings(out)
    if resume:
        if not (out / "config.json").exists():
            raise NfieldsError(f"there is no run to resume in '{out}'; start it without --resume.")
        return
    if out.exists() and any(out.iterdir()):
        if not holds_run(out):
            raise NfieldsError(f"'{out}' is not empty and holds no nfields run, so it is left alone (--overwrite "
                               f"replaces only a run folder); choose another --out.")
        if not overwrite:
            raise NfieldsError(f"'{out}' already holds a run; pass --resume to continue it, --overwrite to "
                               f"replace it, or another --out.")
        refuse_replacing_cwd(out)
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".nfields-write-test-{time.time_ns()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError:
        raise NfieldsError(f"cannot write to '{parent}'; choose an --out folder you can write to.") from None


def open_run_dir(out: Path, resume: bool, overwrite: bool) -> ContextManager[Path]:
    """The folder to write the run into, for the body of the `with` (after `check_run_dir`).

    Write the run where it says, not to `out`: when `overwrite` replaces an existing run it is a staging
    folder, swapped in for `out` by `commit_run_dir` (the Trainer calls it after each checkpoint) or at the
    end of the `with`. From then on the run is at `out`.
    """
    out = Path(out)
    if resume:
        return _resumed_run(out)
    if overwrite and out.is_dir() and any(out.iterdir()):
        return _staged_run(out)
    return _fresh_run(out)


def commit_run_dir(run_dir: Path) -> Path:
    """Swap a staging folder in for the run it replaces (the old run is deleted); the run's folder from now on.
    Any other folder is returned as it is."""
    target = _STAGED.pop(Path(run_dir), None)
    if target is None:
        return run_dir
    _swap(Path(run_dir), target)
    return target


def _mkdir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NfieldsError(f"cannot create the run folder '{out}' ({error.strerror}); choose another --out.") from None


@contextmanager
def _fresh_run(out: Path) -> Iterator[Path]:
    """A new or empty folder: removed (or emptied) again when the run fails before its first checkpoint."""
    created = not out.exists()
    _mkdir(out)
    try:
        yield out
    except BaseException:
        if not checkpoints(out):
            if created:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for child in out.iterdir():
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise


@contextmanager
def _staged_run(out: Path) -> Iterator[Path]:
    """--overwrite of a run: the new run in a hidden sibling until its first checkpoint (see commit_run_dir)."""
    target = out.absolute()
    staging = target.parent / f".{target.name}.nfields-staging-{os.getpid()}-{time.time_ns()}"
    _mkdir(staging)
    _STAGED[staging] = target
    try:
        yield staging
        commit_run_dir(staging)
    except BaseException:
        if _STAGED.pop(staging, None) is not None:  # not swapped in: the old run is untouched
            shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def _resumed_run(out: Path) -> Iterator[Path]:
    """--resume: leftovers of interrupted writes removed; on a failure before the first new checkpoint,
    config.json restored and every file the attempt added removed."""
    remove_leftovers(out)
    config = out / "config.json"
    saved = config.read_bytes()
    newest = _newest(out)
    existing = set(out.rglob("*"))
    try:
        yield out
    except BaseException:
        if _newest(out) == newest:
            if not config.exists() or config.read_bytes() != saved:
                write_bytes_atomic(config, saved)
            for path in sorted(set(out.rglob("*")) - existing, key=lambda p: len(p.parts), reverse=True):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def _newest(out: Path) -> str | None:
    found = checkpoints(out)
    return found[0].name if found else None


# -- swapping a staged run in, and what a kill during --overwrite leaves -------------------------------------

def _swap(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
    elif _exchange(staging, out):  # atomic: `out` is always a whole run, old or new
        shutil.rmtree(staging, ignore_errors=True)  # now the old run
    else:
        replaced = out.parent / f".{out.name}.nfields-replaced-{os.getpid()}-{time.time_ns()}"
        os.rename(out, replaced)
        os.rename(staging, out)
        shutil.rmtree(replaced, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two paths atomically. False where it is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def tidy_siblings(out: Path) -> None:
    """Clear what killed `--overwrite` runs of `out` left beside it (their process is gone): a staging folder
    is removed (the old run stayed in place); a swap cut in half is completed."""
    out = Path(out).absolute()
    try:
        siblings = [(m, p) for p in out.parent.iterdir() if (m := SIBLING.match(p.name)) and m["name"] == out.name]
    except OSError:
        return
    dead = [(m, p) for m, p in siblings if not _alive(int(m["pid"]))]
    if not out.exists():
        for m, replaced in dead:
            if m["role"] == "replaced":
                staged = [p for n, p in dead if n["role"] == "staging" and n["pid"] == m["pid"]]
                os.rename(staged[0] if staged else replaced, out)
                break
    for _, path in dead:
        if path.exists() and path != out:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # a process we may not signal: leave its folders alone
    return True


# -- reading runs ----------------------------------------------------------------------------------------------

def load_run_config(run_dir: Path, cls: type[C]) -> C:
    """The settings dataclass `cls` stored in a run folder's config.json, checked (see nfields.train.manifest):
    the run's kind is one of `cls.kinds` (where the class names them), each setting has its type and range."""
    data = read_manifest(run_dir)
    _check_kind(data, cls, Path(run_dir))
    return settings_from_manifest(data, cls, Path(run_dir) / "config.json")


def _check_kind(data: dict, cls: type, run_dir: Path) -> None:
    kinds = getattr(cls, "kinds", ())
    if kinds and data["kind"] not in kinds:
        raise NfieldsError(f"'{run_dir}' is a {data['kind']} run (made by '{command_of(data['kind'])}'), not a "
                           f"{kinds[0]} run; give the --out folder of a '{command_of(kinds[0])}' run.")


def resolved_for_resume(stored: C, asked: C, explicit: set[str]) -> C:
    """The stored settings, with only RESUMABLE ones taken from the resuming command."""
    for name in explicit - RESUMABLE:
        if getattr(asked, name) != getattr(stored, name):
            raise NfieldsError(f"the run was made with {name}={getattr(stored, name)!r}, not "
                               f"{getattr(asked, name)!r}; resume with the run's own settings or start a new run.")
    return dataclasses.replace(stored, **{k: getattr(asked, k) for k in explicit & RESUMABLE})


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state_dict inside a checkpoint's tensors (stored under `model.`)."""
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_trained(run_dir: Path, build: Callable[[dict], torch.nn.Module], device: str = "auto",
                 cls: type | None = None) -> tuple[torch.nn.Module, dict]:
    """A run folder's model from its newest good checkpoint, in eval mode on `device`: `build(config)` makes the
    module from the run's config.json (returned too, checked as a manifest, and its settings against `cls` when
    given), the checkpoint fills its weights."""
    run_dir = Path(run_dir)
    data = read_manifest(run_dir)
    if cls is not None:
        _check_kind(data, cls, run_dir)
        settings_from_manifest(data, cls, run_dir / "config.json")
    try:
        model = build(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise NfieldsError(f"'{run_dir / 'config.json'}' does not describe a model this nfields can build "
                           f"({type(error).__name__}: {str(error)[:80]}); restore the file or fit the run again.") from None
    found = load_latest(run_dir)
    if found is None:
        raise NfieldsError(f"'{run_dir}' has no checkpoint yet; fit it first (or --resume it).")
    load_weights(model, model_state(found[0]), f"'{run_dir}'")  # nfields.train.weights: one sentence on a mismatch
    return model.to(resolve_device(device)).eval(), data
