"""Fused GPU kernels (Triton) and the one switch between them and plain PyTorch.

A module with fused kernels has a `kernel` attribute: "auto" (the default: fused on CUDA when Triton is
installed), "torch" or "fused". The fused paths compute first derivatives with respect to the weights only,
so a call whose coordinates require grad (gradient, Laplacian and Eikonal losses) takes the PyTorch path.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import nn

from ..errors import NfieldsError

KERNELS = ("auto", "torch", "fused")


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def fused_applies(kernel: str, x: torch.Tensor) -> bool:
    """Whether a module set to `kernel` runs its fused path on input `x`."""
    if kernel == "torch" or x.device.type != "cuda" or x.dtype != torch.float32:
        return False
    if x.requires_grad and torch.is_grad_enabled():
        return False  # derivatives of the field itself need PyTorch's twice-differentiable ops
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return False  # inside torch.func transforms (vmap, grad): the kernels see plain tensors only
    return triton_available()


def set_kernel(model: nn.Module, kernel: str, device: torch.device) -> list[str]:
    """Set every fused-capable submodule of `model` to `kernel`; returns their names."""
    if kernel not in KERNELS:
        raise NfieldsError(f"unknown --kernel '{kernel}'; use {', '.join(KERNELS)}.")
    if kernel == "fused" and device.type != "cuda":
        raise NfieldsError(f"--kernel fused runs on CUDA only, not on {device.type}; use --kernel auto or torch.")
    if kernel == "fused" and not triton_available():
        raise NfieldsError("--kernel fused needs Triton (pip install triton); use --kernel auto or torch.")
    names = []
    for name, module in model.named_modules():
        if hasattr(module, "kernel"):
            module.kernel = kernel
            names.append(name)
    return names
