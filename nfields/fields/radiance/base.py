"""The scene-field interface: rays in, colours out (radiance fields and light fields).

A scene field renders a batch of rays itself, because how it samples along them is part of the
method (NeRF's coarse-to-fine sampling, instant-NGP's occupancy grid, one evaluation per ray for
a light field). Everything else (rays, batches, loss, checkpoints, metrics) is shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import NfieldsError
from ...registry import Registry
from ...render.volume import RayColors

SCENE_FIELDS: Registry["SceneField"] = Registry("scene field")


@dataclass(frozen=True)
class SceneBounds:
    """Where the scene is: rays are sampled between `near` and `far`; the scene fits in [-bound, bound]^3."""

    near: float = 2.0
    far: float = 6.0
    bound: float = 1.5


class SceneField(nn.Module):
    """`render_rays(origins, directions, background, training) -> RayColors` for unit directions (R, 3)."""

    default_lr: ClassVar[float] = 5e-4
    registry_name: str = ""
    #: Whether `density` exists (radiance fields), so depth maps and meshes can be made.
    has_density: ClassVar[bool] = True
    #: Steps that sample rays only from the centre of each view (NeRF's `precrop` for object scenes).
    precrop_steps: ClassVar[int] = 0

    def __init__(self, config: Any, bounds: SceneBounds):
        super().__init__()
        self.config = config
        self.bounds = bounds

    def render_rays(self, origins: torch.Tensor, directions: torch.Tensor, background: torch.Tensor,
                    training: bool) -> RayColors:
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        """Housekeeping before training step `step` (e.g. refreshing an occupancy grid)."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Volume density sigma >= 0 at world points (N, 3) -> (N,)."""
        raise NfieldsError(f"the '{self.registry_name}' field has no density (it maps rays straight to colours); "
                           "use a radiance field such as nerf or hashgrid.")

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=lr)

    def spec(self) -> dict:
        return {"name": self.registry_name, "config": dataclasses.asdict(self.config),
                "bounds": dataclasses.asdict(self.bounds)}


def make_scene_field(name: str, bounds: SceneBounds = SceneBounds(), **options: Any) -> SceneField:
    """Build a registered scene field by name, e.g. make_scene_field("nerf", SceneBounds(2, 6, 1.5))."""
    from ..base import check_fits_in_memory

    cls, _ = SCENE_FIELDS.lookup(name)
    config = SCENE_FIELDS.config(name, options)
    check_fits_in_memory(lambda: cls(config, bounds), f"the '{name}' scene field")
    return cls(config, bounds)


def scene_field_from_spec(spec: dict) -> SceneField:
    return make_scene_field(spec["name"], SceneBounds(**spec["bounds"]), **spec["config"])
