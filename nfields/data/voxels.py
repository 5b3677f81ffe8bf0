"""The built-in voxel dataset: pybullet's 1,000 random objects as solid occupancy grids (default 64^3),
the many-shape data of the generative fields (mNIF's voxel benchmark, on our own object set).

    data = load_voxels("train")                 # VoxelSet: occupancy uint8 (N, 64, 64, 64), names
    coords = voxel_centres(64)                  # (64, 64, 64, 3) in [-1, 1]^3, same order as occupancy
    vertices, faces = occupancy_to_mesh(data.occupancy[0])
    points = surface_points(data.occupancy[0])  # (2048, 3) for Chamfer / coverage / MMD

Conventions:
- Grids are indexed [x, y, z] (`torch.meshgrid(..., indexing="ij")`, as `nfields.render.mesh.evaluate_grid`),
  and voxel (i, j, k) has its centre at (-1 + (2i+1)/R, -1 + (2j+1)/R, -1 + (2k+1)/R): the R voxels of an axis
  tile [-1, 1] exactly (`voxel_centres`).
- World is z-up, as in `nfields.data.make_scene`: the OBJ files are y-up and are rotated (x, y, z) -> (x, -z, y),
  so a voxel object and its multi-view renders agree.
- Normalisation: each object is centred on its bounding box and scaled so the box's longest side is
  EXTENT = 1.875, a margin of 1/16 on every side (2 voxels at 64^3), so nothing touches the border.
- Occupancy (solid, inside = 1): a voxel is occupied when the generalised winding number of the mesh at its
  centre is >= 0.5 (libigl's exact `winding_number`). It is 1 inside a closed mesh and degrades gracefully
  where a mesh is slightly open (about 2% of these objects are not watertight), needs no flood fill that a
  small hole would leak through, and does not fatten shapes the way surface voxelisation does. Only voxels
  inside the mesh's bounding box are tested.
- Split (as `nfields.data.object_views`): object number k (its position among the 1,000 files in sorted
  order, which is also its folder name) is test when k % 10 == 0 (objects 000, 010, 020, ...), train otherwise.
  Positions, not names, of loaded objects: an object that fails does not shift the split of the rest.
- Cache: all objects of a resolution are voxelised once and kept in $XDG_CACHE_HOME/nfields (default
  ~/.cache/nfields) as a compressed .npz of bit-packed grids (np.packbits), keyed by resolution and a hash of
  the object files' names and contents, so a copy carried to another machine with the same pybullet is found
  there (`voxel_cache_file` says where it goes). Objects that cannot be read are skipped and named in
  `VoxelSet.skipped` (pybullet 3.2.7: object 168, whose vertices are all NaN).
- Measured at 64^3 (pybullet 3.2.7): the voxel volume of the 977 watertight objects is within 1.3% (mean
  absolute) of their mesh volume; the median object fills 7.4% of the cube, the thinnest (rods) 0.01%.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import NfieldsError
from ..io import atomic_path, write_bytes_atomic
from ..registry import did_you_mean
from .datasets import cache_dir
from .make_scene import Y_UP_TO_Z_UP, object_files
from .object_views import TEST_EVERY

SPLITS = ("train", "test", "all")
RESOLUTION = 64  # DESIGN: voxels 64^3
MIN_RESOLUTION, MAX_RESOLUTION = 4, 256  # 256^3 bits are 2 MiB per object, 2 GiB for the set
EXTENT = 1.875  # longest side of each normalised object: a margin of 1/16 per side (2 voxels at 64^3)
SURFACE_POINTS = 2048  # points per shape for Chamfer distances: GEM's count (marching cubes at 0.5, 2048 samples)
CACHE_VERSION = 1  # bump when the voxelisation changes, so old caches are not read
WINDING_CHUNK = 1 << 17  # query points per libigl call: bounds the memory of one call


@dataclass
class VoxelSet:
    """N solid shapes on an R^3 grid: `occupancy` uint8 (N, R, R, R) in {0, 1}, indexed [x, y, z] (see the
    module); `names` the object ids ('000' .. '999'); `skipped` the objects of this split that could not be
    read, name -> reason."""

    occupancy: torch.Tensor
    names: list[str]
    split: str = "all"
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.occupancy.shape[0]

    @property
    def resolution(self) -> int:
        return self.occupancy.shape[1]

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The selected shapes as float32 (B, R, R, R) in {0, 1}; converts only those."""
        return self.occupancy[torch.as_tensor(indices, dtype=torch.long)].float()

    def __repr__(self) -> str:
        r = self.resolution
        return f"VoxelSet(split={self.split!r}, {len(self)} shapes {r}x{r}x{r}, {len(self.skipped)} skipped)"


