"""The plain multilayer perceptron that most fields are built on."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> activation, `hidden_layers + 1` times, then a final Linear.

    `hidden_layers` counts the width x width layers, as SIREN's official code does:
    hidden_layers=3 means 2->256, 256->256 (x3), 256->out.
    """

    def __init__(self, in_features: int, out_features: int, width: int, hidden_layers: int,
                 activation: Callable[[], nn.Module]):
        layers: list[nn.Module] = []
        features = in_features
        for _ in range(hidden_layers + 1):
            layers += [nn.Linear(features, width), activation()]
            features = width
        layers.append(nn.Linear(features, out_features))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (nn.Sequential's, typed)
        return super().forward(x)
