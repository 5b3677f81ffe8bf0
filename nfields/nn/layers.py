"""Activation layers for coordinate networks and SIREN's initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def siren_uniform_(linear: nn.Linear, omega0: float, first: bool) -> nn.Linear:
    """SIREN's weight init: U(-1/n, 1/n) for the first layer, U(±sqrt(6/n)/omega0) after it.

    Biases keep PyTorch's default, as in the official code.
    """
    n = linear.in_features
    bound = 1.0 / n if first else math.sqrt(6.0 / n) / omega0
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound)
    return linear


class Sine(nn.Module):
    """sin(omega0 * x)."""

    def __init__(self, omega0: float = 30.0):
        super().__init__()
        self.omega0 = omega0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * x)

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}"


class SineLinear(nn.Module):
    """sin(omega0 * (W x + b)) with SIREN's initialisation (Sitzmann et al. 2020)."""

    def __init__(self, in_features: int, out_features: int, omega0: float = 30.0, first: bool = False):
        super().__init__()
        self.linear = siren_uniform_(nn.Linear(in_features, out_features), omega0, first)
        self.omega0 = omega0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # omega0 (W x + b) == (omega0 W) x + omega0 b: scaling the small weight matrix instead of
        # the large activation saves one pass over memory; the parameters (and Adam) are unchanged.
        return torch.sin(F.linear(x, self.omega0 * self.linear.weight, self.omega0 * self.linear.bias))

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}"


class Gaussian(nn.Module):
    """exp(-x^2 / (2 a^2)), the Gaussian activation of Ramasinghe & Lucey (2022)."""

    def __init__(self, a: float = 0.1):
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * (x / self.a) ** 2)

    def extra_repr(self) -> str:
        return f"a={self.a}"