def voxel_centres(resolution: int = RESOLUTION) -> torch.Tensor:
    """float32 (R, R, R, 3): the centre (x, y, z) of voxel [i, j, k], -1 + (2i+1)/R per axis."""
    _check_resolution(resolution)
    axis = torch.from_numpy(_axis(resolution)).float()
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)


def _axis(resolution: int) -> np.ndarray:
    return -1.0 + (2.0 * np.arange(resolution) + 1.0) / resolution


def _check_resolution(resolution) -> int:
    if not isinstance(resolution, (int, np.integer)) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise NfieldsError(f"resolution must be a whole number of voxels per side from {MIN_RESOLUTION} to "
                           f"{MAX_RESOLUTION}, not {resolution}.")
    return int(resolution)


# -- loading -----------------------------------------------------------------------------------------

def load_voxels(split: str = "train", resolution: int = RESOLUTION, limit: int = 0,
                progress: bool = False) -> VoxelSet:
    """pybullet's objects of `split` ('train', 'test' or 'all') as solid R^3 occupancy (see the module).

    The first call at a resolution voxelises all 1,000 objects and caches them (64^3: 430 CPU seconds, about
    3.5 minutes on 2 free cores; a 0.7 MB file); with `limit` N > 0 and no cache yet, only the first N objects of the split are voxelised (and
    nothing is cached), so a quick look stays quick. `progress` shows a bar while voxelising."""
    if split not in SPLITS:
        raise NfieldsError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; use one of: {', '.join(SPLITS)}.")
    resolution = _check_resolution(resolution)
    if not isinstance(limit, (int, np.integer)) or limit < 0:
        raise NfieldsError(f"limit must be a number of shapes (0 for all), not {limit}.")
    try:
        files = object_files()
    except NfieldsError:
        # No pybullet here (e.g. a GPU box without package access): the arrays nfields made elsewhere, if present.
        cached = _only_cache(resolution)
        if cached is None:
            raise
        files = []
    else:
        cache = _cache_path(files, resolution)
        cached = _read_cache(cache, resolution)
    if cached is None and limit:
        return _voxelise_split(files, split, resolution, int(limit), progress)
    if cached is None:
        cached = voxelise_objects(files, resolution, progress)
        _write_cache(cache, cached)
    keep = [i for i, number in enumerate(cached.numbers) if _in_split(int(number), split)]
    skipped = {name: why for name, why in cached.skipped.items() if _in_split(int(name), split)}
    if limit:
        keep = keep[:limit]
    occupancy = np.unpackbits(cached.bits[keep], axis=1, count=resolution ** 3)
    return VoxelSet(torch.from_numpy(occupancy.reshape(-1, resolution, resolution, resolution)),
                    [cached.names[i] for i in keep], split, skipped)


def _in_split(number: int, split: str) -> bool:
    return split == "all" or (number % TEST_EVERY == 0) == (split == "test")


def _voxelise_split(files: list[Path], split: str, resolution: int, limit: int, progress: bool) -> VoxelSet:
    """The first `limit` readable objects of `split`, voxelised now and not cached."""
    grids, names, skipped = [], [], {}
    for number, file in enumerate(files):
        if len(grids) == limit:
            break
        if not _in_split(number, split):
            continue
        try:
            grids.append(voxelise_mesh(*read_object(file), resolution))
            names.append(_name(number))
        except NfieldsError as error:
            skipped[_name(number)] = str(error)
    occupancy = np.stack(grids) if grids else np.zeros((0,) + (resolution,) * 3, np.uint8)
    return VoxelSet(torch.from_numpy(occupancy.astype(np.uint8)), names, split, skipped)


def _name(number: int) -> str:
    return f"{number:03d}"


# -- voxelisation ------------------------------------------------------------------------------------

