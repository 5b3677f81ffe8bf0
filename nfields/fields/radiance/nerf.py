"""NeRF (Mildenhall et al. 2020): positional encoding, an 8 x 256 MLP with a skip, view-dependent
colour, and coarse-to-fine (stratified, then hierarchical) sampling with two networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...encodings import PositionalEncoding
from ...registry import AT_LEAST_ONE, NOT_NEGATIVE, Limits
from ...render.volume import RayColors, composite, sample_pdf, stratified_samples
from .base import SCENE_FIELDS, SceneField


@dataclass
class NerfConfig:
    frequencies: int = 10  # positions
    direction_frequencies: int = 4
    width: int = 256
    depth: int = 8
    skip: int = 4  # the input joins again after this many layers
    coarse_samples: int = 64
    fine_samples: int = 128  # 0: coarse network only
    view_dependent: bool = True

    limits: ClassVar[dict[str, Limits]] = {"frequencies": Limits(0, 32), "direction_frequencies": Limits(0, 32),
                                           "width": AT_LEAST_ONE, "depth": AT_LEAST_ONE, "skip": NOT_NEGATIVE,
                                           "coarse_samples": AT_LEAST_ONE, "fine_samples": NOT_NEGATIVE}


class NerfMLP(nn.Module):
    """Position (and direction) -> (sigma, rgb), the official code's layer layout."""

    def __init__(self, config: NerfConfig):
        super().__init__()
        # World coordinates without pi, as the official code (see PositionalEncoding).
        self.encode_position = PositionalEncoding(3, config.frequencies, pi=False)
        self.encode_direction = PositionalEncoding(3, config.direction_frequencies, pi=False)
        d_in, width = self.encode_position.out_features, config.width
        self.skip = config.skip
        self.layers = nn.ModuleList(
            [nn.Linear(d_in, width)] +
            [nn.Linear(width + (d_in if i == config.skip else 0), width) for i in range(1, config.depth)])
        self.sigma = nn.Linear(width, 1)
        self.view_dependent = config.view_dependent
        if config.view_dependent:
            self.feature = nn.Linear(width, width)
            self.color = nn.Sequential(nn.Linear(width + self.encode_direction.out_features, width // 2), nn.ReLU(),
                                       nn.Linear(width // 2, 3))
        else:
            self.color = nn.Linear(width, 3)
        # The official code's init (Keras Dense): Glorot-uniform weights, zero biases. PyTorch's default
        # leaves the density nearly constant over space with the sign of a bias: half the seeds start dead.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, points: torch.Tensor, directions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = encoded = self.encode_position(points)
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                x = torch.cat([encoded, x], -1)
            x = torch.relu(layer(x))
        sigma = torch.relu(self.sigma(x)).squeeze(-1)  # raw noise 0, as the official synthetic-scene setup
        if self.view_dependent:
            directions = directions.expand(*points.shape[:-1], 3)
            x = torch.cat([self.feature(x), self.encode_direction(directions)], -1)
        return sigma, torch.sigmoid(self.color(x))


@SCENE_FIELDS.register("nerf", NerfConfig)
class Nerf(SceneField):
    """NeRF: positional encoding (10 / 4 frequencies), 8 x 256 ReLU MLP with a skip, coarse + fine sampling."""

    default_lr = 5e-4  # the paper's; its exponential decay to 5e-5 over 500k steps is not applied (ours)
    # The official blender config trains on the central half of each view for 500 steps; without it
    # the density can die on white backgrounds (measured: all white, 9.3 dB, on our duck).
    precrop_steps = 500

    def __init__(self, config: NerfConfig, bounds):
        super().__init__(config, bounds)
        self.coarse = NerfMLP(config)
        self.fine = NerfMLP(config) if config.fine_samples > 0 else None

    def _shade(self, network: NerfMLP, origins, directions, t, background) -> RayColors:
        points = origins[:, None, :] + directions[:, None, :] * t[..., None]
        sigma, rgb = network(points, directions[:, None, :])
        return composite(sigma, rgb, t, background)

    def render_rays(self, origins, directions, background, training: bool) -> RayColors:
        cfg, bounds = self.config, self.bounds
        t = stratified_samples(bounds.near, bounds.far, origins.shape[0], cfg.coarse_samples, training, origins.device)
        coarse = self._shade(self.coarse, origins, directions, t, background)
        if self.fine is None:
            return coarse
        mids = 0.5 * (t[:, 1:] + t[:, :-1])
        extra = sample_pdf(mids, coarse.weights[:, 1:-1].detach(), cfg.fine_samples, deterministic=not training)
        t_fine, _ = torch.sort(torch.cat([t, extra], -1), -1)
        fine = self._shade(self.fine, origins, directions, t_fine, background)
        fine.auxiliary = (coarse.rgb,)
        return fine

    def density(self, points: torch.Tensor) -> torch.Tensor:
        network = self.fine or self.coarse
        sigma, _ = network(points, torch.zeros_like(points) + torch.tensor([0.0, 0.0, 1.0], device=points.device))
        return sigma
