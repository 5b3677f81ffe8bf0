"""Camera rays for pinhole views in the NeRF / OpenGL convention, and Plücker ray coordinates.

A pose is a camera-to-world 4x4 matrix; the camera looks along its local -z with +y up and +x
right (Blender, NeRF-synthetic). Rays pass through pixel centres: pixel (row i, column j) is the
image-plane point (j + 0.5, i + 0.5) (our choice; NeRF's code omits the half pixel).
"""

from __future__ import annotations

import torch


def camera_directions(height: int, width: int, focal: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 3) directions in the camera frame, not normalised (z = -1)."""
    rows = torch.arange(height, device=device, dtype=dtype) + 0.5
    cols = torch.arange(width, device=device, dtype=dtype) + 0.5
    i, j = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([(j - 0.5 * width) / focal, -(i - 0.5 * height) / focal, -torch.ones_like(i)], -1)


def camera_rays(poses: torch.Tensor, height: int, width: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions of every pixel: poses (..., 4, 4) -> two (..., H, W, 3) tensors."""
    local = camera_directions(height, width, focal, poses.device, poses.dtype)
    rotation = poses[..., None, None, :3, :3]
    directions = (rotation @ local[..., None]).squeeze(-1)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = poses[..., None, None, :3, 3].expand(directions.shape)
    return origins, directions


def plucker(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Plücker coordinates (d, o x d) of rays, (..., 6): the same for every origin on the ray."""
    d = directions / directions.norm(dim=-1, keepdim=True)
    return torch.cat([d, torch.linalg.cross(origins, d, dim=-1)], -1)
