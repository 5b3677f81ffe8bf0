"""Fit one independent field per image of a dataset, K images at a time: the settings, the Python entry
points, and the run folder (every field's weights in one safetensors file, per-image PSNR, pictures)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import viz
from ..data.datasets import SPLITS, ImageDataset, load_dataset
from ..data.grid import CONVENTIONS
from ..errors import NfieldsError
from ..fields import Field, field_from_spec, make_field, parameter_count
from ..io import atomic_path, write_bytes_atomic, write_json_atomic
from ..train import Trainer
from ..train.run import load_run_config, open_run_dir
from .common import FitConfig, prepare, run_trainer, start_run, write_run_config
from .fit_image import FittedImage
from .image_slots import FieldStack, ImageSlotsObjective

FORMAT = "nfields-fitted-images-1"  # the safetensors metadata's "format": what load_fitted_images reads
PREVIEW = 16  # images shown in reconstructions.png


@dataclass
class FitImagesConfig(FitConfig):
    """Everything that defines a batched fit of a dataset's images; written resolved to `config.json`."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-images",)

    path_settings: ClassVar[tuple[str, ...]] = ("source",)

    source: str = ""
    split: str = "all"  # train, test or all (a folder: every 10th file is test, or its train/ and test/)
    size: list[int] | None = None  # S (square) or H W; None: the dataset's own size
    limit: int | None = None  # the first N images of the split
    batch: int = 256  # images fitted at once (K slots)
    target_psnr: float | None = None  # an image stops once it reaches this (dB); None: every image runs `steps`
    coords: str = "centers"  # or "endpoints" (SIREN's linspace(-1, 1))
    check_every: int = 10  # steps between checks for finished images (the only host syncs)

    def validate(self) -> None:
        super().validate()
        if self.batch <= 0:
            raise NfieldsError(f"--batch must be a positive number of images, not {self.batch}.")
        if self.limit is not None and self.limit <= 0:
            raise NfieldsError(f"--limit must be a positive number of images, not {self.limit}.")
        if self.target_psnr is not None and not self.target_psnr > 0:
            raise NfieldsError(f"--target-psnr must be a positive PSNR in dB, not {self.target_psnr}.")
        if self.check_every <= 0:
            raise NfieldsError(f"--check-every must be a positive number of steps, not {self.check_every}.")
        if self.split not in SPLITS:
            raise NfieldsError(f"unknown --split '{self.split}'; use {', '.join(SPLITS)}.")
        if self.size is not None and (len(self.size) not in (1, 2) or any(s <= 0 for s in self.size)):
            raise NfieldsError(f"--size takes one or two positive integers, not {self.size}.")
        if self.coords not in CONVENTIONS:
            raise NfieldsError(f"unknown coordinate convention '{self.coords}'; use {' or '.join(CONVENTIONS)}.")
        if self.kernel == "fused":
            raise NfieldsError("--kernel fused is not available to batched fits (vmap runs the PyTorch path); "
                               "use --kernel auto or torch.")

    def load(self) -> ImageDataset:
        size = None if self.size is None else (self.size[0] if len(self.size) == 1 else tuple(self.size))
        return load_dataset(self.source, self.split, size, self.limit)


@dataclass
class FittedImages:
    """N fields of one architecture, field i fitted to image i: `weights` {state_dict name: (N, *shape)},
    each image's `psnr` (dB, of the stored weights, prediction clamped to [0, 1]) and `steps`."""

    spec: dict
    weights: dict[str, torch.Tensor]
    psnr: torch.Tensor
    steps: torch.Tensor
    height: int
    width: int
    convention: str = "centers"

    def __len__(self) -> int:
        return len(self.psnr)

    def field(self, index: int) -> Field:
        """Image `index`'s field, in eval mode on the CPU (render it with nfields.render or `fitted(index)`)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} is out of range for {len(self)} fitted images")
        with torch.random.fork_rng(devices=[]):  # building the module draws initial weights we then replace
            field = field_from_spec(self.spec)
        field.load_state_dict({name: values[index] for name, values in self.weights.items()})
        return field.eval()

    def fitted(self, index: int) -> FittedImage:
        """Image `index` as a FittedImage: `.render()` gives its (H, W, C) values in [0, 1] at any size."""
        return FittedImage(self.field(index), self.height, self.width, self.convention,
                           {"psnr": float(self.psnr[index])})

    @classmethod
    def from_stack(cls, stack: FieldStack, spec: dict, height: int, width: int, convention: str) -> "FittedImages":
        return cls(spec, stack.fitted_state(), stack.psnr.clone(), stack.steps.clone(), height, width, convention)

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: every tensor stacked over the images, `psnr`, `steps`; the spec as metadata."""
        tensors = {name: values.contiguous().clone() for name, values in self.weights.items()}
        tensors.update(psnr=self.psnr.float(), steps=self.steps.long())
        metadata = {"format": FORMAT, "field_spec": json.dumps(self.spec), "height": str(self.height),
                    "width": str(self.width), "coords": self.convention}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)


# -- the Python entry points --------------------------------------------------------------------------

