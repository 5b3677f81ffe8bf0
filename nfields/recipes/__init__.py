"""Named, typed presets that reproduce a paper's setting: defaults < recipe < config file < flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import NfieldsError
from ..registry import did_you_mean


@dataclass(frozen=True)
class Recipe:
    name: str
    job: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("siren-camera", "fit-image",
           "SIREN's official cameraman setup: 256x256 gray, linspace(-1, 1) coordinates, "
           "3 hidden x 256, omega0 30, Adam 1e-4, full batch, 500 steps",
           {"source": "camera", "size": [256], "field": "siren", "coords": "endpoints", "steps": 500, "lr": 1e-4}),
    Recipe("siren-camera-512", "fit-image",
           "SIREN on the full 512x512 cameraman, 10,000 steps (DESIGN.md: 40.6-41.6 dB on an H100)",
           {"source": "camera", "size": [512], "field": "siren", "coords": "endpoints", "steps": 10000,
            "lr": 1e-4, "checkpoint_every": 1000}),
    Recipe("hashgrid-camera-512", "fit-image",
           "multi-resolution hash encoding on the 512x512 cameraman (instant-NGP's image setup)",
           {"source": "camera", "size": [512], "field": "hashgrid", "steps": 2000, "lr": 1e-2}),
    Recipe("siren-audio", "fit-audio",
           "SIREN's official audio setup (Colab): time linspace(-1, 1), first-layer omega0 3000 (then 30), "
           "3 hidden x 256, waveform / max|x|, Adam 1e-4, full batch, 1000 steps; on front-center",
           {"source": "front-center", "field": "siren", "field_options": {"first_omega0": 3000.0},
            "normalize": "peak", "steps": 1000, "lr": 1e-4}),
]}


def recipe(name: str, job: str) -> Recipe:
    if name not in RECIPES:
        raise NfieldsError(f"unknown recipe '{name}'{did_you_mean(name, RECIPES)}; "
                           f"choose one of: {', '.join(sorted(RECIPES))}.")
    found = RECIPES[name]
    if found.job != job:
        raise NfieldsError(f"recipe '{name}' is for '{found.job}', not '{job}'.")
    return found
