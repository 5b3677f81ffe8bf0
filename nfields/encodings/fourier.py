"""Gaussian random Fourier features (Tancik et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianFourierFeatures(nn.Module):
    """[cos(2 pi B v), sin(2 pi B v)] with B ~ N(0, sigma^2), fixed after initialisation.

    The paper's v lives in [0, 1]; our coordinates x live in [-1, 1], so v = (x + 1) / 2 and
    sigma keeps the paper's meaning (sigma = 10 is its image setting).
    """

    def __init__(self, in_features: int, features: int = 256, sigma: float = 10.0):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("B", torch.randn(features, in_features) * sigma)
        self.out_features = 2 * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = (math.pi * (x + 1.0)) @ self.B.t()
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
