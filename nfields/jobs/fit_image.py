"""Fit one image with one field: the objective, the Python entry point, and the run folder."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from .. import viz
from ..data.grid import CONVENTIONS
from ..data.image import ImageSignal, available_memory, load_image
from ..errors import NfieldsError
from ..fields import Field, field_from_spec, make_field, parameter_count
from ..io import write_json_atomic
from ..render import render_image
from ..train import Trainer
from ..train.run import load_run_config, load_trained, open_run_dir
from .image_objectives import SUPERVISION, ImageObjective, PoissonObjective, decode_values
from .common import FitConfig, final_metrics, prepare, start_run, train_field, write_run_config


@dataclass
class FitImageConfig(FitConfig):
    """Everything that defines an image fit; written resolved to `config.json` in the run folder."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-image",)

    path_settings: ClassVar[tuple[str, ...]] = ("source", "mask")

    source: str = "camera"
    size: list[int] | None = None
    coords: str = "centers"  # "centers" or "endpoints" (SIREN's linspace(-1, 1))
    batch_pixels: int = 0  # 0: every training pixel in every step
    keep_fraction: float = 1.0  # < 1: inpainting, train on a random subset of pixels
    mask: str | None = None  # inpainting: an image whose non-zero pixels are the training pixels
    supervise: str = "values"  # or "gradient" / "laplacian": Poisson reconstruction

    def validate(self) -> None:
        super().validate()
        if self.size is not None and (len(self.size) not in (1, 2) or any(s <= 0 for s in self.size)):
            raise NfieldsError(f"--size takes one or two positive integers, not {self.size}.")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise NfieldsError(f"--keep-fraction must be in (0, 1], not {self.keep_fraction}.")
        if self.keep_fraction < 1.0 and self.mask:
            raise NfieldsError("give either --keep-fraction or --mask, not both.")
        if self.coords not in CONVENTIONS:
            raise NfieldsError(f"unknown coordinate convention '{self.coords}'; use {' or '.join(CONVENTIONS)}.")
        if self.supervise not in SUPERVISION:
            raise NfieldsError(f"unknown --supervise '{self.supervise}'; use {', '.join(SUPERVISION)}.")
        if self.supervise != "values" and (self.keep_fraction < 1.0 or self.mask):
            raise NfieldsError("inpainting (--keep-fraction, --mask) needs --supervise values.")
        if self.batch_pixels < 0:
            raise NfieldsError(f"--batch-pixels must be 0 (all pixels) or positive, not {self.batch_pixels}.")


@dataclass
class FittedImage:
    """A field fitted to an image, with what is needed to render it anywhere."""

    field: Field
    height: int
    width: int
    convention: str = "centers"
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Added to every channel's values: the constant of integration of a Poisson fit.
    offset: list[float] | None = None

    def output_size(self, height: int | None = None, width: int | None = None, scale: float | None = None,
                    region: Sequence[float] | None = None) -> tuple[int, int]:
        """The rendered size: explicit, or `scale` output pixels per fitted pixel of `region`."""
        if region is not None and not all(math.isfinite(v) for v in region):
            raise NfieldsError(f"--region x0 y0 x1 y1 must be finite numbers, not {list(region)}.")
        if region is not None and not (region[2] > region[0] and region[3] > region[1]):
            raise NfieldsError(f"--region x0 y0 x1 y1 needs x1 > x0 and y1 > y0, not {list(region)}.")
        if scale is not None:
            if not (math.isfinite(scale) and scale > 0):
                raise NfieldsError(f"--scale must be positive (and finite), not {scale}.")
            x0, y0, x1, y1 = region if region is not None else (0, 0, self.width, self.height)
            return max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
        height = self.height if height is None else height
        width = self.width if width is None else width
        if height <= 0 or width <= 0:
            raise NfieldsError(f"the output size must be positive, not {height}x{width}.")
        return height, width

    def render(self, height: int | None = None, width: int | None = None, scale: float | None = None,
               region: Sequence[float] | None = None, chunk: int = 1 << 18, progress=None) -> np.ndarray:
        """(height, width, C) values in [0, 1] over `region` (pixel units of the fitted image)."""
        height, width = self.output_size(height, width, scale, region)
        raw = render_image(self.field, height, width, (self.height, self.width), self.convention, region,
                           chunk, progress)
        values = decode_values(raw) + (np.asarray(self.offset, np.float32) if self.offset else 0)
        return np.clip(values, 0, 1)


# -- the Python entry point -------------------------------------------------------------------

