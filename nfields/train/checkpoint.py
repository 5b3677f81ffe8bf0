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


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu"
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint whose two files both read back whole, or None."""
    for meta_path in checkpoints(run_dir):
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(meta_path.with_suffix(".safetensors")), device=str(map_location))
            return tensors, meta
        except (OSError, ValueError, RuntimeError, SafetensorError):
            continue  # damaged or half-deleted: fall back to the one before
    return None


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
