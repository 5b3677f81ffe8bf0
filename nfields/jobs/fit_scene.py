"""Fit one multi-view scene with one scene field (NeRF, hash-grid radiance field, light field):
the objective, the Python entry point, loading a fitted scene, and the run folder (test-view
renders, a comparison picture, the learning curve, metrics.json with PSNR and SSIM per view)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import viz
from ..data.scene import Scene, SceneViews, load_scene
from ..errors import NfieldsError
from ..fields import parameter_count
from ..fields.radiance import SCENE_FIELDS, SceneBounds, SceneField, make_scene_field, scene_field_from_spec
from ..io import write_bytes_atomic, write_json_atomic
from ..metrics import mse_to_psnr, psnr, ssim
from ..render.rays import camera_rays
from ..data.cameras import focal_length, orbit_poses
from ..render.scene import depth_picture, render_view
from ..train import Trainer
from ..train.run import load_trained, open_run_dir
from .common import FitConfig, final_metrics, prepare, start_run, train_field, write_run_config


@dataclass
class FitSceneConfig(FitConfig):
    """Everything that defines a scene fit; written resolved to `config.json` in the run folder."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-scene",)

    field_registry: ClassVar = SCENE_FIELDS

    field: str = "hashgrid"
    steps: int = 30000
    size: int | None = None  # resize views to this width (NeRF's half resolution: 400 for 800² scenes)
    batch_rays: int = 4096  # NeRF's batch
    seconds: float = 0.0  # stop after this much training time (0: steps only)
    eval_at_seconds: list[float] = default(default_factory=list)
    test_views: int = 0  # evaluate on the first N test views; 0: all
    precrop_steps: int | None = None  # None: the field's own (nerf 500, others 0)
    precrop_fraction: float = 0.5  # NeRF's
    chunk_rays: int = 4096  # rays rendered at once when evaluating

    def validate(self) -> None:
        super().validate()
        for name in ("batch_rays", "chunk_rays"):
            if getattr(self, name) <= 0:
                raise NfieldsError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}.")
        if self.seconds < 0 or any(s <= 0 for s in self.eval_at_seconds):
            raise NfieldsError("--seconds and --eval-at-seconds must be positive numbers of seconds.")
        if self.precrop_steps is not None and self.precrop_steps < 0 or not 0 < self.precrop_fraction <= 1:
            raise NfieldsError("--precrop-steps must be 0 or more and --precrop-fraction in (0, 1].")
        if self.test_views < 0:
            raise NfieldsError(f"--test-views must be 0 (all) or positive, not {self.test_views}.")

    def time_budget(self) -> dict[str, Any]:
        return {"max_seconds": self.seconds, "eval_at_seconds": tuple(self.eval_at_seconds)}


def evaluation_views(scene: Scene, limit: int = 0) -> SceneViews:
    """The test views (val, then train, when a scene has none), the first `limit` of them."""
    views = scene.views.get("test") or scene.views.get("val") or scene.views["train"]
    if limit and limit < len(views):
        views = SceneViews(views.images[:limit], views.poses[:limit], views.focal, views.names[:limit],
                           None if views.depths is None else views.depths[:limit])
    return views


def central_rays(views: int, height: int, width: int, fraction: float) -> torch.Tensor:
    """Indices (into all training rays, view-major) of the pixels in the central `fraction` of each view."""
    rows = torch.arange(int(height * (1 - fraction) / 2), int(height * (1 + fraction) / 2))
    cols = torch.arange(int(width * (1 - fraction) / 2), int(width * (1 + fraction) / 2))
    pixel = (rows[:, None] * width + cols[None, :]).reshape(-1)
    return (torch.arange(views)[:, None] * height * width + pixel[None, :]).reshape(-1)


