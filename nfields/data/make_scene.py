"""Multi-view scenes in the NeRF-synthetic layout, rendered offline from a mesh.

The renderer is mitsuba 3 (variant `scalar_rgb`): a pure pip wheel (no system GL, no PyOpenGL pin)
and a physically based path tracer that runs as installed on CPU; pyrender would need Debian
libosmesa6 and PyOpenGL==3.1.7. mitsuba is imported inside the functions that render, so the package
imports without it.

What a scene folder holds (the layout of Mildenhall et al.'s Blender scenes, which loaders expect):
`transforms_{train,val,test}.json` and `{train,val,test}/r_<i>.png` (RGBA 8-bit, alpha = coverage,
straight (not premultiplied) colour: composite on white). Each JSON has `camera_angle_x`, `frames`
(`file_path` without extension, 4x4 camera-to-world `transform_matrix`) and our extensions `near`,
`far`, `bound`, `source`, `renderer`, and with depth `depth_scale` and a `depth_file_path` per frame.

Conventions:
- World is z-up. Mesh files are usually y-up and are rotated +90 degrees about x, (x, y, z) ->
  (x, -z, y), unless `up="z"`. The mesh is then centred (bounding box) and scaled so its longest side is
  MESH_EXTENT = 2.0, inside the [-BOUND, BOUND]^3 = [-1.5, 1.5]^3 box.
- Cameras follow NeRF/Blender (OpenGL): camera-to-world, the camera looks along its local -z, +y is
  up, +x is right. mitsuba's camera looks along its local +z with +x to the left of the image, so its
  `to_world` is ours times diag(-1, 1, -1, 1). A world point p lands at pixel (col, row) =
  (W/2 + f x/(-z), H/2 - f y/(-z)) for (x, y, z) = world_to_camera(p), f = W/2 / tan(camera_angle_x/2),
  pixel i covering [i, i+1) (`project`; tested against what mitsuba draws).
- Cameras sit at RADIUS = 4 looking at the origin, camera_angle_x = 0.6911 (NeRF-synthetic's). Train
  and val views are uniform on the sphere's area between 5 and 85 degrees of elevation (seeded); test
  views are evenly spaced azimuths at 30 degrees of elevation (NeRF-synthetic's test circle).
- Light: a white constant environment (radiance 0.5, hidden from the camera so the background is
  transparent) plus a white directional light from above (irradiance 0.7), both fixed in the world;
  a two-sided diffuse BSDF. Colours come from the file (texture via UVs, material Kd, vertex or face
  colours), from the URDF of pybullet's objects, else light grey 0.7; they are sRGB values, converted
  to linear reflectance. Path tracing with max_depth 3 (direct light and one bounce), box pixel filter.
- Depth (optional): distance along the camera axis, averaged over the rays that hit inside a pixel,
  stored in a 16-bit gray PNG as round(depth / DEPTH_SCALE); 0 = background.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import NfieldsError
from ..io import refuse_replacing_cwd
from .cameras import CAMERA_ANGLE_X, focal_length, orbit_poses, random_poses

NEAR, FAR, BOUND = 2.0, 6.0, 1.5
MESH_EXTENT = 2.0
DEPTH_SCALE = 1e-4  # scene units per depth-PNG unit: 16 bits reach 6.55 > FAR
#: Samples per pixel. mitsuba 3.9 scalar_rgb, 112 views (100 + 4 + 8) at 200^2 of the 75k-triangle bunny at
#: 64 spp: 81 CPU seconds, 65 s wall on a shared 2-core machine, ~40 s with both cores free (it scales
#: with cores). Monte Carlo noise stays visible as a slight grain; raise it for cleaner targets.
DEFAULT_SAMPLES = 64
MAX_DEPTH = 3  # path length: direct light plus one bounce between surfaces
ENVIRONMENT, SUN = 0.5, 0.7  # radiance of the sky, irradiance of the directional light
SUN_DIRECTION = (0.35, 0.45, -1.0)  # where the light travels: from above, front-left
GREY = (0.7, 0.7, 0.7)  # sRGB colour of meshes that bring none
SCENE_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
#: Rotates a y-up mesh to z-up (+90 degrees about x): file (x, y, z) -> world (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


# -- the mesh ----------------------------------------------------------------------------------------

@dataclass
class MeshPart:
    """One material's triangles, in world units (normalised, z-up). Colours are sRGB in [0, 1]."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) uint32
    color: tuple[float, float, float] = GREY  # used when none of the below is given
    uv: np.ndarray | None = None  # (V, 2) with `texture`: OBJ/OpenGL convention, v = 0 at the image's bottom
    texture: np.ndarray | None = None  # (H, W, 3) uint8
    vertex_colors: np.ndarray | None = None  # (V, 3)
    face_colors: np.ndarray | None = None  # (F, 3)
    smooth: bool = True  # interpolate vertex normals (consistently wound meshes); else flat faces