def read_object(file: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One mesh file -> (vertices float64 (V, 3), faces int64 (F, 3)): every part merged, rotated to z-up and
    normalised (centred, longest side EXTENT), or NfieldsError saying why not."""
    import trimesh

    from .shape import read_mesh

    loaded, _, shown = read_mesh(file, (Path(file).suffix.lower(),))
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.dump(concatenate=True) if loaded.geometry else None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise NfieldsError(f"'{shown}' holds no triangles.")
    vertices = np.asarray(loaded.vertices, np.float64) @ Y_UP_TO_Z_UP.T
    if not np.isfinite(vertices).all():
        raise NfieldsError(f"'{shown}' has vertices that are not finite numbers.")
    low, high = vertices.min(0), vertices.max(0)
    extent = float((high - low).max())
    if not extent > 0:
        raise NfieldsError(f"'{shown}' has no extent (all vertices coincide).")
    vertices = (vertices - (low + high) / 2) * (EXTENT / extent)
    return vertices, np.asarray(loaded.faces, np.int64)


def voxelise_mesh(vertices: np.ndarray, faces: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """uint8 (R, R, R) [x, y, z]: 1 where the generalised winding number of the mesh (already in [-1, 1]^3) at
    the voxel centre is >= 0.5. Voxels outside the mesh's bounding box are 0 without being tested."""
    import igl

    resolution = _check_resolution(resolution)
    vertices = np.ascontiguousarray(vertices, np.float64)
    faces = np.ascontiguousarray(faces, np.int64)
    occupancy = np.zeros((resolution,) * 3, np.uint8)
    if len(faces) == 0:
        return occupancy
    axis = _axis(resolution)
    low, high = vertices.min(0), vertices.max(0)
    ranges = [np.flatnonzero((axis >= low[d]) & (axis <= high[d])) for d in range(3)]
    if any(len(r) == 0 for r in ranges):
        return occupancy  # thinner than a voxel in some direction: no centre is inside
    (x0, x1), (y0, y1), (z0, z1) = [(int(r[0]), int(r[-1]) + 1) for r in ranges]
    box = np.stack(np.meshgrid(axis[x0:x1], axis[y0:y1], axis[z0:z1], indexing="ij"), -1).reshape(-1, 3)
    winding = np.concatenate([igl.winding_number(vertices, faces, box[i:i + WINDING_CHUNK])
                              for i in range(0, len(box), WINDING_CHUNK)])
    # |w|: a mesh wound inside out has w = -1 inside; it is still solid there
    occupancy[x0:x1, y0:y1, z0:z1] = (np.abs(winding) >= 0.5).reshape(x1 - x0, y1 - y0, z1 - z0)
    return occupancy


@dataclass
class VoxelCache:
    """All objects at one resolution, as cached: `bits` uint8 (N, ceil(R^3 / 8)) from np.packbits of the
    flattened [x, y, z] grids; `numbers` the objects' positions in sorted order; `skipped` name -> reason."""

    bits: np.ndarray
    names: list[str]
    numbers: np.ndarray
    skipped: dict[str, str]
    resolution: int
    seconds: float = 0.0


def voxelise_objects(files: Sequence[str | Path], resolution: int = RESOLUTION, progress: bool = False) -> VoxelCache:
    """Every file voxelised (`read_object` then `voxelise_mesh`); unreadable ones skipped with the reason."""
    start = time.perf_counter()
    bits, names, numbers, skipped = [], [], [], {}
    bar = _bar(len(files), progress)
    for number, file in enumerate(files):
        try:
            grid = voxelise_mesh(*read_object(file), resolution)
        except NfieldsError as error:
            skipped[_name(number)] = str(error)
        else:
            bits.append(np.packbits(grid.reshape(-1)))
            names.append(_name(number))
            numbers.append(number)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    packed = np.stack(bits) if bits else np.zeros((0, (resolution ** 3 + 7) // 8), np.uint8)
    return VoxelCache(packed, names, np.asarray(numbers, np.int64), skipped, resolution, time.perf_counter() - start)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="voxelising objects", unit="object")


# -- the cache ---------------------------------------------------------------------------------------

def _only_cache(resolution: int) -> VoxelCache | None:
    """The one cache file at `resolution` in the cache folder (copied from a machine with pybullet), or None."""
    found = sorted(cache_dir().glob(f"voxels-{resolution}-*.npz"))
    return _read_cache(found[-1], resolution) if len(found) == 1 else None


def _cache_path(files: list[Path], resolution: int) -> Path:
    # names and contents, not modification times: a cache carried to another machine's identical pybullet
    # install is found there (hashing the 1,000 files, 28 MB, takes ~0.1 s); a changed set makes a new cache
    digest = hashlib.sha1()
    for file in files:
        digest.update(f"{file.parent.name}/{file.name}\n".encode())
        digest.update(hashlib.sha1(file.read_bytes()).digest())
    return cache_dir() / f"voxels-{resolution}-{len(files)}-{digest.hexdigest()[:12]}-v{CACHE_VERSION}.npz"


def _write_cache(path: Path, cache: VoxelCache) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, bits=cache.bits, names=np.array(cache.names, dtype=str),
                                    numbers=cache.numbers, resolution=np.int64(cache.resolution),
                                    skipped_names=np.array(list(cache.skipped), dtype=str),
                                    skipped_reasons=np.array(list(cache.skipped.values()), dtype=str))
    except OSError:
        pass  # a read-only cache folder only costs the next load its time


def _read_cache(path: Path, resolution: int) -> VoxelCache | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            cache = VoxelCache(data["bits"], [str(n) for n in data["names"]], data["numbers"].astype(np.int64),
                               dict(zip((str(n) for n in data["skipped_names"]),
                                        (str(r) for r in data["skipped_reasons"]))),
                               int(data["resolution"]))
    except Exception:  # missing or damaged: voxelise again
        return None
    ok = (cache.resolution == resolution and cache.bits.dtype == np.uint8
          and cache.bits.shape[1:] == ((resolution ** 3 + 7) // 8,)
          and len(cache.names) == len(cache.bits) == len(cache.numbers))
    return cache if ok else None


def voxel_cache_file(resolution: int = RESOLUTION) -> Path:
    """Where the cache of this resolution lives (whether or not it exists yet)."""
    return _cache_path(object_files(), _check_resolution(resolution))


# -- meshes and points -------------------------------------------------------------------------------

def _grid(values) -> np.ndarray:
    array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values,
                                                                                                       np.float32)
    if array.ndim != 3 or len(set(array.shape)) != 1 or array.shape[0] < 2:
        raise NfieldsError(f"a voxel grid must be (R, R, R) with R >= 2, not shape {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise NfieldsError("a voxel grid must hold finite occupancies or probabilities, and this one has NaN or "
                           "infinite values.")
    return array.astype(np.float32, copy=False)


def occupancy_to_mesh(occupancy_or_probabilities, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The `level` surface of an (R, R, R) [x, y, z] grid of occupancy or probabilities (numpy or torch),
    by marching cubes: vertices float32 (V, 3) in [-1, 1]^3 (voxel-centre coordinates), faces int64 (F, 3)
    with normals pointing out. The grid is padded with one layer of empty voxels, so shapes that touch the
    border are closed there. An empty (or full) grid gives an empty mesh."""
    from ..render.mesh import marching_cubes

    grid = _grid(occupancy_or_probabilities)
    resolution = grid.shape[0]
    padded = np.pad(grid, 1)
    vertices, faces = marching_cubes(padded, level, inside_below=False)
    # marching_cubes maps padded index i to -1 + 2i/(P-1); voxel i-1 of the grid has its centre at -1 + (2i-1)/R
    index = (vertices.astype(np.float64) + 1.0) * (resolution + 1) / 2.0
    return (-1.0 + (2.0 * index - 1.0) / resolution).astype(np.float32), faces


def save_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A triangle mesh as binary PLY (`.ply`, nfields' writer) or Wavefront OBJ (`.obj`), written atomically."""
    from ..render.mesh import write_ply

    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        write_ply(path, vertices, faces)
    elif suffix == ".obj":
        lines = [f"v {x:.6g} {y:.6g} {z:.6g}" for x, y, z in np.asarray(vertices)]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces)]  # OBJ counts from 1
        write_bytes_atomic(path, ("\n".join(["# made by nfields"] + lines) + "\n").encode())
    else:
        raise NfieldsError(f"'{path}' must end in .ply or .obj to say the mesh format.")