class SceneObjective:
    """MSE between rendered and true colours of a random batch of training rays (all views pooled),
    plus the same for any auxiliary prediction (NeRF's coarse network). Background: white."""

    def __init__(self, model: SceneField, train: SceneViews, test: SceneViews, batch_rays: int,
                 chunk_rays: int, device: torch.device, precrop_steps: int = 0, precrop_fraction: float = 0.5):
        self.model = model
        self.precrop_steps = precrop_steps
        self.crop = central_rays(len(train), train.height, train.width, precrop_fraction).to(device)
        self.test = test
        self.batch_rays = batch_rays
        self.chunk_rays = chunk_rays
        self.items_per_step = (batch_rays, "rays")
        origins, directions = camera_rays(train.poses, train.height, train.width, train.focal)
        self.origins = origins.reshape(-1, 3).to(device)
        self.directions = directions.reshape(-1, 3).to(device)
        self.colors = train.images.reshape(-1, 3).to(device)
        self.background = torch.ones(3, device=device)
        self.renders: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rgb, depth, opacity) per view
        self.psnr_per_view: list[float] = []
        self.ssim_per_view: list[float] = []

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.model.before_step(step)
        if step < self.precrop_steps:
            index = self.crop[torch.randint(self.crop.shape[0], (self.batch_rays,), device=self.crop.device)]
        else:
            index = torch.randint(self.colors.shape[0], (self.batch_rays,), device=self.colors.device)
        target = self.colors[index]
        out = self.model.render_rays(self.origins[index], self.directions[index], self.background, training=True)
        mse = ((out.rgb - target) ** 2).mean()
        loss = mse + sum(((extra - target) ** 2).mean() for extra in out.auxiliary)
        return loss, {"psnr": mse_to_psnr(mse.detach())}

    def evaluate(self) -> dict[str, float]:
        self.renders, self.psnr_per_view, self.ssim_per_view = [], [], []
        device = self.colors.device
        for pose, image in zip(self.test.poses, self.test.images):
            rgb, depth, opacity = render_view(self.model, pose, self.test.height, self.test.width, self.test.focal,
                                              self.chunk_rays, self.background)
            target = image.to(device)
            self.psnr_per_view.append(psnr(rgb, target))
            self.ssim_per_view.append(ssim(rgb, target))
            self.renders.append((rgb.cpu().numpy(), depth.cpu().numpy(), opacity.cpu().numpy()))
        return {"psnr": float(np.mean(self.psnr_per_view)), "ssim": float(np.mean(self.ssim_per_view))}


