"""An occupancy grid over [-bound, bound]^3 that tells a ray marcher where space is empty
(instant-NGP, Müller et al. 2022, NeRF section; nerfacc's `OccGridEstimator` is the same idea).

Each of the resolution^3 cells keeps a running estimate of the density in it and a boolean
`occupied`; both are buffers, so they are saved in the state_dict and survive a resume.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    """`resolution`^3 cells over [-bound, bound]^3; cell (i, j, k) is entry (i * G + j) * G + k, with i along x.

    `update` follows instant-NGP: evaluate the density at one random point in each chosen cell,
    then density = max(density * decay, fresh) (every cell decays, the chosen ones take the max),
    occupied = density > min(min_density, mean density). Before the first update every cell is occupied.
    """

    def __init__(self, resolution: int = 128, bound: float = 1.5, min_density: float = 0.01,
                 decay: float = 0.95):
        super().__init__()
        self.resolution = resolution
        self.bound = bound
        self.min_density = min_density
        self.decay = decay
        cells = resolution ** 3
        self.register_buffer("density", torch.zeros(cells))
        self.register_buffer("occupied", torch.ones(cells, dtype=torch.bool))

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Flat index of the cell holding each world point (N, 3) -> (N,); points outside go to the nearest cell."""
        g = self.resolution
        cells = ((points / self.bound + 1.0) * (0.5 * g)).floor().long().clamp_(0, g - 1)
        return (cells[:, 0] * g + cells[:, 1]) * g + cells[:, 2]

    def occupied_at(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) bool: one gather into the flat grid."""
        return self.occupied[self.cell_index(points)]

    def random_points(self, index: torch.Tensor) -> torch.Tensor:
        """One uniformly random world point inside each cell of `index` (N,) -> (N, 3)."""
        g = self.resolution
        ijk = torch.stack([index // (g * g), (index // g) % g, index % g], -1).to(self.density.dtype)
        unit = (ijk + torch.rand_like(ijk)) / g
        return (unit * 2.0 - 1.0) * self.bound

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], all_cells: bool,
               chunk: int = 1 << 18) -> None:
        """Refresh the estimates from `density_fn` (world points (N, 3) -> (N,)).

        `all_cells`: every cell once (instant-NGP's first 256 steps); otherwise a quarter of the cells
        drawn uniformly plus as many drawn among the occupied ones (instant-NGP's split).
        """
        cells = self.density.numel()
        device = self.density.device
        if all_cells:
            index = torch.arange(cells, device=device)
        else:
            uniform = torch.randint(0, cells, (cells // 4,), device=device)
            occupied = self.occupied.nonzero().squeeze(1)
            if occupied.numel():
                pick = torch.randint(0, occupied.numel(), (cells // 4,), device=device)
                index = torch.cat([uniform, occupied[pick]])
            else:
                index = uniform
        fresh = torch.zeros_like(self.density)
        for part in index.split(chunk):
            sigma = density_fn(self.random_points(part)).to(fresh.dtype)
            fresh.scatter_reduce_(0, part, sigma, reduce="amax")
        self.density.copy_(torch.maximum(self.density * self.decay, fresh))
        # instant-NGP's threshold: a step of optical thickness 0.01, or the mean if lower (so a scene
        # whose densities are all small still gets an occupied core). Clamped on the device: no sync.
        threshold = self.density.mean().clamp(max=self.min_density)
        self.occupied.copy_(self.density > threshold)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, bound={self.bound}, min_density={self.min_density:.4g}"
