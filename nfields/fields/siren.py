"""SIREN: sine activations with the official initialisation (Sitzmann et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..kernels import fused_applies
from ..nn import SineLinear, siren_uniform_
from ..registry import AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, Limits
from .base import FIELDS, Field


@dataclass
class SirenConfig:
    width: int = 256
    hidden_layers: int = 3
    omega0: float = 30.0
    #: omega0 of the first layer alone; SIREN's audio setup raises it (3000 for time in [-1, 1]).
    first_omega0: float = 30.0

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "hidden_layers": NOT_NEGATIVE, "omega0": POSITIVE,
                                           "first_omega0": POSITIVE}


@FIELDS.register("siren", SirenConfig)
class Siren(Field):
    """sin(omega0 (W x + b)) layers; the last layer is linear with U(±sqrt(6/n)/omega0) weights."""

    default_lr = 1e-4
    #: "auto", "torch" or "fused" (nfields.kernels); a plain attribute, not part of the config or the state.
    kernel = "auto"

    def __init__(self, in_features: int, out_features: int, config: SirenConfig):
        super().__init__(in_features, out_features, config)
        layers: list[nn.Module] = [SineLinear(in_features, config.width, config.first_omega0, first=True)]
        layers += [SineLinear(config.width, config.width, config.omega0) for _ in range(config.hidden_layers)]
        layers.append(siren_uniform_(nn.Linear(config.width, out_features), config.omega0, first=False))
        self.net = nn.Sequential(*layers)

    def forward(self, coords: torch.Tensor, condition=None) -> torch.Tensor:
        if fused_applies(self.kernel, coords) and self._fused_selected():
            from ..kernels.fused_mlp import fused_mlp

            layers = list(self.net)
            return fused_mlp(coords, "sin", layers[0].omega0, self.config.omega0, layers[0].linear,
                             [layer.linear for layer in layers[1:-1]], layers[-1])
        return self.net(coords)

    def _fused_selected(self) -> bool:
        """A shape the fused kernels handle, and tf32 matmuls on (kernel="auto") or the fused path forced."""
        from ..kernels.fused_mlp import auto_selects, supports

        return (supports(self.in_features, self.config.width, self.out_features, self.config.hidden_layers)
                and (self.kernel == "fused" or auto_selects()))
