"""Hash-grid field: multi-resolution hash encoding + a small ReLU MLP (Müller et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..encodings import HashGridEncoding
from ..registry import AT_LEAST_ONE, NOT_NEGATIVE, Limits
from .base import FIELDS, adam
from .mlp import CoordinateMLP


@dataclass
class HashGridConfig:
    levels: int = 16
    log2_table_size: int = 19
    features_per_level: int = 2
    base_resolution: int = 16
    growth_factor: float = 1.5
    width: int = 64
    hidden_layers: int = 1

    #: instant-NGP's tables go up to 2^24 entries per level.
    limits: ClassVar[dict[str, Limits]] = {"levels": AT_LEAST_ONE, "log2_table_size": Limits(1, 24),
                                           "features_per_level": AT_LEAST_ONE, "base_resolution": AT_LEAST_ONE,
                                           "growth_factor": Limits(1), "width": AT_LEAST_ONE,
                                           "hidden_layers": NOT_NEGATIVE}


@FIELDS.register("hashgrid", HashGridConfig)
class HashGridField(CoordinateMLP):
    """The paper's setup: L=16, F=2, N_min=16, b=1.5; an MLP with two hidden layers of 64."""

    default_lr = 1e-2

    def make_encoding(self, in_features: int, config: HashGridConfig) -> nn.Module:
        return HashGridEncoding(in_features, config.levels, config.log2_table_size, config.features_per_level,
                                config.base_resolution, config.growth_factor)

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        # The paper's Adam: beta2 = 0.99 and eps = 1e-15, so rarely-touched table entries still move.
        return adam(self.parameters(), lr, betas=(0.9, 0.99), eps=1e-15)
