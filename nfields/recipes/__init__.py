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
    # Chosen by trials on this project's 2-core CPU (README, "A generalizable INR on a laptop"), not a paper's.
    Recipe("ginr-small", "train-ginr",
           "a generalizable INR that learns on a laptop CPU in minutes: IPC with a one-block width-64 encoder "
           "(7x7-pixel patches, 16 tokens) and a width-64 hyponet, batch 16, Adam 4e-3, a quarter of the pixels "
           "decoded per step, 240 s of training (Fashion-MNIST: 24.4 dB test PSNR on 2 cores)",
           {"source": "fashion-mnist", "field": "ipc", "batch": 16, "lr": 4e-3, "pixel_fraction": 0.25,
            "steps": 1_000_000, "seconds": 240.0,
            "field_options": {"width": 64, "depth": 1, "heads": 2, "patch_size": 7, "tokens": 16, "hidden_width": 64,
                              "fourier_sigma": 10.1}}),
]}


def recipe(name: str, job: str) -> Recipe:
    if name not in RECIPES:
        raise NfieldsError(f"unknown recipe '{name}'{did_you_mean(name, RECIPES)}; "
                           f"choose one of: {', '.join(sorted(RECIPES))}.")
    found = RECIPES[name]
    if found.job != job:
        raise NfieldsError(f"recipe '{name}' is for '{found.job}', not '{job}'.")
    return found
