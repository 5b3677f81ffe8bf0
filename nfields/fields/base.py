"""The field interface: coordinates in, values out."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..errors import NfieldsError
from ..memory import available_memory, gigabytes
from ..registry import Registry

FIELDS: Registry["Field"] = Registry("field")


class Field(nn.Module):
    """`field(coords, condition=None) -> values`, coords (..., in_features) -> (..., out_features).

    Subclasses are registered by name with a config dataclass; `spec()` is everything needed to
    rebuild the module (the weights come from its state_dict).
    """

    #: Adam learning rate that suits this field when the user gives none.
    default_lr: float = 1e-3
    registry_name: str = ""

    def __init__(self, in_features: int, out_features: int, config: Any):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.config = config

    def forward(self, coords: torch.Tensor, condition: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr)

    def spec(self) -> dict:
        return {"name": self.registry_name, "in_features": self.in_features,
                "out_features": self.out_features, "config": dataclasses.asdict(self.config)}


def adam(params, lr: float, **options: Any) -> torch.optim.Adam:
    """torch.optim.Adam; on CUDA nfields' Adam (kernels.adam: the same update, in CUDA graphs one Triton kernel
    per parameter over the whole GPU, where PyTorch's Adam runs a small field's update on a few SMs; eagerly
    torch's fused Adam)."""
    params = list(params)
    if params and all(p.is_cuda for p in params):
        from ..kernels import triton_available
        if triton_available():
            from ..kernels.adam import Adam
            return Adam(params, lr=lr, fused=True, **options)
        return torch.optim.Adam(params, lr=lr, fused=True, **options)
    return torch.optim.Adam(params, lr=lr, foreach=True, **options)


def make_field(name: str, in_features: int, out_features: int, **options: Any) -> Field:
    """Build a registered field by name, e.g. make_field("siren", 2, 3, width=128)."""
    cls, _ = FIELDS.lookup(name)
    config = FIELDS.config(name, options)
    check_fits_in_memory(lambda: cls(in_features, out_features, config), f"the '{name}' field")
    return cls(in_features, out_features, config)


#: Bytes of training state per byte of weights: the weights, their gradients and Adam's two moments.
TRAINING_COPIES = 4


def check_fits_in_memory(build: Callable[[], nn.Module], what: str) -> None:
    """Refuse a module whose weights and Adam state would not fit in host memory, before any of it is
    allocated: `build()` runs once on PyTorch's meta device, which allocates nothing."""
    try:
        with torch.device("meta"):
            probe = build()
    except Exception:  # a module that cannot be built on the meta device is built for real, unchecked
        return
    tensors = list(probe.parameters()) + list(probe.buffers())
    need = TRAINING_COPIES * sum(t.numel() * t.element_size() for t in tensors)
    if need > available_memory():
        count = sum(p.numel() for p in probe.parameters())
        raise NfieldsError(f"{what} with these options has {count:,} parameters, which take {gigabytes(need)} to "
                           f"train, more than the {gigabytes(available_memory())} of memory available; use a "
                           f"smaller width, fewer layers or a smaller table.")


def field_from_spec(spec: dict) -> Field:
    """Rebuild a field (untrained weights) from `Field.spec()`."""
    return make_field(spec["name"], spec["in_features"], spec["out_features"], **spec["config"])


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