@dataclass
class SceneMesh:
    name: str
    parts: list[MeshPart]

    def describe(self) -> str:
        faces = sum(len(p.faces) for p in self.parts)
        textured = any(p.texture is not None for p in self.parts)
        return f"{faces} triangles in {len(self.parts)} part(s)" + (", textured" if textured else "")


def load_scene_mesh(source: str | Path, up: str = "y", color: Sequence[float] | None = None) -> SceneMesh:
    """A mesh file (OBJ with its .mtl and textures, PLY, OFF, STL, GLB/GLTF) or a built-in mesh name,
    with its colours, rotated to z-up (`up="y"`: the file is y-up) and normalised (see the module).
    `color` (sRGB) replaces every colour the file brings."""
    from .shape import read_mesh

    if up not in ("y", "z"):
        raise NfieldsError(f"--up must be y or z, not '{up}'.")
    loaded, name, shown = read_mesh(source, SCENE_SUFFIXES)
    meshes = _triangle_meshes(loaded)
    if not meshes:
        raise NfieldsError(f"'{shown}' holds no triangles; give a mesh with faces.")
    parts = [_part(mesh, color) for mesh in meshes]
    rotation = Y_UP_TO_Z_UP if up == "y" else np.eye(3)
    points = np.concatenate([p.vertices for p in parts]).astype(np.float64) @ rotation.T
    if not np.isfinite(points).all():
        raise NfieldsError(f"'{shown}' has vertices that are not finite numbers; fix the file.")
    low, high = points.min(0), points.max(0)
    extent = float((high - low).max())
    if not extent > 0:
        raise NfieldsError(f"'{shown}' has no extent (all vertices coincide); give a real mesh.")
    centre, scale = (low + high) / 2, MESH_EXTENT / extent
    for part in parts:
        part.vertices = ((part.vertices.astype(np.float64) @ rotation.T - centre) * scale).astype(np.float32)
    return SceneMesh(name, parts)


def _triangle_meshes(loaded) -> list:
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.dump() if loaded.geometry else []  # every instance, its transform applied
    meshes = loaded if isinstance(loaded, list) else [loaded]
    return [m for m in meshes if isinstance(m, trimesh.Trimesh) and len(m.faces) > 0]


def _part(mesh, color: Sequence[float] | None) -> MeshPart:
    part = MeshPart(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32),
                    smooth=bool(mesh.is_winding_consistent))
    if color is not None:
        part.color = _rgb(color)
        return part
    visual = mesh.visual
    if visual.kind == "texture":
        material = visual.material
        if hasattr(material, "to_simple"):  # glTF's PBR material: base colour texture and factor
            material = material.to_simple()
        image = getattr(material, "image", None)
        uv = getattr(visual, "uv", None)
        if image is not None and uv is not None and len(uv) == len(part.vertices):
            part.texture = np.array(image.convert("RGB"), np.uint8)  # writeable: mitsuba refuses read-only arrays
            part.uv = np.asarray(uv, np.float32)
        elif getattr(material, "diffuse", None) is not None:
            part.color = _rgb(np.asarray(material.diffuse[:3]) / 255)
    elif visual.kind == "vertex":
        part.vertex_colors = np.asarray(visual.vertex_colors[:, :3], np.float32) / 255
    elif visual.kind == "face":
        part.face_colors = np.asarray(visual.face_colors[:, :3], np.float32) / 255
    return part


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    r, g, b = (float(np.clip(v, 0, 1)) for v in values)
    return r, g, b