def surface_points(occupancy, n: int = SURFACE_POINTS, seed: int = 0, level: float = 0.5) -> np.ndarray:
    """float32 (n, 3): points uniform on the marching-cubes surface of an (R, R, R) grid (area-weighted faces,
    uniform barycentrics), in [-1, 1]^3; seeded. An empty grid has no surface: NfieldsError."""
    from .shape import sample_triangles

    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise NfieldsError(f"the number of surface points must be positive, not {n}.")
    vertices, faces = occupancy_to_mesh(occupancy, level)
    if len(faces) == 0:
        raise NfieldsError(f"the grid has no surface at level {level} (it is empty or full); no points to sample.")
    points, _ = sample_triangles(vertices.astype(np.float64), faces, int(n), np.random.default_rng(seed))
    return points


# -- pictures ----------------------------------------------------------------------------------------

VIEW = (30.0, -60.0)  # elevation and azimuth (degrees) of the picture's camera: from above, front-left
LIGHT = (0.4, -0.5, 0.75)  # direction towards the light, world z-up
COLOR = np.array([0.55, 0.68, 0.85])  # the shapes' colour; the background is white
FRAME = 1.45  # half-width of the picture: a normalised object (inside [-15/16, 15/16]^3) fits from VIEW


def render_voxels(occupancy, size: int = 128, view: tuple[float, float] = VIEW) -> np.ndarray:
    """float32 (size, size, 3) in [0, 1]: an orthographic picture of a grid from direction `view` (elevation,
    azimuth in degrees), z up in the picture, Lambert-shaded by normals of the smoothed occupancy, on white."""
    from scipy import ndimage

    grid = _grid(occupancy)
    resolution = grid.shape[0]
    elevation, azimuth = np.radians(view)
    toward = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    right = np.cross(-toward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, -toward)
    s = np.linspace(-FRAME, FRAME, size)
    reach = np.sqrt(3.0)  # the cube's half diagonal: rays span all of it in depth
    depth = np.linspace(reach, -reach, int(np.ceil(resolution * reach)) + 1)  # near to far
    u, v, w = np.meshgrid(s, s[::-1], depth, indexing="ij")  # picture column, row (top = up), depth
    world = u[..., None] * right + v[..., None] * up + w[..., None] * toward
    index = ((world + 1.0) * resolution / 2.0 - 0.5).reshape(-1, 3).T  # voxel index coordinates
    inside = ndimage.map_coordinates(grid, index, order=1, cval=0.0).reshape(u.shape) >= 0.5
    hit = inside.any(-1)
    first = inside.argmax(-1)
    smooth = ndimage.gaussian_filter(grid, 1.0)
    cols, rows = np.nonzero(hit)
    at = index.reshape(3, *u.shape)[:, cols, rows, first[cols, rows]]
    gradient = np.stack([ndimage.map_coordinates(g, at, order=1) for g in np.gradient(smooth)], -1)
    normal = -gradient / np.maximum(np.linalg.norm(gradient, axis=-1, keepdims=True), 1e-8)
    light = np.asarray(LIGHT) / np.linalg.norm(LIGHT)
    shade = 0.35 + 0.65 * np.clip(normal @ light, 0.0, 1.0)  # ambient plus diffuse
    picture = np.ones((size, size, 3), np.float32)
    picture[rows, cols] = (shade[:, None] * COLOR).astype(np.float32)
    return picture


def save_voxel_grid(occupancies, path: str | Path, title: str = "", names: Sequence[str] | None = None,
                    columns: int = 8, size: int = 128) -> None:
    """A picture of several grids ((N, R, R, R) or a list of (R, R, R)), `columns` per row, each rendered by
    `render_voxels` and captioned with its name when `names` is given (nfields.viz.save_grid)."""
    from ..viz import save_grid

    grids = list(occupancies)
    if not grids:
        raise NfieldsError("give at least one voxel grid to draw.")
    if columns <= 0:
        raise NfieldsError(f"columns must be positive, not {columns}.")
    pictures = [render_voxels(g, size) for g in grids]
    rows = [pictures[i:i + columns] for i in range(0, len(pictures), columns)]
    captions = None
    if names is not None:
        shown = [str(n) for n in names]
        captions = [shown[i:i + columns] for i in range(0, len(shown), columns)]
    save_grid(rows, [""] * len(rows), path, title, captions)
