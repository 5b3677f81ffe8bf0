"""Training mNIF on radiance fields of many objects (`scenes:DIR` made by `nfields make-scene --objects`):
each step draws B training objects and R rays of their training views, renders them with the objects'
latents, and minimises the MSE (plus the latent penalty). Plugs into train_ginr's run like its
objectives: `RadianceFieldObjective(model, train, test, config)`.

Views: an object's pooled views are its train views, then val and test views (ObjectViews' order). Only
the train views are rendered in training; the others are held out to measure novel views of the
training objects' latents. Test objects (every 10th) get a latent fitted on their train views with the
field frozen, then are measured on their held-out views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.object_views import ObjectViews
from ..errors import NfieldsError
from ..generative.radiance import MixtureRadianceField, RadianceBounds, pixel_rays
from ..io import read_json
from ..metrics.image import mse_to_psnr
from ..render.rays import camera_rays
from .train_ginr import SCENES_PREFIX, InstanceData, InstanceObjective

EVAL_OBJECTS = 8  # objects measured per evaluation when the run sets no eval_limit (ours: keeps evaluations short)


def training_view_count(folder: str | Path, views: int) -> int:
    """How many of an object's `views` pooled views are training views: objects.json's `views` (make-scene
    writes the train count there); without it, all but the last view (ours)."""
    index_file = Path(folder) / "objects.json"
    count = None
    if index_file.is_file():
        index = read_json(index_file, "objects index")
        count = index.get("views") if isinstance(index, dict) else None
    if not isinstance(count, int) or not 1 <= count <= views:
        count = max(1, views - 1)
    return count


def object_rays(views: ObjectViews, objects: torch.Tensor, view_index: torch.Tensor,
                pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Origins, unit directions and colours of single pixels: index tensors broadcasting to (...) ->
    (..., 3) each."""
    poses = views.poses[objects, view_index]
    origins, directions = pixel_rays(poses, views.height, views.width, views.focal, pixels)
    return origins, directions, views.pixel_rgb(objects, view_index, pixels)