def fit_image(signal: ImageSignal, model: Field, config: FitImageConfig | None = None,
              run_dir: Path | None = None, resume: bool = False, progress: bool = True,
              keep: torch.Tensor | None = None, **overrides: Any) -> tuple[FittedImage, Trainer]:
    """Fit `model` to `signal`; `overrides` are FitImageConfig fields (steps=500, lr=1e-4, ...).

    Without `run_dir` nothing is written; with it, checkpoints and TensorBoard events go there.
    """
    config = dataclasses.replace(config or FitImageConfig(), **overrides)
    device = prepare(config)
    model = model.to(device)
    if config.supervise == "values":
        objective = ImageObjective(model, signal, config.coords, keep, config.batch_pixels, device)
    else:
        objective = PoissonObjective(model, signal, config.coords, config.supervise, config.batch_pixels, device)
    if device.type == "cpu":
        _check_training_memory(model, objective)
    trainer = train_field(objective, model, config, run_dir, resume, progress, f"{config.field} {signal.name}",
                          "pass --batch-pixels (e.g. 65536) or a smaller --size")
    offset = objective.offset.tolist() if isinstance(objective, PoissonObjective) else None
    fitted = FittedImage(model, signal.height, signal.width, config.coords, final_metrics(trainer, objective),
                         offset)
    return fitted, trainer


def _check_training_memory(model: Field, objective: ImageObjective) -> None:
    """Refuse, with advice, a full-batch step that would not fit in host memory."""
    probe = 1024
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(objective.train_coords[:probe])
    pixels = objective.batch_pixels or len(objective.train_coords)
    need = 2 * sum(saved) * pixels / min(probe, len(objective.train_coords))  # saved activations + their grads
    if need > 0.8 * available_memory():
        raise NfieldsError(f"a full-batch step over {pixels} pixels needs about {need / 2**30:.1f} GiB of memory; "
                           f"pass --batch-pixels (e.g. 65536) or a smaller --size.")


# -- run folders --------------------------------------------------------------------------------

def make_keep_mask(config: FitImageConfig, signal: ImageSignal) -> torch.Tensor | None:
    """(H, W) bool of training pixels, or None for all of them."""
    if config.mask:
        mask_signal = load_image(config.mask)
        if (mask_signal.height, mask_signal.width) != (signal.height, signal.width):
            mask_signal = mask_signal.resized([signal.height, signal.width])
        keep = torch.from_numpy(mask_signal.values[..., 0] > 0.5)
    elif config.keep_fraction < 1.0:
        generator = torch.Generator().manual_seed(config.seed + 1)
        keep = torch.rand(signal.height, signal.width, generator=generator) < config.keep_fraction
    else:
        return None
    if not keep.any():
        raise NfieldsError("the mask keeps no pixels; white (non-zero) pixels are the ones to train on.")
    if keep.all():
        return None
    return keep


def run_fit_image(config: FitImageConfig, out: Path, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit image` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    signal = load_image(config.source, tuple(config.size) if config.size else None)
    keep = make_keep_mask(config, signal)
    torch.manual_seed(config.seed)
    model = make_field(config.field, 2, signal.channels, **config.field_options)

    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model,
                         image={"height": signal.height, "width": signal.width, "channels": signal.channels})
        fitted, trainer = fit_image(signal, model, config, run_dir=run_dir, resume=resume, progress=progress,
                                    keep=keep)

    reconstruction = fitted.render()
    target = signal.values
    metrics = {**fitted.metrics, "steps": trainer.step, "seconds": trainer.seconds,
               "params": parameter_count(model), "field": config.field, "device": str(device),
               "image": f"{signal.width}x{signal.height}x{signal.channels}", "source": config.source,
               "supervise": config.supervise, "history": trainer.history.evals}
    if fitted.offset is not None:
        metrics["value_offset"] = fitted.offset
    viz.save_image(reconstruction, out / "reconstruction.png")
    title = f"{config.field} on {signal.name}: {metrics['psnr']:.2f} dB after {trainer.step} steps"
    viz.save_comparison(target, reconstruction, out / "comparison.png", title,
                        mask=None if keep is None else keep.numpy())
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png", title)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def load_config(run_dir: str | Path) -> FitImageConfig:
    return load_run_config(Path(run_dir), FitImageConfig)


def load_fitted(run_dir: str | Path, device: str = "auto") -> FittedImage:
    """A fitted image from a run folder (its newest checkpoint)."""
    run_dir = Path(run_dir)
    model, data = load_trained(run_dir, lambda data: field_from_spec(data["field_spec"]), device, cls=FitImageConfig)
    config = load_config(run_dir)
    image = data["image"]
    try:  # a Poisson fit's constant of integration, known once the fit has finished
        offset = json.loads((run_dir / "metrics.json").read_text()).get("value_offset")
    except (OSError, ValueError):
        offset = None
    return FittedImage(model, image["height"], image["width"], config.coords, offset=offset)
