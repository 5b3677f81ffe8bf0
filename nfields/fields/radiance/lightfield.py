"""A light-field network (Sitzmann et al. 2021): one evaluation per ray, on its Plücker coordinates.

No volume rendering: colour = MLP(d, o x d). The network is one of our coordinate fields; for a
single scene we use NeRF's positional encoding on the six coordinates (ours: LFN conditions a
plain ReLU MLP through a hypernetwork across many scenes, which alone cannot fit one scene's detail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...registry import AT_LEAST_ONE, NOT_NEGATIVE, Limits
from ...render.rays import plucker
from ...render.volume import RayColors
from ..base import make_field
from .base import SCENE_FIELDS, SceneField


@dataclass
class LightFieldConfig:
    network: str = "relu-pe"  # a coordinate field: relu-pe, siren, fourier, ...
    width: int = 256
    hidden_layers: int = 6

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE}


@SCENE_FIELDS.register("lightfield", LightFieldConfig)
class LightField(SceneField):
    """Light-field network: Plücker ray coordinates -> colour, one network evaluation per ray."""

    default_lr = 5e-4
    has_density = False

    def __init__(self, config: LightFieldConfig, bounds):
        super().__init__(config, bounds)
        self.network = make_field(config.network, 6, 3, width=config.width, hidden_layers=config.hidden_layers)

    def render_rays(self, origins, directions, background, training: bool) -> RayColors:
        coords = plucker(origins, directions)
        # o x d is the ray's moment: its length is the ray's distance from the origin, at most `far` here.
        coords = torch.cat([coords[:, :3], coords[:, 3:] / self.bounds.far], -1)
        # Linear output, colours as [-1, 1] as our image fits do (ours): a sigmoid saturated at the white
        # background and stopped learning on one of our three scenes (armadillo, 13.8 dB, all white).
        rgb = 0.5 * (self.network(coords) + 1.0)
        ones = torch.ones_like(rgb[:, 0])
        return RayColors(rgb, torch.zeros_like(ones), ones)
