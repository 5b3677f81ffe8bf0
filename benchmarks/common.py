"""What every benchmark script shares: the header of its results JSON, its title, freeing memory."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch


def header(benchmark: str, device: str) -> dict:
    """Which benchmark, on what, when: the first keys of every results JSON."""
    return {"benchmark": benchmark, "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "date": datetime.date.today().isoformat(), "precision": "fp32"}


def results_path(given: Path | None, name: str) -> Path:
    """Where a run writes its JSON: --json's path, or benchmarks/results/NAME.json; the folder is made."""
    path = given or Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_results(path: Path, result: dict) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def merge_results(paths, lists: tuple[str, ...] = ("rows",)) -> dict:
    """Several runs' JSON as one: the first run's header, the `lists` concatenated, each run's header kept."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result = {**parts[0], **{key: [item for part in parts for item in part.get(key, [])] for key in lists}}
    result["runs"] = [{k: v for k, v in part.items() if k not in lists} for part in parts]
    return result


def title(result: dict, what: str) -> str:
    return (f"{result['benchmark']} on {result['device_name']} ({result['device']}), torch {result['torch']}, "
            f"{result['date']}; {what}")


def release(device: str) -> None:
    """Hand cached GPU memory back between runs, so one field's peak does not crowd the next."""
    if device == "cuda":
        torch.cuda.empty_cache()
