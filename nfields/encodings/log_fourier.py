"""Log-spaced Fourier features of TransINR, IPC and the locality-aware INR (Eq. 2 of the latter)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LogFourierFeatures(nn.Module):
    """[cos(pi f_j x_i), sin(pi f_j x_i)] with f = exp(linspace(0, ln sigma, n)), n per input dimension.

    Output size 2 * n * in_features; coordinates in [-1, 1] as they are (no shift to [0, 1]).
    """

    def __init__(self, in_features: int, frequencies: int, sigma: float):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(sigma), frequencies)))
        self.out_features = 2 * frequencies * in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = math.pi * (x.unsqueeze(-1) * self.freqs).flatten(-2)  # (..., in_features * n)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