def fit_images(data: ImageDataset | str | os.PathLike, config: FitImagesConfig | None = None,
               run_dir: Path | None = None, resume: bool = False, progress: bool = True,
               **overrides: Any) -> tuple[FittedImages, Trainer]:
    """Fit one field per image of `data` (an ImageDataset, or a dataset name or folder loaded with the config's
    split, size and limit); `overrides` are FitImagesConfig fields (batch=512, target_psnr=30, steps=1000, ...).

    Without `run_dir` nothing is written; with it, checkpoints go there and `resume` continues from them.
    """
    config = dataclasses.replace(config or FitImagesConfig(), **overrides)
    device = prepare(config)
    if not isinstance(data, ImageDataset):
        data = dataclasses.replace(config, source=str(data)).load()
    elif config.limit is not None:
        keep = slice(config.limit)
        data = dataclasses.replace(data, images=data.images[keep], names=data.names[keep],
                                   labels=None if data.labels is None else data.labels[keep])
    objective = ImageSlotsObjective(data.images, config, device)
    # The Trainer's steps bound the run: each slot takes images one after another, at most `steps` each, and the
    # last check needs one more step.
    bound = math.ceil(len(data) / len(objective.model.weights)) * config.steps + 1
    trainer = run_trainer(objective, objective.optimizer, dataclasses.replace(config, steps=bound), run_dir, resume,
                          progress, f"{config.field} x{len(data)} images", "lower --batch")
    if not objective.finished():
        raise RuntimeError(f"the batched fit ended with images unfitted after {trainer.step} steps")
    fitted = FittedImages.from_stack(objective.model, objective.template.spec(), data.height, data.width,
                                     config.coords)
    return fitted, trainer


def load_fitted_images(run_dir: str | os.PathLike) -> FittedImages:
    """The fields of a `nfields fit images` run (its folder, or its fields.safetensors)."""
    path = Path(run_dir)
    if path.is_dir() and (path / "config.json").exists():
        load_run_config(path, FitImagesConfig)  # a hand-edited run manifest is one sentence naming the key
    path = path / "fields.safetensors" if path.is_dir() else path
    if not path.exists():
        raise NfieldsError(f"'{run_dir}' holds no fields.safetensors; give the --out folder of a finished "
                           f"'nfields fit images' run.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if metadata.get("format") != FORMAT:
            raise ValueError("no nfields fitted-images metadata")
        spec = json.loads(metadata["field_spec"])
        psnr, steps = tensors.pop("psnr"), tensors.pop("steps")
        return FittedImages(spec, tensors, psnr, steps, int(metadata["height"]), int(metadata["width"]),
                            metadata.get("coords", "centers"))
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise NfieldsError(f"'{path}' is not a readable fitted-images file ({error}); fit the run again.") from None


# -- the run folder ------------------------------------------------------------------------------------

def run_fit_images(config: FitImagesConfig, out: Path, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit images` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    data = config.load()
    spec_field = make_field(config.field, 2, data.channels, **config.field_options)
    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, spec_field,
                         image={"height": data.height, "width": data.width, "channels": data.channels,
                                "count": len(data)})
        fitted, trainer = fit_images(data, config, run_dir=run_dir, resume=resume, progress=progress)
    fitted.save(out / "fields.safetensors")
    metrics = summary(fitted, config, trainer, device, parameter_count(spec_field), data)
    write_json_atomic(out / "metrics.json", metrics)
    write_psnr_csv(fitted, data.names, out / "psnr.csv")
    save_reconstructions(fitted, data, out / "reconstructions.png")
    psnr = fitted.psnr.numpy()
    viz.save_histogram(psnr, out / "psnr_histogram.png",
                       f"{config.field} on {len(data)} {data.name} images: mean {psnr.mean():.2f} dB", "PSNR (dB)",
                       "images", config.target_psnr, f"target {config.target_psnr:g} dB" if config.target_psnr else "")
    return metrics


def summary(fitted: FittedImages, config: FitImagesConfig, trainer: Trainer, device: torch.device, params: int,
            data: ImageDataset) -> dict[str, Any]:
    psnr = fitted.psnr.double()
    return {"images": len(fitted), "psnr_mean": float(psnr.mean()), "psnr_median": float(psnr.median()),
            "psnr_min": float(psnr.min()), "target_psnr": config.target_psnr,
            "reached_target": None if config.target_psnr is None else float((psnr >= config.target_psnr).double().mean()),
            "steps_per_image_mean": float(fitted.steps.double().mean()),
            "images_per_second": len(fitted) / trainer.seconds if trainer.seconds else None,
            "seconds": trainer.seconds, "steps": trainer.step, "batch": min(config.batch, len(fitted)),
            "device": str(device), "field": config.field, "params_per_field": params, "source": config.source,
            "split": config.split, "image": f"{data.width}x{data.height}x{data.channels}"}


def write_psnr_csv(fitted: FittedImages, names: list[str], path: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", "name", "psnr", "steps"])
    for i, (psnr, steps) in enumerate(zip(fitted.psnr.tolist(), fitted.steps.tolist())):
        writer.writerow([i, names[i], f"{psnr:.4f}", steps])
    write_bytes_atomic(path, text.getvalue().encode())


def save_reconstructions(fitted: FittedImages, data: ImageDataset, path: Path) -> None:
    """Targets above reconstructions (with their PSNR) for the first images, eight to a row."""
    shown = min(PREVIEW, len(fitted))
    targets = data.batch(range(shown)).numpy()
    rows, titles, captions = [], [], []
    for start in range(0, shown, 8):
        part = range(start, min(start + 8, shown))
        rows += [[targets[i] for i in part], [fitted.fitted(i).render() for i in part]]
        titles += ["target", "fitted"]
        captions += [None, [f"{float(fitted.psnr[i]):.1f} dB" for i in part]]
    viz.save_grid(rows, titles, path, f"images 0-{shown - 1}", captions)
