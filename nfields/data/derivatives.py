"""Image derivatives in coordinate units, the targets of Poisson reconstruction (SIREN §4.1)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def pixels_per_unit(n: int, convention: str) -> float:
    """How many pixels one unit of coordinate spans along an axis of n pixels."""
    return (n - 1) / 2.0 if convention == "endpoints" else n / 2.0


def image_gradient(values: np.ndarray, convention: str) -> torch.Tensor:
    """(H*W, C, 2) d/dy, d/dx of (H, W, C) values, by Sobel filters (as SIREN's official code)
    divided by their gain of 8 and converted from per-pixel to per-coordinate-unit slopes."""
    h, w, c = values.shape
    dy = np.stack([ndimage.sobel(values[..., k], axis=0) for k in range(c)], -1) / 8 * pixels_per_unit(h, convention)
    dx = np.stack([ndimage.sobel(values[..., k], axis=1) for k in range(c)], -1) / 8 * pixels_per_unit(w, convention)
    return torch.from_numpy(np.stack([dy, dx], -1).reshape(h * w, c, 2).astype(np.float32))


def image_laplacian(values: np.ndarray, convention: str) -> torch.Tensor:
    """(H*W, C) Laplacian of (H, W, C) values (scipy.ndimage.laplace, as SIREN's official code),
    per squared coordinate unit. Square pixels are assumed (the y scale is used for both axes)."""
    h, w, c = values.shape
    lap = np.stack([ndimage.laplace(values[..., k]) for k in range(c)], -1) * pixels_per_unit(h, convention) ** 2
    return torch.from_numpy(lap.reshape(h * w, c).astype(np.float32))


def field_gradient(outputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(N, C, d) gradients of each output channel with respect to the coordinates, kept in the graph."""
    return torch.stack([torch.autograd.grad(outputs[:, k].sum(), coords, create_graph=True)[0]
                        for k in range(outputs.shape[1])], dim=1)


def field_laplacian(gradient: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(N, C) Laplacians from `field_gradient`'s output: the divergence of each channel's gradient."""
    channels = []
    for k in range(gradient.shape[1]):
        total = 0
        for i in range(gradient.shape[2]):
            total = total + torch.autograd.grad(gradient[:, k, i].sum(), coords, create_graph=True)[0][:, i]
        channels.append(total)
    return torch.stack(channels, dim=1)
