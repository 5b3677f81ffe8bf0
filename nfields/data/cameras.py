"""Pinhole cameras in the NeRF / OpenGL convention (numpy): camera-to-world poses that look at a
point, cameras on spheres and circles, focal length and projection. The camera looks along its
local -z with +y up and +x right; the world is z-up (Blender, NeRF-synthetic)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

RADIUS = 4.0  # NeRF-synthetic's camera distance
CAMERA_ANGLE_X = 0.6911112070083618  # NeRF-synthetic's horizontal field of view (radians)
ELEVATIONS = (5.0, 85.0)  # degrees: random (training) cameras on the upper hemisphere
TEST_ELEVATION = 30.0  # degrees: the test circle


def look_at(position: Sequence[float], target: Sequence[float] = (0, 0, 0),
            up: Sequence[float] = (0, 0, 1)) -> np.ndarray:
    """4x4 camera-to-world: columns right (+x), up (+y), back (+z) and the position."""
    position, target, up = (np.asarray(v, np.float64) for v in (position, target, up))
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`: any right angle will do
        right = np.cross(forward, (0.0, 1.0, 0.0))
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(right, forward), -forward, position
    return pose


def sphere_point(azimuth: float, elevation: float, radius: float = RADIUS) -> np.ndarray:
    """Point at `azimuth` (from +x towards +y) and `elevation` (from the xy plane), both in radians."""
    return radius * np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)])


def random_poses(count: int, rng: np.random.Generator, elevations: tuple[float, float] = ELEVATIONS,
                 radius: float = RADIUS) -> np.ndarray:
    """(count, 4, 4) cameras uniform on the sphere's area between two elevations (degrees), looking at
    the origin."""
    low, high = (math.sin(math.radians(e)) for e in elevations)
    heights = rng.uniform(low, high, count)
    azimuths = rng.uniform(0, 2 * math.pi, count)
    return np.array([look_at(sphere_point(a, math.asin(h), radius)) for a, h in zip(azimuths, heights)]
                    ).reshape(-1, 4, 4)


def orbit_poses(count: int, elevation: float = TEST_ELEVATION, radius: float = RADIUS) -> np.ndarray:
    """(count, 4, 4) cameras at evenly spaced azimuths (from 0) on the circle at `elevation` degrees."""
    return np.array([look_at(sphere_point(2 * math.pi * i / count, math.radians(elevation), radius))
                     for i in range(count)]).reshape(-1, 4, 4)


def focal_length(width: int, camera_angle_x: float = CAMERA_ANGLE_X) -> float:
    """Focal length in pixels from the horizontal field of view (radians)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def project(points: np.ndarray, pose: np.ndarray, width: int, camera_angle_x: float = CAMERA_ANGLE_X,
            height: int | None = None) -> np.ndarray:
    """World points (N, 3) -> continuous pixel coordinates (N, 2) as (column, row) in an image of
    `width` x `height` (square by default) seen from camera-to-world `pose`; pixel i covers [i, i + 1)."""
    height = width if height is None else height
    camera = (np.asarray(points, np.float64) - pose[:3, 3]) @ pose[:3, :3]  # world -> camera frame
    focal = focal_length(width, camera_angle_x)
    return np.stack([width / 2 + focal * camera[:, 0] / -camera[:, 2],
                     height / 2 - focal * camera[:, 1] / -camera[:, 2]], 1)
