"""From a 3D field to a triangle mesh (marching cubes on a grid over [-1, 1]^3), PLY files and
preview pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import NfieldsError
from ..io import write_bytes_atomic


@torch.no_grad()
def evaluate_grid(field: torch.nn.Module, resolution: int, chunk: int = 1 << 18) -> np.ndarray:
    """The field's first output on a resolution^3 grid of linspace(-1, 1) per axis, (R, R, R) float32,
    indexed [x, y, z]; evaluated `chunk` points at a time."""
    device = next(field.parameters()).device
    axis = torch.linspace(-1, 1, resolution, device=device)
    out = np.empty(resolution ** 3, np.float32)
    plane = resolution * resolution
    slabs = max(1, chunk // plane)
    for start in range(0, resolution, slabs):
        xs = axis[start:start + slabs]
        coords = torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        out[start * plane: start * plane + len(coords)] = field(coords)[:, 0].float().cpu().numpy()
    return out.reshape(resolution, resolution, resolution)


def marching_cubes(values: np.ndarray, level: float, inside_below: bool) -> tuple[np.ndarray, np.ndarray]:
    """The `level` surface of a grid from `evaluate_grid`: vertices (V, 3) float32 in [-1, 1]^3 and
    faces (F, 3) int64 oriented with normals pointing outwards. `inside_below`: the inside is where
    values are below `level` (signed distances) rather than above it (occupancy logits).
    No crossing of `level` gives an empty mesh."""
    from skimage import measure

    if not (values.min() < level < values.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    spacing = 2.0 / (values.shape[0] - 1)
    vertices, faces, _, _ = measure.marching_cubes(values, level, spacing=(spacing,) * 3,
                                                   gradient_direction="descent" if inside_below else "ascent")
    return (vertices - 1.0).astype(np.float32), faces.astype(np.int64)


def extract_mesh(field: torch.nn.Module, resolution: int, level: float = 0.0, inside_below: bool = True,
                 chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    if resolution < 8:
        raise NfieldsError(f"--resolution must be at least 8 grid points per side, not {resolution}.")
    return marching_cubes(evaluate_grid(field, resolution, chunk), level, inside_below)


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """A binary little-endian PLY of a triangle mesh."""
    header = (f"ply\nformat binary_little_endian 1.0\ncomment made by nfields\nelement vertex {len(vertices)}\n"
              f"property float x\nproperty float y\nproperty float z\nelement face {len(faces)}\n"
              f"property list uchar int vertex_indices\nend_header\n").encode()
    face_records = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face_records["n"] = 3
    face_records["i"] = faces
    return header + np.ascontiguousarray(vertices, "<f4").tobytes() + face_records.tobytes()


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    write_bytes_atomic(path, ply_bytes(vertices, faces))


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back what `write_ply` writes (and only that: binary little-endian, float xyz, uchar/int faces)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().split("\n")
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element")}
    v, f = counts["vertex"], counts["face"]
    vertices = np.frombuffer(data, "<f4", v * 3, end).reshape(v, 3)
    records = np.frombuffer(data, [("n", "u1"), ("i", "<i4", (3,))], f, end + v * 12)
    return vertices.copy(), records["i"].astype(np.int64)


# -- pictures ------------------------------------------------------------------------------------

#: Camera directions of the three preview views: (elevation, azimuth) in degrees.
VIEWS = ((20, -60), (20, 30), (80, -90))
MAX_PREVIEW_FACES = 12_000


def save_shape_preview(panels: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
                       path: str | Path, title: str = "") -> None:
    """One row per panel (name, vertices, faces or None, normals of points or None), three views each.
    Meshes are drawn with Lambert shading of face normals (faces randomly thinned to at most
    MAX_PREVIEW_FACES); point clouds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from ..viz import figure_bytes

    fig = plt.figure(figsize=(3.3 * len(VIEWS), 3.3 * len(panels)))
    rng = np.random.default_rng(0)
    for row, (name, vertices, faces, _) in enumerate(panels):
        if faces is not None and len(faces) > MAX_PREVIEW_FACES:
            faces = faces[rng.choice(len(faces), MAX_PREVIEW_FACES, replace=False)]
        for col, (elevation, azimuth) in enumerate(VIEWS):
            ax = fig.add_subplot(len(panels), len(VIEWS), row * len(VIEWS) + col + 1, projection="3d")
            ax.view_init(elevation, azimuth)
            if faces is not None and len(faces):
                triangles = vertices[faces]
                normal = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
                normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
                shade = 0.25 + 0.75 * np.abs(normal @ _view_direction(elevation, azimuth))
                colours = np.clip(shade[:, None] * np.array([0.55, 0.7, 0.9]), 0, 1)
                ax.add_collection3d(Poly3DCollection(triangles, facecolors=colours, edgecolors="none"))
            elif faces is None and len(vertices):
                shown = vertices[rng.choice(len(vertices), min(len(vertices), 20_000), replace=False)]
                ax.scatter(*shown.T, s=0.3, c="tab:blue", depthshade=True)
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
            ax.set_box_aspect((1, 1, 1))
            ax.set_axis_off()
            if col == 0:
                ax.set_title(name + ("" if faces is None or len(faces) else " (empty)"), loc="left")
    if title:
        fig.suptitle(title)
    write_bytes_atomic(path, figure_bytes(fig))


def _view_direction(elevation: float, azimuth: float) -> np.ndarray:
    e, a = np.radians(elevation), np.radians(azimuth)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


__all__ = ["evaluate_grid", "marching_cubes", "extract_mesh", "write_ply", "read_ply", "ply_bytes",
           "save_shape_preview"]
