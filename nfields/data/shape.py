"""3D shapes: a mesh or an oriented point cloud, normalised into [-1, 1]^3, and the labelled point
samples that shape fitting trains and evaluates on.

Every shape is normalised the same way: the centre of its bounding box goes to the origin and its
longest side is scaled to SHAPE_EXTENT = 1.8 (our choice: a 0.1 margin inside [-1, 1]^3 so that
marching cubes on the box closes the surface and off-surface samples surround it).

Sign conventions: signed distances are negative inside and positive outside (SIREN, DeepSDF);
normals point outwards. `trimesh` (reading files) and `igl` (inside tests and signed distances)
are imported inside the functions that need them, so prepared samples (`ShapeSamples.load_npz`)
work on a machine that has neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NfieldsError

SHAPE_EXTENT = 1.8
MESH_SUFFIXES = (".off", ".ply", ".obj", ".stl")
CLOUD_SUFFIXES = (".xyz", ".txt")
#: Standard deviation of the Gaussian noise that moves surface samples off the surface to make
#: near-surface training points (our choice: ~1% of the box side; Occupancy Networks and DeepSDF
#: both sample close to the surface this way).
NEAR_SURFACE_SIGMA = 0.02


@dataclass
class ShapeSignal:
    """A shape in [-1, 1]^3: a triangle mesh (`faces` given) or an oriented point cloud (`normals` given)."""

    name: str
    vertices: np.ndarray  # (V, 3) float64: mesh vertices or cloud points
    faces: np.ndarray | None = None  # (F, 3) int64
    normals: np.ndarray | None = None  # (V, 3) unit normals of a point cloud
    watertight: bool = False  # a closed, consistently oriented mesh: inside tests and signed distances are defined

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    def describe(self) -> str:
        if self.is_mesh:
            return f"{len(self.vertices)} vertices, {len(self.faces)} triangles" + (", watertight" if self.watertight
                                                                                   else ", open")
        return f"{len(self.vertices)} oriented points"

    def sample_surface(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` points on the surface with their outward unit normals, float32 (N, 3) each."""
        if self.is_mesh:
            return sample_triangles(self.vertices, self.faces, count, rng)
        index = rng.choice(len(self.vertices), count, replace=count > len(self.vertices))
        return self.vertices[index].astype(np.float32), self.normals[index].astype(np.float32)

    def require_watertight(self, what: str) -> None:
        if not self.watertight:
            kind = "mesh is not watertight" if self.is_mesh else "shape is a point cloud"
            raise NfieldsError(f"{what} needs inside/outside, which is defined only for a watertight mesh, but "
                               f"'{self.name}' {kind}; use --mode sdf with --sdf-loss siren (it needs only "
                               f"oriented points) or repair the mesh.")

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: inside the watertight mesh, by the generalised winding number > 1/2 (Jacobson et al.
        2013; libigl's fast approximation, Barill et al. 2018). For a closed, outward-oriented mesh the
        winding number is exactly 1 inside and 0 outside, so this is the exact inside test there."""
        import igl

        self.require_watertight("an inside test")
        winding = igl.fast_winding_number(self.vertices, self.faces, np.ascontiguousarray(points, np.float64))
        return np.asarray(winding) > 0.5

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) float32 distances to the surface, negative inside (libigl, sign by winding number)."""
        import igl

        self.require_watertight("a signed distance")
        distance = igl.signed_distance(np.ascontiguousarray(points, np.float64), self.vertices, self.faces,
                                       igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER)[0]
        return np.asarray(distance, np.float32)


def sample_triangles(vertices: np.ndarray, faces: np.ndarray, count: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points on a triangle mesh (area-weighted faces, uniform barycentrics) and the normals of
    their faces, float32 (count, 3) each. Needs numpy only."""
    corners = vertices[faces]  # (F, 3, 3)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        raise NfieldsError("the mesh has no area (all triangles are degenerate); give a mesh with a surface.")
    face = rng.choice(len(faces), count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    c = corners[face]
    points = c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + v[:, None] * (c[:, 2] - c[:, 0])
    normals = cross[face] / np.maximum(area[face], 1e-30)[:, None]
    return points.astype(np.float32), normals.astype(np.float32)


# -- loading -------------------------------------------------------------------------------------

def load_shape(source: str | Path) -> ShapeSignal:
    """A mesh (OFF, PLY, OBJ, STL), an oriented point cloud (XYZ text `x y z nx ny nz` per line, or
    PLY with normals) or a built-in mesh name (`nfields datasets`), normalised into [-1, 1]^3."""
    path = Path(source)
    if path.is_file():
        if path.stat().st_size == 0:
            raise NfieldsError(f"'{path}' is empty; give a mesh (OFF, PLY, OBJ, STL) or an oriented point cloud.")
        suffix = path.suffix.lower()
        if suffix in CLOUD_SUFFIXES:
            points, normals = _read_xyz(path)
            return _cloud(path.stem, points, normals)
        if suffix not in MESH_SUFFIXES:
            raise NfieldsError(f"'{path}' is not a shape file this reads; give .off, .ply, .obj, .stl or .xyz.")
    loaded, name, shown = read_mesh(source)
    return _from_trimesh(name, loaded, shown)


def read_mesh(source: str | Path, suffixes: tuple[str, ...] = MESH_SUFFIXES) -> tuple[object, str, str]:
    """A mesh file (one of `suffixes`) or a built-in mesh name, read with trimesh as it is stored (not
    normalised) -> (trimesh Trimesh, Scene or PointCloud; short name; what error messages call it)."""
    path = Path(source)
    listed = ", ".join(s[1:].upper() for s in suffixes)
    if path.is_file():
        if path.stat().st_size == 0:
            raise NfieldsError(f"'{path}' is empty; give a mesh ({listed}).")
        if path.suffix.lower() not in suffixes:
            raise NfieldsError(f"'{path}' is not a mesh file this reads; give {listed}.")
        return _trimesh_load(path, path.suffix[1:].lower(), str(path)), path.stem, str(path)
    if path.exists():
        raise NfieldsError(f"'{path}' is not a file; give a mesh file or a built-in name.")
    if path.suffix.lower() in suffixes + CLOUD_SUFFIXES or "/" in str(source):
        raise NfieldsError(f"file '{source}' does not exist; check the path.")
    from . import catalog

    file, file_type = catalog.mesh_file(str(source))
    return _trimesh_load(file, file_type, str(source)), str(source), str(source)


def _trimesh_load(file, file_type: str, shown: str):
    import trimesh

    try:
        loaded = trimesh.load(file, file_type=file_type, process=False)
    except Exception as error:  # trimesh's readers raise many kinds of errors on bad files
        raise NfieldsError(f"cannot read '{shown}' as a {file_type.upper()} shape "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                           f"check the file.") from None
    # trimesh's processing drops NaN and infinite vertices (and the triangles that use them) without a
    # word, so the file is checked as stored first, then processed as trimesh.load(process=True) would.
    parts = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    for part in parts:
        vertices = np.asarray(getattr(part, "vertices", np.zeros((0, 3))))
        if not np.isfinite(vertices).all():
            raise NfieldsError(f"'{shown}' has vertices that are not finite numbers (NaN or infinity); fix the file.")
        faces = getattr(part, "faces", None)
        if faces is not None and len(faces) and (np.asarray(faces).min() < 0 or np.asarray(faces).max() >= len(vertices)):
            raise NfieldsError(f"'{shown}' has triangles that name vertices it does not have; fix the file.")
        if isinstance(part, trimesh.Trimesh):
            part.process()
    return loaded


def _from_trimesh(name: str, loaded, shown: str) -> ShapeSignal:
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        geometry = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        loaded = trimesh.util.concatenate(geometry) if geometry else None
    if isinstance(loaded, trimesh.PointCloud):
        return _cloud(name, np.asarray(loaded.vertices), _ply_normals(loaded, shown))
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise NfieldsError(f"'{shown}' holds no triangles; give a mesh, or an oriented point cloud with normals.")
    mesh = loaded
    vertices = _normalise(np.asarray(mesh.vertices, np.float64), shown)
    faces = np.asarray(mesh.faces, np.int64)
    watertight = bool(mesh.is_watertight and mesh.is_winding_consistent)
    if watertight and mesh.volume < 0:  # inward-facing triangles: flip so normals point outwards
        faces = faces[:, ::-1].copy()
    return ShapeSignal(name, vertices, faces, None, watertight)


def _ply_normals(cloud, shown: str) -> np.ndarray:
    raw = cloud.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    names = raw.dtype.names if raw is not None and raw.dtype.names else ()
    if not all(k in names for k in ("nx", "ny", "nz")):
        raise NfieldsError(f"'{shown}' is a point cloud without normals (nx, ny, nz); give oriented points or a mesh.")
    return np.stack([np.asarray(raw[k], np.float64) for k in ("nx", "ny", "nz")], 1).reshape(-1, 3)


def _read_xyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.loadtxt(path, ndmin=2, comments="#")
    except (ValueError, UnicodeDecodeError) as error:
        raise NfieldsError(f"cannot read '{path}' as 'x y z nx ny nz' lines ({str(error).splitlines()[0]}).") from None
    if data.size == 0:
        raise NfieldsError(f"'{path}' holds no points; give 'x y z nx ny nz' per line.")
    if data.shape[1] != 6:
        raise NfieldsError(f"'{path}' has {data.shape[1]} numbers per line; an oriented point cloud needs 6: "
                           f"x y z nx ny nz.")
    return data[:, :3], data[:, 3:]


def _cloud(name: str, points: np.ndarray, normals: np.ndarray) -> ShapeSignal:
    if not np.isfinite(normals).all():
        raise NfieldsError(f"'{name}' has normals that are not finite numbers; fix the file.")
    length = np.linalg.norm(normals, axis=1)
    if not (length > 1e-12).all():
        raise NfieldsError(f"'{name}' has zero-length normals; every point needs an outward normal.")
    return ShapeSignal(name, _normalise(points, name), None, normals / length[:, None], False)


def _normalise(points: np.ndarray, shown: str) -> np.ndarray:
    """Bounding-box centre to the origin, longest side to SHAPE_EXTENT."""
    if len(points) == 0 or not np.isfinite(points).all():
        raise NfieldsError(f"'{shown}' has no points or points that are not finite numbers; fix the file.")
    low, high = points.min(0), points.max(0)
    extent = float((high - low).max())
    if not extent > 0:
        raise NfieldsError(f"'{shown}' has no extent (all points coincide); give a real shape.")
    return (points - (low + high) / 2) * (SHAPE_EXTENT / extent)


# -- samples that training and evaluation consume -------------------------------------------------

@dataclass
class ShapeSamples:
    """Everything a shape fit reads, built once: from a `ShapeSignal` (with trimesh/igl) or from an
    .npz written by `save_npz` (numpy only). Points are float32 (N, 3) in [-1, 1]^3."""

    name: str
    surface_points: np.ndarray  # training pool of on-surface points ...
    surface_normals: np.ndarray  # ... and their outward normals
    eval_points: np.ndarray  # independent surface samples: the reference for Chamfer / normal consistency
    eval_normals: np.ndarray
    occupancy_points: np.ndarray | None = None  # Occupancy Networks' pool: uniform + near-surface ...
    occupancy_labels: np.ndarray | None = None  # ... with inside (True) / outside labels
    sdf_points: np.ndarray | None = None  # DeepSDF-style regression pool: uniform + near-surface ...
    sdf_values: np.ndarray | None = None  # ... with true signed distances
    iou_points: np.ndarray | None = None  # uniform in [-1, 1]^3 ...
    iou_labels: np.ndarray | None = None  # ... with inside labels: volumetric IoU
    shape: ShapeSignal | None = None  # what they were sampled from

    @classmethod
    def from_signal(cls, signal: ShapeSignal, surface: int = 200_000, evaluation: int = 100_000,
                    occupancy: int = 0, sdf: int = 0, iou: int = 100_000, seed: int = 0,
                    point_dtype: type = np.float32) -> "ShapeSamples":
        """Sample `signal`; pools of size 0 are left out, and labelled pools (occupancy, sdf, iou) need a
        watertight mesh (iou is skipped without one). `point_dtype` rounds pool points before they are
        labelled (float16 for small files), so labels are exact for the stored points."""
        rng = np.random.default_rng(seed)
        samples = cls._surfaces(signal, surface, evaluation, rng)
        if occupancy:
            samples.occupancy_points = _round(_uniform_and_near(samples, occupancy, rng), point_dtype)
            samples.occupancy_labels = signal.inside(samples.occupancy_points)
        if sdf:
            samples.sdf_points = _round(_uniform_and_near(samples, sdf, rng), point_dtype)
            samples.sdf_values = signal.signed_distance(samples.sdf_points)
        if iou and signal.watertight:
            samples.iou_points = _round(rng.uniform(-1, 1, (iou, 3)), point_dtype)
            samples.iou_labels = signal.inside(samples.iou_points)
        return samples

    @classmethod
    def _surfaces(cls, signal: ShapeSignal, surface: int, evaluation: int, rng: np.random.Generator):
        points, normals = signal.sample_surface(surface, rng)
        eval_points, eval_normals = signal.sample_surface(evaluation, rng)
        return cls(signal.name, points, normals, eval_points, eval_normals, shape=signal)

    # The .npz holds the shape itself (vertices and faces, or points and normals; surface samples of
    # any size are drawn from it with numpy) and the labelled pools, which need trimesh/igl to make.
    POOLS = ("occupancy_points", "occupancy_labels", "sdf_points", "sdf_values", "iou_points", "iou_labels")

    def save_npz(self, path: str | Path, point_dtype: type = np.float16) -> None:
        from ..io import atomic_path

        shape = self.shape
        arrays = {"name": np.array(self.name), "watertight": np.array(shape.watertight),
                  "vertices": shape.vertices.astype(np.float32)}
        if shape.is_mesh:
            arrays["faces"] = shape.faces.astype(np.int32)
        else:
            arrays["normals"] = shape.normals.astype(np.float16)
        for key in self.POOLS:
            value = getattr(self, key)
            if value is None:
                continue
            if value.dtype == bool:
                arrays[key] = np.packbits(value)
                arrays[key + "_count"] = np.array(len(value))
            else:
                arrays[key] = value.astype(point_dtype)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path, surface: int = 200_000, evaluation: int = 100_000,
                 seed: int = 0) -> "ShapeSamples":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as error:
            raise NfieldsError(f"cannot read prepared shape samples '{path}' ({error}).") from None
        for key, value in arrays.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NfieldsError(f"prepared shape samples '{path}' hold NaN or infinite values in '{key}'; "
                                   f"write them again.")
        missing = {"name", "watertight", "vertices"} - set(arrays)
        if missing:
            raise NfieldsError(f"'{path}' is not a file of prepared shape samples (it has no "
                               f"{', '.join(sorted(missing))}); write it with ShapeSamples.save_npz.")
        vertices = arrays["vertices"].astype(np.float64)
        faces = arrays["faces"].astype(np.int64) if "faces" in arrays else None
        normals = arrays["normals"].astype(np.float64) if "normals" in arrays else None
        signal = ShapeSignal(str(arrays["name"]), vertices, faces, normals, bool(arrays["watertight"]))
        samples = cls._surfaces(signal, surface, evaluation, np.random.default_rng(seed))
        for key in cls.POOLS:
            if key in arrays:
                value = arrays[key]
                if key + "_count" in arrays:
                    value = np.unpackbits(value)[: int(arrays[key + "_count"])].astype(bool)
                else:
                    value = value.astype(np.float32)
                setattr(samples, key, value)
        return samples


def _uniform_and_near(samples: ShapeSamples, count: int, rng: np.random.Generator) -> np.ndarray:
    """Half uniform in [-1, 1]^3, half surface samples moved by N(0, NEAR_SURFACE_SIGMA^2) noise."""
    near = count // 2
    base = samples.surface_points[rng.integers(len(samples.surface_points), size=near)]
    near_points = np.clip(base + rng.normal(0, NEAR_SURFACE_SIGMA, base.shape), -1, 1)
    return np.concatenate([rng.uniform(-1, 1, (count - near, 3)), near_points]).astype(np.float64)


def _round(points: np.ndarray, dtype: type) -> np.ndarray:
    return points.astype(dtype).astype(np.float32)
