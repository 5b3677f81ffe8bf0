"""Coordinate grids for signals on pixels. Coordinates are (y, x), row then column, in [-1, 1].

Two conventions: "centers" (the default) puts pixel i of n at (2i + 1)/n - 1, so pixel edges
span [-1, 1] exactly; "endpoints" is linspace(-1, 1, n), as SIREN's official code uses.
"""

from __future__ import annotations

import torch

CONVENTIONS = ("centers", "endpoints")


def axis(n: int, convention: str = "centers", device=None) -> torch.Tensor:
    """Coordinates of the n pixel centres along one axis."""
    return edges_to_coords(torch.arange(n, device=device, dtype=torch.float64) + 0.5, n, convention)


def edges_to_coords(u: torch.Tensor, n: int, convention: str) -> torch.Tensor:
    """Map positions u in pixel units (0 = first pixel's outer edge, n = last one's) to coordinates."""
    if convention == "centers":
        x = 2.0 * u / n - 1.0
    elif convention == "endpoints":
        x = -1.0 + 2.0 * (u - 0.5) / max(n - 1, 1)
    else:
        raise ValueError(f"unknown coordinate convention {convention!r}")
    return x.float()


def pixel_grid(height: int, width: int, convention: str = "centers", device=None) -> torch.Tensor:
    """(height, width, 2) coordinates of every pixel centre."""
    ys, xs = axis(height, convention, device), axis(width, convention, device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def region_axis(start: float, stop: float, samples: int, n: int, convention: str, device=None) -> torch.Tensor:
    """`samples` pixel centres evenly covering [start, stop] (pixel units of an n-pixel axis)."""
    u = start + (torch.arange(samples, device=device, dtype=torch.float64) + 0.5) * (stop - start) / samples
    return edges_to_coords(u, n, convention)
