"""Choosing the device and the matmul precision."""

from __future__ import annotations

import torch

from ..errors import NfieldsError

PRECISIONS = ("fp32", "tf32")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NfieldsError(f"--device {name} was asked for but CUDA is not available; use --device cpu or auto.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise NfieldsError(f"unknown device '{name}'; use auto, cpu or cuda.")


def set_precision(precision: str) -> None:
    """fp32: full-precision matmuls; tf32: TensorFloat-32 matmuls on CUDA (10-bit mantissa inputs)."""
    if precision not in PRECISIONS:
        raise NfieldsError(f"unknown precision '{precision}'; use {' or '.join(PRECISIONS)}.")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
