"""Coordinate MLPs: plain ReLU, ReLU with NeRF's positional encoding, Fourier features, Gaussian."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..encodings import GaussianFourierFeatures, PositionalEncoding
from ..nn import MLP, Gaussian
from .base import FIELDS, Field


@dataclass
class ReluConfig:
    width: int = 256
    hidden_layers: int = 3


@FIELDS.register("relu", ReluConfig)
class ReluField(Field):
    """A plain ReLU MLP on raw coordinates: the spectral-bias baseline."""

    def __init__(self, in_features: int, out_features: int, config: ReluConfig):
        super().__init__(in_features, out_features, config)
        self.net = MLP(in_features, out_features, config.width, config.hidden_layers, nn.ReLU)

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        return self.net(coords)


@dataclass
class ReluPEConfig:
    width: int = 256
    hidden_layers: int = 3
    frequencies: int = 10


@FIELDS.register("relu-pe", ReluPEConfig)
class ReluPEField(Field):
    """ReLU MLP on NeRF's positional encoding (Mildenhall et al. 2020)."""

    def __init__(self, in_features: int, out_features: int, config: ReluPEConfig):
        super().__init__(in_features, out_features, config)
        self.encoding = PositionalEncoding(in_features, config.frequencies)
        self.net = MLP(self.encoding.out_features, out_features, config.width, config.hidden_layers, nn.ReLU)

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        return self.net(self.encoding(coords))


@dataclass
class FourierConfig:
    width: int = 256
    hidden_layers: int = 3
    features: int = 256
    sigma: float = 10.0


@FIELDS.register("fourier", FourierConfig)
class FourierField(Field):
    """ReLU MLP on Gaussian random Fourier features (Tancik et al. 2020): m=256, sigma=10."""

    def __init__(self, in_features: int, out_features: int, config: FourierConfig):
        super().__init__(in_features, out_features, config)
        self.encoding = GaussianFourierFeatures(in_features, config.features, config.sigma)
        self.net = MLP(self.encoding.out_features, out_features, config.width, config.hidden_layers, nn.ReLU)

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        return self.net(self.encoding(coords))


@dataclass
class GaussConfig:
    width: int = 256
    hidden_layers: int = 3
    a: float = 0.1


@FIELDS.register("gauss", GaussConfig)
class GaussField(Field):
    """MLP with Gaussian activations exp(-x^2/2a^2) on raw coordinates (Ramasinghe & Lucey 2022).

    PyTorch's default init, no positional embedding: the paper's embedding-free setting.
    """

    def __init__(self, in_features: int, out_features: int, config: GaussConfig):
        super().__init__(in_features, out_features, config)
        self.net = MLP(in_features, out_features, config.width, config.hidden_layers, lambda: Gaussian(config.a))

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        return self.net(coords)