@dataclass
class FittedScene:
    """A trained scene field with its camera: render any pose at any size."""

    model: SceneField
    height: int
    width: int
    camera_angle_x: float
    metrics: dict[str, Any] = default(default_factory=dict)
    renders: list = default(default_factory=list)  # (rgb, depth, opacity) of each test view after fitting

    def focal(self, width: int) -> float:
        return focal_length(width, self.camera_angle_x)

    def render(self, pose: torch.Tensor, height: int | None = None, width: int | None = None,
               chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Colour (H, W, 3) in [0, 1], depth and opacity (H, W) for a camera-to-world pose (4, 4)."""
        height, width = height or self.height, width or self.width
        rgb, depth, opacity = render_view(self.model, torch.as_tensor(pose, dtype=torch.float32), height, width,
                                          self.focal(width), chunk)
        return rgb.cpu().numpy(), depth.cpu().numpy(), opacity.cpu().numpy()

    def orbit(self, frames: int, radius: float = 4.0, elevation: float = 30.0) -> torch.Tensor:
        """(frames, 4, 4) poses circling the object (world z up) at `elevation` degrees."""
        return torch.tensor(orbit_poses(frames, elevation, radius), dtype=torch.float32)


# -- the Python entry point -------------------------------------------------------------------

def fit_scene(scene: Scene, model: SceneField, config: FitSceneConfig | None = None, run_dir: Path | None = None,
              resume: bool = False, progress: bool = True, **overrides: Any) -> tuple[FittedScene, Trainer]:
    """Fit `model` to `scene`'s training views; `overrides` are FitSceneConfig fields (steps=500, ...).
    `fitted.metrics` has test `psnr`, `ssim` (means over views) and their per-view lists."""
    config = dataclasses.replace(config or FitSceneConfig(field=model.registry_name), **overrides)
    device = prepare(config)
    model = model.to(device)
    train, test = scene.split("train"), evaluation_views(scene, config.test_views)
    precrop = model.precrop_steps if config.precrop_steps is None else config.precrop_steps
    objective = SceneObjective(model, train, test, config.batch_rays, config.chunk_rays, device, precrop,
                               config.precrop_fraction)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = train_field(objective, model, config, run_dir, resume, progress, f"{config.field} {scene.root.name}",
                          "pass a smaller --batch-rays (e.g. 1024) or --chunk-rays")
    metrics: dict[str, Any] = final_metrics(trainer, objective)
    if not objective.psnr_per_view:  # resumed at the final step: nothing was evaluated in this process
        metrics = objective.evaluate()
    metrics["psnr_per_view"] = [round(p, 4) for p in objective.psnr_per_view]
    metrics["ssim_per_view"] = [round(s, 5) for s in objective.ssim_per_view]
    if device.type == "cuda":
        metrics["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    fitted = FittedScene(model, train.height, train.width, scene.camera_angle_x, metrics, objective.renders)
    return fitted, trainer


def load_fitted_scene(run_dir: str | Path, device: str = "auto") -> FittedScene:
    """A fitted scene from a run folder (its newest checkpoint)."""
    def build(data: dict) -> SceneField:
        if "scene" not in data:
            raise NfieldsError(f"'{run_dir}' is not a scene run; make one with 'nfields fit scene'.")
        return scene_field_from_spec(data["field_spec"])

    model, data = load_trained(run_dir, build, device, cls=FitSceneConfig)
    info = data["scene"]
    return FittedScene(model, info["height"], info["width"], info["camera_angle_x"])


# -- run folders --------------------------------------------------------------------------------

def save_views_picture(test: SceneViews, renders, shown: list[int], psnrs: list[float], near: float, far: float,
                       with_depth: bool, path: Path, title: str) -> None:
    """A grid: one column per view; rows truth, render, |error| and (radiance fields) depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["truth", "render", "|error|"] + (["depth"] if with_depth else [])
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(2.4 * len(shown) + 0.6, 2.4 * len(rows) + 0.6),
                             squeeze=False, constrained_layout=True)
    for col, i in enumerate(shown):
        truth = test.images[i].numpy()
        rgb, depth, opacity = renders[i]
        axes[0, col].imshow(truth)
        axes[0, col].set_title(f"view {i}: {psnrs[i]:.2f} dB")
        axes[1, col].imshow(rgb)
        axes[2, col].imshow(np.abs(rgb - truth).mean(-1), cmap="inferno", vmin=0, vmax=0.25)
        if with_depth:
            axes[3, col].imshow(depth_picture(torch.from_numpy(depth), torch.from_numpy(opacity), near, far))
    for row, name in enumerate(rows):
        axes[row, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    write_bytes_atomic(path, viz.figure_bytes(fig))


def run_fit_scene(config: FitSceneConfig, out: Path, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit scene` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    scene = load_scene(config.source, size=config.size)
    train = scene.split("train")
    torch.manual_seed(config.seed)
    bounds = SceneBounds(scene.near, scene.far, scene.bound)
    model = make_scene_field(config.field, bounds, **config.field_options)

    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model,
                         scene={"root": str(scene.root), "height": train.height, "width": train.width,
                                "camera_angle_x": scene.camera_angle_x, "train_views": len(train),
                                "near": scene.near, "far": scene.far, "bound": scene.bound})
        started = time.perf_counter()
        fitted, trainer = fit_scene(scene, model, config, run_dir=run_dir, resume=resume, progress=progress)

    test = evaluation_views(scene, config.test_views)
    (out / "test").mkdir(exist_ok=True)
    for i, (rgb, _, _) in enumerate(fitted.renders):
        viz.save_image(rgb, out / "test" / f"r_{i}.png")
    metrics = {**fitted.metrics, "steps": trainer.step, "seconds": trainer.seconds,
               "rays_per_second": trainer.step * config.batch_rays / max(trainer.seconds, 1e-9),
               "params": parameter_count(model), "field": config.field, "device": str(device),
               "source": config.source, "size": [train.height, train.width], "train_views": len(train),
               "test_views": len(test), "wall_seconds": time.perf_counter() - started,
               "history": trainer.history.evals}
    title = (f"{config.field} on {scene.root.name}: {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} "
             f"(mean of {len(test)} test views) after {trainer.step} steps")
    shown = sorted(set(np.linspace(0, len(test) - 1, min(4, len(test))).round().astype(int).tolist()))
    save_views_picture(test, fitted.renders, shown, metrics["psnr_per_view"], scene.near, scene.far,
                       model.has_density, out / "test_views.png", title)
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png", title)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
