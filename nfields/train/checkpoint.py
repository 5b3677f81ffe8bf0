"""Checkpoints: safetensors for tensors plus JSON for everything else, written atomically.

`checkpoint-<step>.safetensors` is written first, `checkpoint-<step>.json` last; the JSON is
the commit marker, so a checkpoint exists only once both are whole. Loading never unpickles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import NfieldsError, notice
from ..io import atomic_path, write_json_atomic

PATTERN = re.compile(r"checkpoint-(\d+)\.json$")


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    keep: int = 2) -> Path:
    stem = run_dir / f"checkpoint-{step:08d}"
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    write_json_atomic(stem.with_suffix(".json"), {"step": step, **meta})
    kept = {p.with_suffix(".safetensors") for p in checkpoints(run_dir)[:keep]}
    for old in checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    # Tensors of older checkpoints, and leftovers of a write that a kill interrupted.
    for stale in [*run_dir.glob("checkpoint-*.safetensors"), *run_dir.glob(".checkpoint-*.tmp*")]:
        if stale not in kept:
            stale.unlink(missing_ok=True)
    return stem.with_suffix(".json")


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint JSON files, newest first."""
    found = [p for p in Path(run_dir).glob("checkpoint-*.json") if PATTERN.search(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)), reverse=True)


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu", quiet: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint whose two files both read back whole, or None when the folder has none.

    A damaged newer one is never skipped silently: one line on stderr says which was skipped and why (unless
    `quiet`). When checkpoints exist but none reads back whole, an NfieldsError says so: the caller must not
    take that for a run with no checkpoint yet (and start again from step 0).
    """
    skipped: list[str] = []
    for meta_path in checkpoints(run_dir):
        found = _read_checkpoint(meta_path, map_location)
        if isinstance(found, str):
            skipped.append(f"{meta_path.stem} ({found})")
            continue
        if skipped and not quiet:
            notice(f"warning: skipped the damaged {'; '.join(skipped)} in '{run_dir}'; using {meta_path.stem}.")
        return found
    if skipped:
        raise NfieldsError(f"no checkpoint in '{run_dir}' reads back whole ({'; '.join(skipped)}); restore one "
                           f"from a copy, or start the run again with --overwrite.")
    return None


def _read_checkpoint(meta_path: Path, map_location: str | torch.device
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | str:
    """(tensors, meta) of one checkpoint, or why it cannot be used."""
    try:
        meta = json.loads(meta_path.read_text())
    except OSError as error:
        return f"its .json cannot be read: {error.strerror}"
    except ValueError:
        return "its .json is not valid JSON"
    step = int(PATTERN.search(meta_path.name).group(1))
    if not isinstance(meta, dict) or meta.get("step") != step or type(meta.get("step")) is not int:
        return f"its .json does not describe step {step}"
    tensors_path = meta_path.with_suffix(".safetensors")
    if not tensors_path.exists():
        return "its .safetensors file is missing"
    try:
        tensors = load_file(str(tensors_path), device=str(map_location))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"its .safetensors file is damaged: {reason[:80]}"
    return tensors, meta


#: Leftovers of writes that a kill interrupted: ours (nfields.io.atomic_path: `.NAME.XXXXXXXX.tmpSUFFIX`)
#: and the safetensors library's own (`.tmpXXXXXX`, renamed over ours when whole).
TEMPORARY = (re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$"), re.compile(r"^\.tmp[A-Za-z0-9]{6}$"))


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files of interrupted writes anywhere in `run_dir`, and tensors whose checkpoint
    was never committed (no .json beside them: a kill between the two files). Returns what was removed."""
    removed = []
    committed = {p.with_suffix(".safetensors") for p in checkpoints(run_dir)}
    for path in Path(run_dir).rglob(".*"):
        if path.is_file() and any(p.match(path.name) for p in TEMPORARY):
            path.unlink(missing_ok=True)
            removed.append(path)
    for tensors in Path(run_dir).glob("checkpoint-*.safetensors"):
        if tensors not in committed:
            tensors.unlink(missing_ok=True)
            removed.append(tensors)
    return removed


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into named tensors and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
