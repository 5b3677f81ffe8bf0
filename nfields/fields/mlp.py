"""Coordinate MLPs: an encoding of the coordinates, then an MLP. Plain ReLU, ReLU with NeRF's
positional encoding, Fourier features, Gaussian activations; the hash grid builds on it too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..encodings import GaussianFourierFeatures, PositionalEncoding
from ..kernels import fused_applies
from ..nn import MLP, Gaussian
from ..registry import AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, Limits
from .base import FIELDS, Field


class CoordinateMLP(Field):
    """`encoding` (the identity unless a subclass says otherwise) followed by an MLP with
    `config.hidden_layers` width x width layers of `config.width`."""

    def __init__(self, in_features: int, out_features: int, config):
        super().__init__(in_features, out_features, config)
        self.encoding = self.make_encoding(in_features, config)
        encoded = getattr(self.encoding, "out_features", in_features)
        self.net = MLP(encoded, out_features, config.width, config.hidden_layers, self.make_activation(config))
        self._fused_relu = self._fused_capable()
        if self._fused_relu:
            #: "auto", "torch" or "fused" (nfields.kernels): only where the fused ReLU MLP applies.
            self.kernel = "auto"

    def make_encoding(self, in_features: int, config) -> nn.Module:
        return nn.Identity()

    def make_activation(self, config) -> Callable[[], nn.Module]:
        return nn.ReLU

    def _fused_capable(self) -> bool:
        """A ReLU MLP on the identity or NeRF's positional encoding, of a shape the fused kernels handle."""
        if not isinstance(self.encoding, (nn.Identity, PositionalEncoding)):
            return False
        if not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in self.net):
            return False
        from ..kernels import triton_available

        if not triton_available():
            return False
        from ..kernels.fused_mlp import supports

        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return supports(linears[0].in_features, self.config.width, linears[-1].out_features, len(linears) - 2)

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        encoded = self.encoding(coords)
        if self._fused_relu and fused_applies(self.kernel, coords):
            from ..kernels.fused_mlp import auto_selects, fused_mlp

            if self.kernel == "auto" and not auto_selects():  # true fp32: cuBLAS is faster
                return self.net(encoded)

            linears = [m for m in self.net if isinstance(m, nn.Linear)]
            return fused_mlp(encoded, "relu", 1.0, 1.0, linears[0], linears[1:-1], linears[-1])
        return self.net(encoded)


@dataclass
class ReluConfig:
    width: int = 256
    hidden_layers: int = 3

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE}


@FIELDS.register("relu", ReluConfig)
class ReluField(CoordinateMLP):
    """A plain ReLU MLP on raw coordinates: the spectral-bias baseline."""


@dataclass
class ReluPEConfig:
    width: int = 256
    hidden_layers: int = 3
    frequencies: int = 10

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE, "frequencies": Limits(0, 32)}


@FIELDS.register("relu-pe", ReluPEConfig)
class ReluPEField(CoordinateMLP):
    """ReLU MLP on NeRF's positional encoding (Mildenhall et al. 2020)."""

    def make_encoding(self, in_features: int, config: ReluPEConfig) -> nn.Module:
        return PositionalEncoding(in_features, config.frequencies)


@dataclass
class FourierConfig:
    width: int = 256
    hidden_layers: int = 3
    features: int = 256
    sigma: float = 10.0

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE, "features": AT_LEAST_ONE,
                                           "sigma": POSITIVE}


@FIELDS.register("fourier", FourierConfig)
class FourierField(CoordinateMLP):
    """ReLU MLP on Gaussian random Fourier features (Tancik et al. 2020): m=256, sigma=10."""

    def make_encoding(self, in_features: int, config: FourierConfig) -> nn.Module:
        return GaussianFourierFeatures(in_features, config.features, config.sigma)


@dataclass
class GaussConfig:
    width: int = 256
    hidden_layers: int = 3
    a: float = 0.1

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE, "a": POSITIVE}


@FIELDS.register("gauss", GaussConfig)
class GaussField(CoordinateMLP):
    """MLP with Gaussian activations exp(-x^2/2a^2) on raw coordinates (Ramasinghe & Lucey 2022).

    PyTorch's default init, no positional embedding: the paper's embedding-free setting.
    """

    def make_activation(self, config: GaussConfig) -> Callable[[], nn.Module]:
        return lambda: Gaussian(config.a)
