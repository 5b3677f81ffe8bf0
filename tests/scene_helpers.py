"""A tiny analytic scene in the NeRF-synthetic layout, ray-traced exactly (no renderer needed):
a sphere whose colour varies with position, seen from random upper-hemisphere cameras."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nfields.render.rays import camera_rays
from nfields.data.cameras import look_at

RADIUS = 0.8
ANGLE = 0.6911


def sphere_color(points: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + 0.45 * points / RADIUS, 0, 1)


def render_sphere(pose: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 4) RGBA: the sphere's colour where a pixel-centre ray hits it, transparent elsewhere."""
    focal = 0.5 * size / math.tan(0.5 * ANGLE)
    origins, directions = camera_rays(torch.tensor(pose, dtype=torch.float64), size, size, focal)
    o, d = origins.numpy(), directions.numpy()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - RADIUS**2)
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 0))
    color = sphere_color(o + d * t[..., None])
    rgba = np.zeros((size, size, 4))
    rgba[..., :3] = np.where(hit[..., None], color, 0)
    rgba[..., 3] = hit
    return rgba


def write_sphere_scene(root: Path, train_views: int = 8, test_views: int = 2, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train_views), ("test", test_views)):
        (root / split).mkdir(exist_ok=True)
        frames = []
        for i in range(count):
            if split == "train":
                azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 1.4)
            else:
                azimuth, elevation = 2 * math.pi * (i + 0.5) / count, math.radians(30)
            position = 4.0 * np.array([math.cos(elevation) * math.cos(azimuth),
                                       math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
            pose = look_at(position)
            rgba = render_sphere(pose, size)
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
    return root
