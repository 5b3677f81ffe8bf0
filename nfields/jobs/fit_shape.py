"""Fit one 3D shape with one field, as a signed distance (SIREN, DeepSDF) or an occupancy
(Occupancy Networks): the Python entry point and the run folder (mesh.ply, preview.png, metrics.json)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.shape import ShapeSamples, ShapeSignal, load_shape
from ..errors import NfieldsError
from ..fields import Field, field_from_spec, make_field, parameter_count
from ..io import write_json_atomic
from ..metrics.shape import FSCORE_THRESHOLD
from ..render.mesh import extract_mesh, save_shape_preview, write_ply
from ..train import Trainer
from ..train.run import load_run_config, load_trained, open_run_dir
from .common import FitConfig, final_metrics, prepare, start_run, train_field, write_run_config
from .shape_objectives import MODES, SDF_LOSSES, make_objective


@dataclass
class FitShapeConfig(FitConfig):
    """Everything that defines a shape fit; written resolved to `config.json` in the run folder."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-shape",)

    source: str = "bunny"
    mode: str = "sdf"  # or "occupancy"
    sdf_loss: str = "siren"  # or "regression" (needs a watertight mesh)
    batch_points: int = 10_000  # per step: on-surface points (+ as many uniform ones, siren) or pool points
    resolution: int = 128  # marching-cubes grid points per side
    surface_samples: int = 200_000  # pool of on-surface training points
    pool_points: int = 100_000  # labelled pool (occupancy labels or signed distances), half near the surface
    eval_points: int = 100_000  # surface samples on each side of Chamfer / normal consistency; uniform IoU points

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise NfieldsError(f"unknown --mode '{self.mode}'; use {' or '.join(MODES)}.")
        if self.sdf_loss not in SDF_LOSSES:
            raise NfieldsError(f"unknown --sdf-loss '{self.sdf_loss}'; use {' or '.join(SDF_LOSSES)}.")
        if self.resolution < 8:
            raise NfieldsError(f"--resolution must be at least 8 grid points per side, not {self.resolution}.")
        for name in ("batch_points", "surface_samples", "pool_points", "eval_points"):
            if getattr(self, name) <= 0:
                raise NfieldsError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}.")

    @property
    def objective_name(self) -> str:
        return "occupancy" if self.mode == "occupancy" else f"sdf-{self.sdf_loss}"


@dataclass
class FittedShape:
    """A field fitted to a shape in [-1, 1]^3: a signed distance (`mode` sdf) or an occupancy logit."""

    field: Field
    mode: str = "sdf"
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: The mesh of the final evaluation (at the fit's resolution), so it is not extracted twice.
    last_mesh: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None, repr=False)

    def extract_mesh(self, resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes at level 0 on a resolution^3 grid: vertices (V, 3) in [-1, 1]^3, faces (F, 3)."""
        return extract_mesh(self.field, resolution, 0.0, inside_below=self.mode == "sdf")


def shape_samples(signal: ShapeSignal, config: FitShapeConfig) -> ShapeSamples:
    """The samples a fit of `signal` needs; NfieldsError when its mode needs a watertight mesh and it is not."""
    if config.mode == "occupancy":
        signal.require_watertight("--mode occupancy")
    if config.mode == "sdf" and config.sdf_loss == "regression" and not signal.watertight:
        raise NfieldsError(f"--sdf-loss regression needs true signed distances, which exist only for a watertight "
                           f"mesh, and '{signal.name}' is {'not watertight' if signal.is_mesh else 'a point cloud'}; "
                           f"use --sdf-loss siren (the default, it needs only oriented points) or repair the mesh.")
    regression = config.mode == "sdf" and config.sdf_loss == "regression"
    return ShapeSamples.from_signal(signal, config.surface_samples, config.eval_points,
                                    occupancy=config.pool_points if config.mode == "occupancy" else 0,
                                    sdf=config.pool_points if regression else 0, iou=config.eval_points,
                                    seed=config.seed)


# -- the Python entry point -------------------------------------------------------------------

def fit_shape(shape: ShapeSignal | ShapeSamples, model: Field, config: FitShapeConfig | None = None,
              run_dir: Path | None = None, resume: bool = False, progress: bool = True,
              **overrides: Any) -> tuple[FittedShape, Trainer]:
    """Fit `model` (3 inputs, 1 output) to a shape or to prepared samples of one; `overrides` are
    FitShapeConfig fields (steps=500, mode="occupancy", ...). Without `run_dir` nothing is written."""
    config = dataclasses.replace(config or FitShapeConfig(), **overrides)
    device = prepare(config)
    samples = shape if isinstance(shape, ShapeSamples) else shape_samples(shape, config)
    if model.in_features != 3 or model.out_features != 1:
        raise NfieldsError(f"a shape field maps 3 coordinates to 1 value, not {model.in_features} to "
                           f"{model.out_features}; make it with make_field(name, 3, 1).")
    model = model.to(device)
    objective = make_objective(config.mode, config.sdf_loss, model, samples, config.batch_points, config.resolution,
                               device, eval_points=config.eval_points, seed=config.seed)
    trainer = train_field(objective, model, config, run_dir, resume, progress,
                          f"{config.field} {config.objective_name} {samples.name}", "pass a smaller --batch-points")
    fitted = FittedShape(model, config.mode, final_metrics(trainer, objective), objective.last_mesh)
    return fitted, trainer


# -- run folders --------------------------------------------------------------------------------

def run_fit_shape(config: FitShapeConfig, out: Path, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit shape` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    signal = load_shape(config.source)
    samples = shape_samples(signal, config)
    torch.manual_seed(config.seed)
    model = make_field(config.field, 3, 1, **config.field_options)

    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model,
                         shape={"name": signal.name, "description": signal.describe(),
                                "watertight": signal.watertight})
        fitted, trainer = fit_shape(samples, model, config, run_dir=run_dir, resume=resume, progress=progress)

    vertices, faces = fitted.last_mesh or fitted.extract_mesh(config.resolution)
    write_ply(out / "mesh.ply", vertices, faces)
    metrics = {**fitted.metrics, "steps": trainer.step, "seconds": trainer.seconds,
               "params": parameter_count(model), "field": config.field, "device": str(device),
               "mode": config.mode, "objective": config.objective_name, "source": config.source,
               "shape": signal.describe(), "resolution": config.resolution, "fscore_threshold": FSCORE_THRESHOLD,
               "faces": len(faces), "history": trainer.history.evals}
    title = (f"{config.field} {config.objective_name} on {signal.name}: Chamfer L1 "
             f"{metrics['chamfer_l1']:.4f} after {trainer.step} steps")
    reference = ((signal.name + " (input)", signal.vertices, signal.faces, signal.normals),
                 (f"reconstruction {config.resolution}^3", vertices, faces, None))
    save_shape_preview(list(reference), out / "preview.png", title)
    write_json_atomic(out / "metrics.json", _json_safe(metrics))
    return metrics


def _json_safe(value: Any) -> Any:
    """NaN (e.g. Chamfer of an empty reconstruction) becomes null: metrics.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def load_fitted_shape(run_dir: str | Path, device: str = "auto") -> FittedShape:
    """A fitted shape from a run folder (its newest checkpoint)."""
    model, _ = load_trained(run_dir, lambda data: field_from_spec(data["field_spec"]), device, cls=FitShapeConfig)
    return FittedShape(model, load_run_config(run_dir, FitShapeConfig).mode)
