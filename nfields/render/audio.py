"""Evaluate an audio field at any sample rate."""

from __future__ import annotations

import numpy as np
import torch

from ..fields import Field


@torch.no_grad()
def render_samples(field: Field, times: torch.Tensor, chunk: int = 1 << 18) -> np.ndarray:
    """The field's raw output (N, C) float32 at `times` (N,) in [-1, 1], `chunk` samples at a time."""
    device = next(field.parameters()).device
    out = np.empty((len(times), field.out_features), np.float32)
    for start in range(0, len(times), chunk):
        t = times[start:start + chunk].to(device)[:, None]
        out[start:start + len(t)] = field(t).float().cpu().numpy()
    return out
