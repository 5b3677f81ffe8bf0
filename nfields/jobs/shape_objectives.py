"""What fitting a 3D shape minimises, on `ShapeSamples` (the CLI and the benchmark share these):

- `SirenSdfObjective`: SIREN's SDF loss (official weights, DESIGN.md) on oriented surface points
  plus as many uniform points in [-1, 1]^3 per step;
- `SdfRegressionObjective`: L1 regression to true signed distances (DeepSDF, without its clamp);
- `OccupancyObjective`: Occupancy Networks' binary cross-entropy on logits of labelled points.

The field has one output: a signed distance (negative inside) or an occupancy logit (positive inside).
Evaluation extracts the surface with marching cubes and scores it (nfields.metrics.shape).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shape import ShapeSamples, sample_triangles
from ..fields import Field
from ..metrics.shape import surface_metrics, volume_iou
from ..render.mesh import extract_mesh

MODES = ("sdf", "occupancy")
SDF_LOSSES = ("siren", "regression")
#: SIREN's official SDF loss weights: on-surface |f|, off-surface exp(-100|f|), normals, Eikonal.
SIREN_WEIGHTS = {"surface": 3e3, "off_surface": 1e2, "normal": 1e2, "eikonal": 5e1}


class ShapeObjective:
    """Shared by every shape objective: samples on the device, and evaluation by marching cubes."""

    inside_below = True  # signed distances: inside is below 0

    def __init__(self, model: Field, samples: ShapeSamples, batch_points: int, resolution: int,
                 device: torch.device, eval_points: int = 100_000, seed: int = 0):
        self.model = model
        self.samples = samples
        self.batch_points = batch_points
        self.resolution = resolution
        self.eval_count = eval_points
        self.seed = seed
        self.device = device
        self.surface_points = torch.from_numpy(samples.surface_points).float().to(device)
        self.surface_normals = torch.from_numpy(samples.surface_normals).float().to(device)
        self.last_mesh: tuple[np.ndarray, np.ndarray] | None = None

    def _batch(self, count: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
        index = torch.randint(len(tensors[0]), (count,), device=self.device)
        return [t[index] for t in tensors]

    def inside(self, values: torch.Tensor) -> torch.Tensor:
        return values < 0 if self.inside_below else values > 0

    def mesh(self, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        was_training = self.model.training
        self.model.eval()
        try:
            return extract_mesh(self.model, resolution or self.resolution, 0.0, self.inside_below)
        finally:
            self.model.train(was_training)

    def evaluate(self) -> dict[str, float]:
        vertices, faces = self.last_mesh = self.mesh()
        if len(faces):
            rng = np.random.default_rng(self.seed + 7)
            points, normals = sample_triangles(vertices.astype(np.float64), faces, self.eval_count, rng)
        else:
            points = normals = np.zeros((0, 3), np.float32)
        metrics = surface_metrics(points, normals, self.samples.eval_points, self.samples.eval_normals)
        if self.samples.iou_points is not None:
            with torch.no_grad():
                coords = torch.from_numpy(self.samples.iou_points).to(self.device)
                values = torch.cat([self.model(c)[:, 0] for c in coords.split(1 << 18)])
            metrics["iou"] = volume_iou(self.inside(values).cpu().numpy(), self.samples.iou_labels)
        metrics["vertices"] = float(len(vertices))
        return metrics


class SirenSdfObjective(ShapeObjective):
    """SIREN's SDF loss. As in the official code, each term is a mean over the whole batch (on- and
    off-surface points together), with zeros where a term does not apply."""

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k = self.batch_points
        on, normals = self._batch(k, self.surface_points, self.surface_normals)
        off = torch.rand(k, 3, device=self.device) * 2 - 1
        coords = torch.cat([on, off]).requires_grad_(True)
        values = self.model(coords)[:, 0]
        gradient = torch.autograd.grad(values.sum(), coords, create_graph=True)[0]
        total = 2 * k
        surface = values[:k].abs().sum() / total
        off_surface = torch.exp(-100 * values[k:].abs()).sum() / total
        normal = (1 - F.cosine_similarity(gradient[:k], normals, dim=-1)).sum() / total
        eikonal = (gradient.norm(dim=-1) - 1).abs().mean()
        terms = {"surface": surface, "off_surface": off_surface, "normal": normal, "eikonal": eikonal}
        loss = sum(SIREN_WEIGHTS[name] * term for name, term in terms.items())
        return loss, {name: term.detach() for name, term in terms.items()}


class SdfRegressionObjective(ShapeObjective):
    """Mean absolute error to true signed distances on a batch of the precomputed pool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.points = torch.from_numpy(self.samples.sdf_points).to(self.device)
        self.values = torch.from_numpy(self.samples.sdf_values).to(self.device)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points, values = self._batch(self.batch_points, self.points, self.values)
        l1 = (self.model(points)[:, 0] - values).abs().mean()
        return l1, {"l1": l1.detach()}


class OccupancyObjective(ShapeObjective):
    """Binary cross-entropy on logits over a batch of the labelled pool (Occupancy Networks)."""

    inside_below = False  # logits: inside is above 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.points = torch.from_numpy(self.samples.occupancy_points).to(self.device)
        self.labels = torch.from_numpy(self.samples.occupancy_labels).float().to(self.device)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points, labels = self._batch(self.batch_points, self.points, self.labels)
        logits = self.model(points)[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean()
        return bce, {"accuracy": accuracy.detach()}


def make_objective(mode: str, sdf_loss: str, *args, **kwargs) -> ShapeObjective:
    if mode == "occupancy":
        return OccupancyObjective(*args, **kwargs)
    return SdfRegressionObjective(*args, **kwargs) if sdf_loss == "regression" else SirenSdfObjective(*args, **kwargs)
