"""NeRF's positional encoding (Mildenhall et al. 2020, Eq. 4)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """[x, sin(2^k pi x), cos(2^k pi x)] for k = 0 .. frequencies-1.

    The paper's formula has pi; the official code drops it (its scenes span a few units): `pi=False`
    follows the code for world coordinates (radiance fields); pi stays the default for coordinates
    in [-1, 1]. The raw input is kept, as in the code.
    """

    def __init__(self, in_features: int, frequencies: int = 10, include_input: bool = True, pi: bool = True):
        super().__init__()
        self.in_features = in_features
        self.include_input = include_input
        self.register_buffer("bands", (math.pi if pi else 1.0) * 2.0 ** torch.arange(frequencies, dtype=torch.float32),
                             persistent=False)
        self.out_features = in_features * (2 * frequencies + int(include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = (x[..., None, :] * self.bands[:, None]).flatten(-2)  # (..., F*d)
        parts = [x] if self.include_input else []
        return torch.cat(parts + [torch.sin(angles), torch.cos(angles)], dim=-1)
