"""What a fitted scene run makes after training: orbit videos, renders from given poses, depth
maps, and a mesh of the density's surface."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .. import viz
from ..data.scene import read_poses
from ..errors import NfieldsError
from ..memory import check_memory
from ..render.mesh import evaluate_grid, marching_cubes, write_ply
from ..render.scene import depth_picture
from ..train.manifest import is_run_of
from .fit_scene import FittedScene, load_fitted_scene

VIDEO_SUFFIXES = (".mp4",)
#: Peak host bytes per pixel of rendering one view: its rays (origins, directions and their working copies),
#: colour, depth and opacity, the picture and its 8-bit copy, rounded up.
VIEW_BYTES_PER_PIXEL = 128


def _picture(fitted: FittedScene, pose: torch.Tensor, height: int, width: int, depth: bool, chunk: int) -> np.ndarray:
    rgb, distance, opacity = fitted.render(pose, height, width, chunk)
    if not depth:
        return rgb
    bounds = fitted.model.bounds
    return depth_picture(torch.from_numpy(distance), torch.from_numpy(opacity), bounds.near, bounds.far)


def render_scene_run(run_dir: str | Path, out: str | Path, orbit_frames: int | None = None, pose_file: str | Path | None = None,
                     depth: bool = False, size: tuple[int, int] | None = None, elevation: float = 30.0,
                     radius: float = 4.0, fps: float = 30.0, device: str = "auto", chunk: int = 4096,
                     progress: bool = True) -> dict[str, Any]:
    """`nfields render RUN --orbit/--pose`: an MP4 orbit, or one image per pose (a folder for several)."""
    from tqdm.auto import tqdm

    out = Path(out)
    if (orbit_frames is None) == (pose_file is None):
        raise NfieldsError("a scene run renders either --orbit or --pose FILE; give one of them.")
    if orbit_frames is not None and orbit_frames <= 0:
        raise NfieldsError(f"--frames must be a positive number of frames, not {orbit_frames}.")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise NfieldsError(f"--size takes two positive integers H W, not {size}.")
    if not (np.isfinite(radius) and radius > 0) or not np.isfinite(elevation):
        raise NfieldsError(f"--radius must be a positive number and --elevation a finite angle, not {radius} and "
                           f"{elevation}.")
    if orbit_frames and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise NfieldsError(f"an orbit is a video; give --out a .mp4 name, not '{out.name}'.")
    fitted = load_fitted_scene(run_dir, device)
    if depth and not fitted.model.has_density:
        raise NfieldsError(f"the '{fitted.model.registry_name}' field has no density, so no depth; depth maps need "
                           "a radiance field (nerf or hashgrid).")
    height, width = size or (fitted.height, fitted.width)
    check_memory(height * width * VIEW_BYTES_PER_PIXEL, f"a {width}x{height} view", "choose a smaller --size")
    poses = fitted.orbit(orbit_frames, radius, elevation) if orbit_frames else read_poses(pose_file)
    bar = tqdm(total=len(poses), desc="render", unit="view", disable=not progress)

    def pictures() -> Iterator[np.ndarray]:
        for pose in poses:
            yield _picture(fitted, pose, height, width, depth, chunk)
            bar.update(1)

    try:
        if orbit_frames:
            from ..data.video import write_video

            write_video((viz.to_uint8(p) for p in pictures()), out, fps)
            files = [out]
        elif len(poses) == 1:
            viz.save_image(next(pictures()), out)
            files = [out]
        else:
            if out.suffix:
                raise NfieldsError(f"'{pose_file}' has {len(poses)} poses; give --out a folder for their images.")
            out.mkdir(parents=True, exist_ok=True)
            files = []
            for i, picture in enumerate(pictures()):
                viz.save_image(picture, out / f"r_{i}.png")
                files.append(out / f"r_{i}.png")
    finally:
        bar.close()
    return {"files": [str(f) for f in files], "views": len(poses), "height": height, "width": width}


class _UnitCubeDensity(nn.Module):
    """The density on [-1, 1]^3 coordinates (the marching-cubes grid) of a scene in [-bound, bound]^3."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.model.density(coords * self.model.bounds.bound)[:, None]


def export_scene_mesh(run_dir: str | Path, out: str | Path, resolution: int = 256, threshold: float = 25.0,
                      device: str = "auto") -> dict[str, Any]:
    """`nfields export RUN --mesh`: the surface where density = `threshold` (marching cubes) as PLY."""
    out = Path(out)
    if resolution < 8:
        raise NfieldsError(f"--resolution must be at least 8 grid points per side, not {resolution}.")
    if not (np.isfinite(threshold) and threshold > 0):
        raise NfieldsError(f"--threshold must be a positive density, not {threshold}.")
    if out.suffix.lower() != ".ply":
        raise NfieldsError(f"meshes are written as PLY; give --out a .ply name, not '{out.name}'.")
    fitted = load_fitted_scene(run_dir, device)
    if not fitted.model.has_density:
        fitted.model.density(torch.zeros(1, 3))  # raises the field's own explanation
    values = evaluate_grid(_UnitCubeDensity(fitted.model), resolution, chunk=1 << 16)
    vertices, faces = marching_cubes(values, threshold, inside_below=False)
    if len(faces) == 0:
        raise NfieldsError(f"the density never crosses {threshold:g} (it spans {values.min():.3g} to "
                           f"{values.max():.3g}); pick a --threshold inside that range.")
    vertices = vertices * fitted.model.bounds.bound
    write_ply(out, vertices, faces)
    return {"file": str(out), "vertices": len(vertices), "faces": len(faces), "threshold": threshold,
            "resolution": resolution, "density_max": float(values.max())}


def is_scene_run(run_dir: str | Path) -> bool:
    return is_run_of(run_dir, "fit-scene")
