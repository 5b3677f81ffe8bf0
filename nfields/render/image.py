"""Evaluate an image field on any pixel grid: super-resolution, zoom in, zoom out."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.grid import region_axis
from ..fields import Field


@torch.no_grad()
def render_image(field: Field, height: int, width: int, image_size: tuple[int, int],
                 convention: str = "centers", region: Sequence[float] | None = None,
                 chunk: int = 1 << 18, progress=None) -> np.ndarray:
    """The field's raw output on a (height, width) grid, as a float32 array (height, width, C).

    `region` = (x0, y0, x1, y1) in pixel units of the fitted image of size `image_size` = (H, W)
    (default: the whole image); it may extend past the image to zoom out. Rows are evaluated
    `chunk` pixels at a time, so the output size is bounded by host memory, not by the device.
    """
    image_h, image_w = image_size
    x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, float(image_w), float(image_h))
    device = next(field.parameters()).device
    ys = region_axis(y0, y1, height, image_h, convention, device)
    xs = region_axis(x0, x1, width, image_w, convention, device)
    out = np.empty((height, width, field.out_features), np.float32)
    rows = max(1, chunk // width)
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        coords = torch.stack(torch.meshgrid(ys[start:stop], xs, indexing="ij"), dim=-1)
        out[start:stop] = field(coords.reshape(-1, 2)).reshape(stop - start, width, -1).float().cpu().numpy()
        if progress is not None:
            progress.update(stop - start)
    return out
