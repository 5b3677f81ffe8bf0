"""Rendering whole views of a scene field: chunks of rays, orbits of camera poses, depth pictures."""

from __future__ import annotations

import numpy as np
import torch

from .rays import camera_rays


@torch.no_grad()
def render_view(model, pose: torch.Tensor, height: int, width: int, focal: float, chunk: int = 4096,
                background: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One camera-to-world pose (4, 4) -> colour (H, W, 3), depth (H, W) and opacity (H, W), `chunk` rays
    at a time. The model is put in eval mode for the call (deterministic sampling)."""
    device = next(model.parameters()).device
    origins, directions = camera_rays(pose.to(device, torch.float32), height, width, focal)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    if background is None:
        background = torch.ones(3, device=device)
    was_training = model.training
    model.eval()
    try:
        parts = [model.render_rays(origins[i:i + chunk], directions[i:i + chunk], background, training=False)
                 for i in range(0, origins.shape[0], chunk)]
    finally:
        model.train(was_training)
    rgb = torch.cat([p.rgb for p in parts]).reshape(height, width, 3)
    depth = torch.cat([p.depth for p in parts]).reshape(height, width)
    opacity = torch.cat([p.opacity for p in parts]).reshape(height, width)
    return rgb.clamp(0, 1), depth, opacity


def depth_picture(depth: torch.Tensor, opacity: torch.Tensor, near: float, far: float) -> np.ndarray:
    """A depth map as an (H, W, 3) picture in [0, 1]: near is bright, far dark, empty pixels white.
    Depth is the expected termination distance divided by opacity (the distance where the ray stops)."""
    import matplotlib

    distance = (depth / opacity.clamp_min(1e-6)).clamp(near, far)
    shade = 1.0 - (distance - near) / (far - near)
    colored = matplotlib.colormaps["viridis"](shade.cpu().numpy())[..., :3]
    alpha = opacity.clamp(0, 1).cpu().numpy()[..., None]
    return (colored * alpha + (1.0 - alpha)).astype(np.float32)