def whole_views(views: ObjectViews, objects: torch.Tensor,
                view_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ray of views `view_index` (B, V) of objects (B,): origins, directions, colours (B, V*H*W, 3)."""
    poses = views.poses[objects[:, None], view_index]
    origins, directions = camera_rays(poses, views.height, views.width, views.focal)
    colors = views.rgb(objects[:, None], view_index)
    b = objects.shape[0]
    return origins.reshape(b, -1, 3), directions.reshape(b, -1, 3), colors.reshape(b, -1, 3)


class RadianceFieldObjective(InstanceObjective):
    """B objects per step (train_ginr's seeded permutation per epoch, sliced per process), `config.query_rays`
    rays per object drawn uniformly over its training views' pixels; MSE on [0, 1] colours + the latent
    penalty. `evaluate()`: PSNR of whole held-out views of up to `eval_limit` (default EVAL_OBJECTS)
    training objects, of one training view each, and, with `fit_test`, of fitted test objects."""

    def __init__(self, model: MixtureRadianceField, train: InstanceData, test: InstanceData, config: Any,
                 train_views: int | None = None, fit_test: bool = True):
        if train.views is None:
            raise NfieldsError("mNIF radiance fields train on object views (a scenes:DIR dataset made by "
                               "`nfields make-scene --objects`), not images.")
        if len(train) != model.objects:
            raise NfieldsError(f"the model's latent table has {model.objects} rows but the training set has "
                               f"{len(train)} objects; build it with objects={len(train)}.")
        super().__init__(model, train, test, config)
        views: ObjectViews = train.views
        source = getattr(config, "source", "")
        if train_views is None and source.startswith(SCENES_PREFIX):
            train_views = training_view_count(source[len(SCENES_PREFIX):], views.views)
        self.train_views = train_views or max(1, views.views - 1)
        if not 1 <= self.train_views <= views.views:
            raise NfieldsError(f"train_views must be 1 to {views.views}, not {self.train_views}.")
        self.fit_test = fit_test
        self.items_per_step = (config.batch * config.query_rays, "rays")
        self.renders: list[tuple[str, int, np.ndarray, np.ndarray]] = []  # (object, view, truth, render)

    @property
    def held_out(self) -> list[int]:
        """The views rendered only for evaluation (the training views when there are no others)."""
        rest = list(range(self.train_views, self.train_data.views.views))
        return rest or list(range(self.train_views))

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views: ObjectViews = self.train_data.views
        index = self.batch_index(step)
        generator = self.step_generator(step)
        shape = (index.shape[0], self.config.query_rays)
        view_index = torch.randint(0, self.train_views, shape, generator=generator, device=self.device)
        pixels = torch.randint(0, views.height * views.width, shape, generator=generator, device=self.device)
        origins, directions, colors = object_rays(views, index[:, None], view_index, pixels)
        predicted, penalty = self.net(index, origins, directions)
        mse = (predicted - colors).pow(2).mean()
        return mse + penalty, {"psnr": mse_to_psnr(mse.detach()), "latent_penalty": penalty.detach()}

    # -- evaluation --------------------------------------------------------------------------------
    def _count(self, data: InstanceData) -> int:
        limit = getattr(self.config, "eval_limit", 0) or EVAL_OBJECTS
        return min(len(data), limit)

    @torch.no_grad()
    def _render(self, latent: torch.Tensor, views: ObjectViews, obj: int, view: int) -> np.ndarray:
        pose = views.poses[obj, view]
        return self.model.render_view(latent, pose, views.height, views.width, views.focal)[0].cpu().numpy()

    def _score(self, latents: torch.Tensor, views: ObjectViews, objects: list[int], view_ids: list[int],
               keep: bool) -> float:
        """Mean PSNR of whole views `view_ids` of `objects`, latents (len(objects), D)."""
        scores = []
        for latent, obj in zip(latents, objects):
            for view in view_ids:
                render = self._render(latent, views, obj, view)
                truth = views.rgb(obj, view).cpu().numpy()
                mse = float(np.mean((np.clip(render, 0, 1) - truth) ** 2))
                scores.append(float(mse_to_psnr(torch.tensor(mse))))
                if keep and view == view_ids[0]:
                    self.renders.append((views.names[obj], view, truth, render))
        return float(np.mean(scores))

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        views: ObjectViews = self.train_data.views
        objects = list(range(self._count(self.train_data)))
        latents = self.model.latents.detach()[objects]
        self.renders = []
        metrics = {"psnr": self._score(latents, views, objects, self.held_out, keep=True),
                   "psnr_train_views": self._score(latents, views, objects, [0], keep=False)}
        if self.fit_test and self.test_data is not None and len(self.test_data) and self.model.config.fit_steps:
            metrics["psnr_test_objects"] = self.evaluate_test_objects()
        self.model.train(was_training)
        return metrics

    def fit_objects(self, views: ObjectViews, objects: list[int], seed: int = 0) -> torch.Tensor:
        """Latents (len(objects), D) fitted on the objects' training views with the field frozen."""
        index = torch.tensor(objects, device=views.device)
        train_ids = torch.arange(self.train_views, device=views.device).expand(len(objects), -1)
        origins, directions, colors = whole_views(views, index, train_ids)
        generator = torch.Generator(device=views.device).manual_seed(seed)
        return self.model.fit_latents(origins, directions, colors, generator=generator)

    def evaluate_test_objects(self) -> float:
        """Mean PSNR on the held-out views of up to `eval_limit` test objects, each with a latent fitted on
        its training views (`fit_latents`: from zero, field frozen)."""
        views: ObjectViews = self.test_data.views
        objects = list(range(self._count(self.test_data)))
        latents = self.fit_objects(views, objects, seed=getattr(self.config, "seed", 0))
        return self._score(latents, views, objects, self.held_out, keep=False)

    def save_views_picture(self, path: str | Path, title: str = "mNIF radiance field: held-out views") -> None:
        """Truth and render of one held-out view per evaluated object (the last `evaluate()`), with PSNR."""
        from .. import viz

        if not self.renders:
            self.evaluate()
        shown = self.renders[:8]
        rows = [[truth for _, _, truth, _ in shown], [np.clip(render, 0, 1) for _, _, _, render in shown]]
        captions = [[f"{name} view {view}" for name, view, _, _ in shown],
                    [f"{float(mse_to_psnr(torch.tensor(np.mean((np.clip(r, 0, 1) - t) ** 2)))):.2f} dB"
                     for _, _, t, r in shown]]
        viz.save_grid(rows, ["truth", "mNIF"], path, title=title, captions=captions)


def scene_bounds(folder: str | Path) -> RadianceBounds:
    """near, far and bound of a make-scene object set, from its first object's transforms_train.json (the
    single-scene loader's defaults where absent: nfields.data.scene)."""
    from ..data.scene import DEFAULT_BOUND, DEFAULT_FAR, DEFAULT_NEAR

    folder = Path(folder)
    index = read_json(folder / "objects.json", "objects index")
    entries = index.get("objects") if isinstance(index, dict) else None
    first = folder / str(entries[0]["name"]) / "transforms_train.json" if entries else None
    meta = read_json(first, "transforms") if first is not None and first.is_file() else {}
    return RadianceBounds(float(meta.get("near", DEFAULT_NEAR)), float(meta.get("far", DEFAULT_FAR)),
                          float(meta.get("bound", DEFAULT_BOUND)))


@dataclass(frozen=True)
class RadianceCameras:
    """The fixed views every generated radiance field is rendered from (and FID compares): camera-to-world
    poses (V, 4, 4) on the CPU, the image size and focal length in pixels."""

    poses: torch.Tensor
    height: int
    width: int
    focal: float

    def scaled(self, scale: float) -> RadianceCameras:
        """The same cameras with `scale` x the pixels (the same field of view)."""
        if not (math.isfinite(scale) and scale > 0):
            raise NfieldsError(f"--scale must be positive, not {scale}.")
        height, width = max(1, round(self.height * scale)), max(1, round(self.width * scale))
        return RadianceCameras(self.poses, height, width, self.focal * width / self.width)


def fixed_cameras(folder: str | Path, size: int | None = None) -> RadianceCameras:
    """The test circle of a make-scene object set: `orbit_poses(test_views)` at 30 degrees and radius 4, the
    same cameras for every object (make_scene._splits), read from the first training object's
    transforms_test.json at the run's `size`. These are mNIF's "predefined views": the training objects'
    images from them are held out of stage 1 and are FID's reference (`reference_views`)."""
    from ..data.object_views import split_objects
    from ..data.scene import load_scene

    folder = Path(folder)
    index = read_json(folder / "objects.json", "objects index")
    entries = index.get("objects") if isinstance(index, dict) else None
    names = split_objects([str(e["name"]) for e in entries or [] if isinstance(e, dict) and "name" in e], "train")
    if not names:
        raise NfieldsError(f"'{folder}' lists no training objects; make the set with `nfields make-scene --objects`.")
    scene = load_scene(folder / names[0], splits=("train", "test"), size=size)
    if "test" not in scene.views or len(scene.views["test"].poses) == 0:
        raise NfieldsError(f"'{folder}' has no test views, the fixed cameras samples are rendered from; remake it "
                           f"with `nfields make-scene --objects K --test-views 8`.")
    test = scene.views["test"]
    return RadianceCameras(test.poses.float().cpu(), int(test.images.shape[1]), int(test.images.shape[2]),
                           float(test.focal))


def reference_views(views: ObjectViews, cameras: RadianceCameras) -> torch.Tensor:
    """uint8 (N, V, H, W, 3): every object's own images from the fixed cameras (its last V pooled views,
    the test split), checked to be those cameras for every object."""
    v = cameras.poses.shape[0]
    if views.views < v or (views.height, views.width) != (cameras.height, cameras.width):
        raise NfieldsError(f"the objects' views ({views.views} of {views.width}x{views.height}) do not include the "
                           f"{v} fixed views of {cameras.width}x{cameras.height}; remake the set with one "
                           f"`nfields make-scene --objects` call.")
    poses = views.poses[:, views.views - v:].cpu()
    if not torch.allclose(poses, cameras.poses.expand_as(poses), atol=1e-4):
        raise NfieldsError("the objects' test cameras differ, so there are no fixed views to compare renders on; "
                           "remake the set with `nfields make-scene --objects` (its test circle is shared).")
    return views.images[:, views.views - v:].cpu()


def write_radiance_outputs(out: Path, objective: RadianceFieldObjective, config: Any, trainer,
                           device: torch.device, orbit_frames: int = 8) -> dict[str, Any]:
    """A radiance mNIF run's metrics.json, views.png (held-out views: truth and render), orbit.png (the first
    training object's latent around the 30-degree circle) and curve.png; returns the metrics."""
    from .. import viz
    from ..io import write_json_atomic
    from .train_ginr import instances_per_second

    model: MixtureRadianceField = objective.model
    model.eval()
    final = trainer.history.evals[-1] if trainer.history.evals else objective.evaluate()
    views: ObjectViews = objective.train_data.views
    metrics: dict[str, Any] = {
        "method": "mnif", "kind": "radiance", "dataset": getattr(config, "source", ""),
        **{k: v for k, v in final.items() if k.startswith("psnr")},
        "steps": trainer.step, "seconds": trainer.seconds,
        "epochs": trainer.step * config.batch / len(objective.train_data),
        "instances_per_second": instances_per_second(trainer, config.batch),
        "rays_per_second": instances_per_second(trainer, config.batch * config.query_rays),
        "params": sum(p.numel() for p in model.field.parameters()), "latent_table": model.latents.numel(),
        "inference_params": model.field.inference_parameters(),
        "train_instances": len(objective.train_data), "test_instances": len(objective.test_data),
        "train_views": objective.train_views, "held_out_views": len(objective.held_out),
        "batch": config.batch, "rays_per_object": config.query_rays, "samples_per_ray": model.config.samples,
        "device": str(device),
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    objective.save_views_picture(out / "views.png", f"mnif on {metrics['dataset']}: held-out views")
    frames = model.render_orbit(model.latents[0].detach(), orbit_frames, views.height, views.width, views.focal)
    viz.save_image(np.concatenate(list(frames), axis=1), out / "orbit.png")
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png", f"mnif on {metrics['dataset']}")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
