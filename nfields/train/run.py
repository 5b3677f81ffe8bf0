"""Run folders: checked before anything is written, created for a job, and left as they were
found (or gone) when a fresh run fails before its first checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from ..errors import NfieldsError
from .checkpoint import load_latest
from .device import resolve_device
from .weights import load_weights

C = TypeVar("C")

#: Settings a resuming command may change: the budget and how it is watched, never the experiment.
RESUMABLE = frozenset({"steps", "device", "checkpoint_every", "log_every", "eval_every", "eval_at",
                       "seconds", "eval_at_seconds"})


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a folder that cannot be used as asked."""
    if out.exists() and not out.is_dir():
        raise NfieldsError(f"--out '{out}' is a file; give a folder for the run.")
    if resume:
        if not (out / "config.json").exists():
            raise NfieldsError(f"there is no run to resume in '{out}'; start it without --resume.")
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise NfieldsError(f"'{out}' already holds a run; pass --resume to continue it, --overwrite to "
                           f"replace it, or another --out.")
    parent = out
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".nfields-write-test-{time.time_ns()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError:
        raise NfieldsError(f"cannot write to '{parent}'; choose an --out folder you can write to.") from None


@contextmanager
def open_run_dir(out: Path, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Create (or, with `overwrite`, replace) the run folder for the body of the `with`.

    If a fresh run fails with a user error or an interrupt before its first checkpoint, the
    folder is removed again (or emptied, when it existed empty before): no half-written run.
    """
    created = not out.exists()
    if overwrite and not resume and out.exists():
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NfieldsError(f"cannot create the run folder '{out}' ({error.strerror}); choose another --out.") from None
    try:
        yield out
    except (NfieldsError, KeyboardInterrupt):
        if not resume and load_latest(out) is None:
            if created or overwrite:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for child in out.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def load_run_config(run_dir: Path, cls: type[C]) -> C:
    """The settings dataclass `cls` stored in a run folder's config.json."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        raise NfieldsError(f"'{run_dir}' is not a run folder (no readable config.json).") from None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


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


def load_trained(run_dir: Path, build: Callable[[dict], torch.nn.Module],
                 device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """A run folder's model from its newest checkpoint, in eval mode on `device`: `build(config)` makes the
    module from the run's config.json (returned too), the checkpoint fills its weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NfieldsError(f"run folder '{run_dir}' does not exist; give the --out folder of a fit.")
    try:
        data = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise NfieldsError(f"'{run_dir}' is not a run folder (no readable config.json).") from None
    model = build(data)
    found = load_latest(run_dir)
    if found is None:
        raise NfieldsError(f"'{run_dir}' has no checkpoint yet; fit it first (or --resume it).")
    load_weights(model, model_state(found[0]), f"'{run_dir}'")  # nfields.train.weights: one sentence on a mismatch
    return model.to(resolve_device(device)).eval(), data