# -- mitsuba ------------------------------------------------------------------------------------------

def mitsuba():
    """The mitsuba module with the scalar_rgb variant set, or NfieldsError saying how to install it."""
    try:
        import mitsuba as mi
    except ImportError:
        raise NfieldsError("rendering scenes needs mitsuba 3, which is not installed; pip install mitsuba.") from None
    try:
        mi.set_variant("scalar_rgb")
    except (AttributeError, ImportError, ValueError) as error:
        raise NfieldsError(f"mitsuba's scalar_rgb variant is not available ({error}); "
                           f"pip install --upgrade mitsuba.") from None
    return mi


def renderer_name(samples: int) -> str:
    return f"mitsuba {mitsuba().__version__} scalar_rgb, path tracer, {samples} spp"


def _linear(srgb: np.ndarray) -> np.ndarray:
    srgb = np.asarray(srgb, np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


class Renderer:
    """One mesh in mitsuba's scene (mesh, lights, integrator), rendered from any camera."""

    def __init__(self, mesh: SceneMesh, size: int, samples: int = DEFAULT_SAMPLES, depth: bool = False):
        self.mi = mi = mitsuba()
        self.size, self.samples, self.depth = size, samples, depth
        scene = {"type": "scene", "integrator": {"type": "path", "max_depth": MAX_DEPTH, "hide_emitters": True},
                 "sky": {"type": "constant", "radiance": {"type": "rgb", "value": ENVIRONMENT}},
                 "sun": {"type": "directional", "direction": list(SUN_DIRECTION),
                         "irradiance": {"type": "rgb", "value": SUN}}}
        for index, part in enumerate(mesh.parts):
            scene[f"part{index}"] = self._mesh(f"part{index}", part)
        try:
            self.scene = mi.load_dict(scene)
        except RuntimeError as error:
            raise NfieldsError(f"mitsuba cannot build a scene from '{mesh.name}' ({_first_line(error)}).") from None
        # Depth is a second, cheap render of the primary hits' distances (mitsuba's `depth` integrator; its
        # `aov` integrator gives the same in one pass but ran single-threaded and 3x slower in 3.9).
        self.depth_integrator = mi.load_dict({"type": "depth"}) if depth else None
        # Each pixel's ray direction against the optical axis, at pixel centres: depth = distance * cosine.
        offsets = (np.arange(size) + 0.5 - size / 2) / focal_length(size)
        self.cosine = 1 / np.sqrt(1 + offsets[None, :] ** 2 + offsets[:, None] ** 2)

    def _mesh(self, name: str, part: MeshPart):
        mi = self.mi
        if part.texture is not None:
            reflectance = {"type": "bitmap", "bitmap": mi.Bitmap(np.array(part.texture, np.uint8, order="C")), "wrap_mode": "repeat"}
        elif part.vertex_colors is not None:
            reflectance = {"type": "mesh_attribute", "name": "vertex_color"}
        elif part.face_colors is not None:
            reflectance = {"type": "mesh_attribute", "name": "face_color"}
        else:
            reflectance = {"type": "rgb", "value": _linear(part.color).tolist()}
        props = mi.Properties()
        props["bsdf"] = mi.load_dict({"type": "twosided", "bsdf": {"type": "diffuse", "reflectance": reflectance}})
        shape = mi.Mesh(name, vertex_count=len(part.vertices), face_count=len(part.faces), props=props,
                        has_vertex_normals=part.smooth, has_vertex_texcoords=part.texture is not None)
        params = mi.traverse(shape)
        params["vertex_positions"] = np.ascontiguousarray(part.vertices, np.float32).ravel()
        params["faces"] = np.ascontiguousarray(part.faces, np.uint32).ravel()
        if part.texture is not None:  # mitsuba's v runs down the image, OBJ's up
            uv = np.stack([part.uv[:, 0], 1 - part.uv[:, 1]], 1)
            params["vertex_texcoords"] = np.ascontiguousarray(uv, np.float32).ravel()
        params.update()
        if part.vertex_colors is not None:
            shape.add_attribute("vertex_color", 3, _linear(part.vertex_colors).astype(np.float32).ravel())
        if part.face_colors is not None:
            shape.add_attribute("face_color", 3, _linear(part.face_colors).astype(np.float32).ravel())
        if part.smooth:
            shape.recompute_vertex_normals()
        return shape

    def render(self, pose: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """From NeRF camera-to-world `pose`: (RGBA uint8 (S, S, 4) with straight alpha, depth along the camera
        axis float32 (S, S) with 0 for background, or None)."""
        mi = self.mi
        to_world = np.asarray(pose, np.float64) @ np.diag([-1.0, 1.0, -1.0, 1.0])  # ours -> mitsuba's frame
        sensor = mi.load_dict({
            "type": "perspective", "fov": math.degrees(CAMERA_ANGLE_X), "fov_axis": "x",
            "near_clip": 0.01, "far_clip": 100.0, "to_world": mi.ScalarTransform4f(to_world.tolist()),
            "sampler": {"type": "independent", "sample_count": self.samples},
            "film": {"type": "hdrfilm", "width": self.size, "height": self.size, "pixel_format": "rgba",
                     "rfilter": {"type": "box"}}})
        image = np.array(mi.render(self.scene, sensor=sensor, seed=seed % 2 ** 32), np.float64)
        rgb, alpha = _unpremultiply(image)
        rgba = np.round(np.concatenate([_srgb(rgb), alpha[..., None]], -1) * 255).astype(np.uint8)
        if self.depth_integrator is None:
            return rgba, None
        image = np.array(mi.render(self.scene, sensor=sensor, integrator=self.depth_integrator,
                                   seed=seed % 2 ** 32), np.float64)
        distance, _ = _unpremultiply(image)
        return rgba, (distance[..., 0] * self.cosine).astype(np.float32)


def _unpremultiply(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mitsuba's RGBA film holds colour premultiplied by coverage (rays that miss add zero): -> (the mean
    colour of the rays that hit, 0 where none did; the coverage)."""
    alpha = np.clip(image[..., 3], 0, 1)
    rgb = np.where(alpha[..., None] > 0, image[..., :3] / np.maximum(alpha, 1e-8)[..., None], 0)
    return rgb, alpha


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


# -- writing scenes ------------------------------------------------------------------------------------

def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        minimum = 1 if name in ("views", "size", "samples", "objects") else 0
        if not isinstance(value, (int, np.integer)) or value < minimum:
            flag = "--" + name.replace("_", "-")
            raise NfieldsError(f"{flag} must be {'positive' if minimum else 'zero or more'}, not {value}.")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is rendered, an --out that cannot be used as asked."""
    if out.exists() and not out.is_dir():
        raise NfieldsError(f"--out '{out}' is a file; give a folder for the scene.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise NfieldsError(f"'{out}' already exists and is not empty; pass --overwrite to replace it, or "
                               f"choose another --out.")
        if not any((out / name).is_file() for name in ("transforms_train.json", "objects.json")):
            raise NfieldsError(f"'{out}' is not empty and holds no scene made by 'nfields make-scene', so it is left "
                               f"alone (--overwrite replaces only a scene folder); choose another --out.")
        refuse_replacing_cwd(out)


@contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh temporary sibling of `out` to write into; renamed to `out` (replacing it with `overwrite`)
    when the body succeeds, removed when it fails or is interrupted: `out` never holds half a scene.
    A SIGKILL leaves only a hidden `.NAME.partial-PID-...` sibling, which the next run removes."""
    out = Path(out).absolute()
    check_out(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_partials(out)
        staging = out.parent / f".{out.name}.partial-{os.getpid()}-{time.time_ns()}"
        staging.mkdir()
    except OSError as error:
        raise NfieldsError(f"cannot write to '{out.parent}' ({error.strerror}); choose an --out folder you "
                           f"can write to.") from None
    try:
        yield staging
        old = None
        if out.exists():
            check_out(out, overwrite)  # it may have appeared while we rendered
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            out.rename(old)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_dead_partials(out: Path) -> None:
    """Remove `.NAME.partial-PID-...` siblings left by killed runs (their process is gone)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit(".partial-", 1)[1].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, OSError, OverflowError):
            pass  # not ours, or a process we may not signal: leave it


def _splits(views: int, val_views: int, test_views: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    splits = {"train": random_poses(views, rng), "val": random_poses(val_views, rng),
              "test": orbit_poses(test_views)}
    return {name: poses for name, poses in splits.items() if len(poses)}


def _write_scene(folder: Path, renderer: Renderer, splits: dict[str, np.ndarray], source: str, seed: int,
                 bar=None) -> dict[str, int]:
    """Render every view of every split into `folder` and write the transforms files."""
    from PIL import Image

    header = {"camera_angle_x": CAMERA_ANGLE_X, "near": NEAR, "far": FAR, "bound": BOUND}
    if renderer.depth:
        header["depth_scale"] = DEPTH_SCALE
    header.update(source=source, renderer=renderer_name(renderer.samples))
    counter = 0
    for split, poses in splits.items():
        (folder / split).mkdir()
        frames = []
        for index, pose in enumerate(poses):
            rgba, depth = renderer.render(pose, seed=seed * 1_000_003 + counter)
            counter += 1
            Image.fromarray(rgba, "RGBA").save(folder / split / f"r_{index}.png")
            frame = {"file_path": f"./{split}/r_{index}", "transform_matrix": (np.round(pose, 9) + 0.0).tolist()}
            if depth is not None:
                units = np.where(depth > 0, np.clip(np.round(depth / DEPTH_SCALE), 1, 65535), 0).astype(np.uint16)
                Image.fromarray(units).save(folder / split / f"r_{index}_depth.png")
                frame["depth_file_path"] = f"./{split}/r_{index}_depth.png"
            frames.append(frame)
            if bar is not None:
                bar.update(1)
        (folder / f"transforms_{split}.json").write_text(json.dumps({**header, "frames": frames}, indent=2) + "\n")
    return {split: len(poses) for split, poses in splits.items()}


def _progress(total: int, description: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, disable=not enabled,
                file=sys.stderr, mininterval=0.5)


def make_scene(source: str | Path, out: str | Path, views: int = 100, size: int = 200, test_views: int = 8,
               val_views: int = 4, depth: bool = False, seed: int = 0, samples: int = DEFAULT_SAMPLES,
               progress: bool = True, up: str = "y", overwrite: bool = False) -> dict:
    """Render `source` (a mesh file or a built-in mesh name) into a NeRF-synthetic scene folder `out`:
    `views` training, `val_views` validation and `test_views` test images of `size`^2 pixels (see the
    module for the layout and conventions). Returns a report: the counts per split, seconds and paths."""
    start = time.perf_counter()
    _check_counts(views=views, size=size, test_views=test_views, val_views=val_views, samples=samples)
    out = Path(out)
    check_out(out.absolute(), overwrite)
    mitsuba()
    mesh = load_scene_mesh(source, up)
    renderer = Renderer(mesh, size, samples, depth)
    splits = _splits(views, val_views, test_views, np.random.default_rng(seed))
    with staged_folder(out, overwrite) as staging:
        with _progress(sum(map(len, splits.values())), f"render {mesh.name}", "view", progress) as bar:
            counts = _write_scene(staging, renderer, splits, str(source), seed, bar)
    return {"out": str(out), "source": str(source), "mesh": mesh.describe(), **counts,
            "images": sum(counts.values()), "size": size, "samples": samples, "depth": depth,
            "seconds": time.perf_counter() - start,
            "transforms": [str(out / f"transforms_{split}.json") for split in counts]}


# -- pybullet's object set ------------------------------------------------------------------------------

OBJECTS_ENTRY = "random-urdfs"


def object_files() -> list[Path]:
    """pybullet's random objects, `random_urdfs/NNN/NNN.obj`, in sorted order."""
    from . import catalog

    folder = catalog.ENTRIES[OBJECTS_ENTRY].path()
    if folder is None:
        raise NfieldsError("pybullet's object set (pybullet_data/random_urdfs) is not installed; "
                           "pip install pybullet.")
    return sorted(folder.glob("*/*.obj"))


def urdf_color(obj: Path) -> tuple[float, float, float] | None:
    """The visual colour (`<material><color rgba=...>`) of the URDF beside `obj`, or None."""
    urdf = obj.with_suffix(".urdf")
    try:
        color = ElementTree.parse(urdf).find(".//visual/material/color")
        return _rgb([float(v) for v in color.get("rgba").split()[:3]])
    except (OSError, ElementTree.ParseError, AttributeError, ValueError):
        return None


def make_object_scenes(objects: int | Sequence[str | Path], out: str | Path, views: int = 50, size: int = 64,
                       test_views: int = 8, val_views: int = 0, depth: bool = False, seed: int = 0,
                       samples: int = DEFAULT_SAMPLES, progress: bool = True, up: str = "y",
                       overwrite: bool = False) -> dict:
    """One scene folder per object, `out/000/`, `out/001/`, ... (each as `make_scene` writes it; val only
    when `val_views` > 0), plus `out/objects.json` listing the objects and settings. `objects` is a count
    K (the first K of pybullet's 1,000 random objects in sorted order, 000 to K-1) or a list of OBJ
    files. Each object is coloured from its URDF and has its own cameras (seeded by `seed` and its
    index). Objects that cannot be read are skipped and listed under `skipped`."""
    start = time.perf_counter()
    if isinstance(objects, (int, np.integer)):
        _check_counts(objects=int(objects))
    _check_counts(views=views, size=size, test_views=test_views, val_views=val_views, samples=samples)
    out = Path(out)
    check_out(out.absolute(), overwrite)
    if isinstance(objects, (int, np.integer)):
        files = object_files()
        if objects > len(files):
            raise NfieldsError(f"--objects {objects} is more than the {len(files)} objects in pybullet's set; "
                               f"give --objects {len(files)} or fewer.")
        files = files[:objects]
    else:
        files = [Path(f) for f in objects]
        if not files:
            raise NfieldsError("give at least one object.")
    mitsuba()
    listed, skipped, images = [], [], 0
    with staged_folder(out, overwrite) as staging:
        with _progress(len(files), "objects", "object", progress) as bar:
            for index, file in enumerate(files):
                name = f"{index:03d}"
                color = urdf_color(file)
                try:
                    renderer = Renderer(load_scene_mesh(file, up, color), size, samples, depth)
                except NfieldsError as error:
                    skipped.append({"name": name, "mesh": _shown(file), "reason": str(error)})
                    bar.update(1)
                    continue
                (staging / name).mkdir()
                splits = _splits(views, val_views, test_views, np.random.default_rng([seed, index]))
                counts = _write_scene(staging / name, renderer, splits, _shown(file), seed * 1000 + index)
                images += sum(counts.values())
                listed.append({"name": name, "mesh": _shown(file), "color": color, **counts})
                bar.update(1)
        if not listed:
            raise NfieldsError(f"none of the {len(files)} objects could be rendered ({skipped[0]['reason']}).")
        index_file = {"source": "pybullet_data/random_urdfs" if isinstance(objects, (int, np.integer)) else "files",
                      "selection": f"the first {len(files)} in sorted order" if isinstance(objects, (int, np.integer))
                      else "as given",
                      "views": views, "val_views": val_views, "test_views": test_views, "size": size,
                      "samples": samples, "seed": seed, "depth": depth, "up": up,
                      "camera_angle_x": CAMERA_ANGLE_X, "renderer": renderer_name(samples),
                      "objects": listed, "skipped": skipped}
        (staging / "objects.json").write_text(json.dumps(index_file, indent=2) + "\n")
    return {"out": str(out), "objects": len(listed), "skipped": skipped, "images": images, "size": size,
            "samples": samples, "seconds": time.perf_counter() - start, "index": str(out / "objects.json")}


def _shown(file: Path) -> str:
    parts = file.parts
    return "/".join(parts[-4:]) if "random_urdfs" in parts else str(file)
