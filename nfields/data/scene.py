"""Multi-view scenes in the NeRF-synthetic layout, as they are on disk.

`DIR/transforms_{train,val,test}.json` hold `camera_angle_x` (horizontal field of view, radians)
and `frames`, each with a `file_path` (relative, extension optional) and a camera-to-world
`transform_matrix` in the OpenGL convention. RGBA images are composited on white. Optional keys
of ours: `near`, `far` (ray range) and `bound` (the scene fits in [-bound, bound]^3); without them
NeRF-synthetic's values 2, 6 and 1.5.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import NfieldsError
from ..io import read_json
from ..memory import available_memory, gigabytes
from .cameras import focal_length
from .image import resize

SPLITS = ("train", "val", "test")
DEFAULT_NEAR, DEFAULT_FAR, DEFAULT_BOUND = 2.0, 6.0, 1.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


@dataclass
class SceneViews:
    """The views of one split: images (N, H, W, 3) in [0, 1], camera-to-world poses (N, 4, 4)."""

    images: torch.Tensor
    poses: torch.Tensor
    focal: float  # pixels
    names: list[str]
    depths: torch.Tensor | None = None  # (N, H, W) along the camera axis, 0 = background

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Scene:
    root: Path
    views: dict[str, SceneViews]
    camera_angle_x: float
    near: float = DEFAULT_NEAR
    far: float = DEFAULT_FAR
    bound: float = DEFAULT_BOUND

    def split(self, name: str) -> SceneViews:
        if name not in self.views:
            raise NfieldsError(f"scene '{self.root}' has no '{name}' views (transforms_{name}.json); "
                               f"it has: {', '.join(self.views)}.")
        return self.views[name]


def load_scene(root: str | Path, splits: tuple[str, ...] = SPLITS, size: int | None = None) -> Scene:
    """Read a scene folder. `size`: resize every view to this width (height in proportion), as NeRF's
    half-resolution option does. `train` is required; other splits are read when present."""
    root = Path(root)
    if not root.is_dir():
        raise NfieldsError(f"scene folder '{root}' does not exist; give a folder with transforms_train.json "
                           "(make one with 'nfields make-scene').")
    if not (root / "transforms_train.json").is_file():
        raise NfieldsError(f"'{root}' has no transforms_train.json; a scene folder needs one (the NeRF-synthetic "
                           "layout; 'nfields make-scene' writes it).")
    if size is not None and size <= 0:
        raise NfieldsError(f"--size must be a positive width in pixels, not {size}.")
    views, angles, extras = {}, set(), []
    for split in splits:
        path = root / f"transforms_{split}.json"
        if split != "train" and not path.is_file():
            continue
        meta = _read_transforms(path)
        angles.add(round(meta["camera_angle_x"], 9))
        extras.append(meta)
        views[split] = _read_views(root, path, meta, size)
    if len(angles) > 1:
        raise NfieldsError(f"the transforms files in '{root}' disagree on camera_angle_x; one scene has one camera.")
    first = extras[0]
    near, far, bound = (float(first.get(key, default)) for key, default in
                        (("near", DEFAULT_NEAR), ("far", DEFAULT_FAR), ("bound", DEFAULT_BOUND)))
    if not 0 <= near < far or bound <= 0:
        raise NfieldsError(f"'{root}/transforms_train.json' needs 0 <= near < far and bound > 0 "
                           f"(has near {near}, far {far}, bound {bound}).")
    return Scene(root, views, first["camera_angle_x"], near, far, bound)


def _read_transforms(path: Path) -> dict:
    meta = read_json(path, "transforms file")
    if not isinstance(meta, dict):
        raise NfieldsError(f"'{path}' must hold a JSON object with camera_angle_x and frames.")
    angle = meta.get("camera_angle_x")
    if not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise NfieldsError(f"'{path}' needs camera_angle_x, the horizontal field of view in radians "
                           f"between 0 and pi (has {angle!r}).")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise NfieldsError(f"'{path}' needs a non-empty list 'frames' of {{file_path, transform_matrix}}.")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise NfieldsError(f"frame {index} of '{path}' has no file_path.")
    return meta


def _pose(frame: dict, index: int, path: Path) -> np.ndarray:
    try:
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise NfieldsError(f"frame {index} of '{path}' has no numeric 4x4 transform_matrix.") from None
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise NfieldsError(f"frame {index} of '{path}': transform_matrix must be a finite 4x4 matrix "
                           f"(has shape {pose.shape}).")
    if abs(np.linalg.det(pose[:3, :3])) < 1e-6 or abs(np.linalg.det(pose)) < 1e-6:
        raise NfieldsError(f"frame {index} of '{path}': transform_matrix is not invertible; "
                           "a camera pose needs a rotation and a position.")
    return pose


def _image_file(root: Path, file_path: str, index: int, path: Path) -> Path:
    """The image a frame names, which must lie inside the scene folder (extension optional)."""
    base = (root / file_path).resolve()
    if not base.is_relative_to(root.resolve()):
        raise NfieldsError(f"frame {index} of '{path}' names '{file_path}', which is outside the scene folder "
                           f"'{root}'; a scene's images must be inside its folder.")
    if base.suffix.lower() in IMAGE_SUFFIXES and base.is_file():
        return base
    for suffix in IMAGE_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return base


def _read_views(root: Path, path: Path, meta: dict, size: int | None) -> SceneViews:
    images, poses, names, depths = [], [], [], []
    shape = None
    for index, frame in enumerate(meta["frames"]):
        poses.append(_pose(frame, index, path))
        file = _image_file(root, frame["file_path"], index, path)
        if not file.is_file():
            raise NfieldsError(f"frame {index} of '{path}' names '{frame['file_path']}', but no such image "
                               f"exists; the frames and the images must agree.")
        image = _read_rgb(file, size)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise NfieldsError(f"image '{file}' is {image.shape[1]}x{image.shape[0]} but the others in "
                               f"'{path.name}' are {shape[1]}x{shape[0]}; all views of a split must share one size.")
        images.append(image)
        names.append(frame["file_path"])
        if "depth_file_path" in frame and "depth_scale" in meta:
            if not isinstance(frame["depth_file_path"], str):
                raise NfieldsError(f"frame {index} of '{path}' has a depth_file_path that is not a file name.")
            try:
                scale = float(meta["depth_scale"])
            except (TypeError, ValueError):
                raise NfieldsError(f"'{path}' has a depth_scale that is not a number.") from None
            depths.append(_read_depth(_image_file(root, frame["depth_file_path"], index, path), scale, shape[:2]))
    height, width = shape[:2]
    focal = focal_length(width, meta["camera_angle_x"])
    return SceneViews(torch.from_numpy(np.stack(images)), torch.tensor(np.stack(poses), dtype=torch.float32),
                      focal, names, torch.from_numpy(np.stack(depths)) if len(depths) == len(images) else None)


#: Peak bytes per pixel of reading one view as float32 RGBA and compositing it (Pillow's RGBA, its float copy,
#: the composite), rounded up.
VIEW_BYTES_PER_PIXEL = 48


def _open_view(file: Path):
    """Pillow's image of a view, refused before it is decoded if it is a decompression bomb (more pixels
    than Pillow allows) or would not fit in memory."""
    try:
        img = Image.open(file)
    except Image.DecompressionBombError:
        raise NfieldsError(f"image '{file}' has more pixels than an image may ({Image.MAX_IMAGE_PIXELS or 0:,} pixels): it "
                           f"looks like a decompression bomb; give views of a sensible size.") from None
    need = img.width * img.height * VIEW_BYTES_PER_PIXEL
    if need > available_memory():
        img.close()
        raise NfieldsError(f"image '{file}' is {img.width}x{img.height} pixels, which takes {gigabytes(need)} to "
                           f"read, more than the {gigabytes(available_memory())} available; downscale the views.")
    return img


def _read_rgb(file: Path, size: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_view(file) as img:
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except Image.DecompressionBombWarning:
        raise NfieldsError(f"image '{file}' has more pixels than an image should ({Image.MAX_IMAGE_PIXELS or 0:,} pixels): it "
                           f"looks like a decompression bomb; give views of a sensible size.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise NfieldsError(f"cannot read image '{file}' ({error}).") from None
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # composite on white, then resize
    if size is not None and size != rgb.shape[1]:
        rgb = resize(rgb, max(1, round(rgb.shape[0] * size / rgb.shape[1])), size)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _read_depth(file: Path, scale: float, shape: tuple[int, int]) -> np.ndarray:
    try:
        with _open_view(file) as img:
            depth = np.asarray(img, dtype=np.float32) * scale
    except (OSError, SyntaxError, ValueError) as error:
        raise NfieldsError(f"cannot read depth image '{file}' ({error}).") from None
    if depth.shape != shape:  # resized scenes: nearest, so the background stays 0
        depth = np.asarray(Image.fromarray(depth).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return depth


def read_poses(path: str | Path) -> torch.Tensor:
    """Camera-to-world poses from a JSON file: one 4x4 matrix, {"transform_matrix": ...}, or a
    transforms file's {"frames": [{"transform_matrix": ...}, ...]} -> (N, 4, 4)."""
    path = Path(path)
    data = read_json(path, "pose file")
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        frames = data["frames"]
    elif isinstance(data, dict):
        frames = [data]
    else:
        frames = [{"transform_matrix": data}]
    if not frames:
        raise NfieldsError(f"pose file '{path}' has no frames.")
    return torch.tensor(np.stack([_pose(f if isinstance(f, dict) else {}, i, path) for i, f in enumerate(frames)]),
                        dtype=torch.float32)
