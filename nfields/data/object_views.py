"""Many objects, many posed views each: data for few-shot novel view synthesis with light fields.

A set is the folder that `nfields make-scene --objects K --out DIR` writes: `DIR/objects.json` lists
the object folders, each a scene in the NeRF-synthetic layout (see `nfields.data.scene`). All views
of an object (its train, val and test views, in that order) are pooled: any of them can be a
support view (given to the encoder) or a query view (to predict).

Conventions:
- object-level split (our choice): the objects at positions 0, 10, 20, ... of objects.json's list are
  "test", the others "train"; "all" is every object;
- images are RGBA composited on a white background and stored as uint8 (O, V, H, W, 3); they are
  handed out as float RGB in [0, 1];
- poses are camera-to-world (O, V, 4, 4), OpenGL convention; rays go through pixel centres, as
  `nfields.render.rays.camera_rays` makes them;
- a ray is given by its Plücker coordinates (d, o x d), d a unit direction and o any point on the
  ray (`nfields.render.rays.plucker`): 6 numbers, the same for every origin along the ray;
- an encoder input is (B, S, H, W, 9): per support view and pixel, RGB then the 6 ray coordinates.

Rays are computed when asked, on the tensors' device (`to(device)` moves the whole set, e.g. to a
GPU where it stays resident); batches are drawn with torch ops only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import NfieldsError
from ..io import read_json
from ..render.rays import camera_directions, camera_rays, plucker
from .scene import load_scene

SPLITS = ("train", "test", "all")
TEST_EVERY = 10  # objects 0, 10, 20, ... of objects.json are the test split
HOW_TO_MAKE = "make one with `nfields make-scene --objects K --out DIR`"


@dataclass
class ObjectViews:
    """O objects with V posed views each: `images` uint8 (O, V, H, W, 3) on white, `poses` float32
    camera-to-world (O, V, 4, 4), `focal` in pixels at the loaded size, `names` the O object names."""

    images: torch.Tensor
    poses: torch.Tensor
    focal: float
    names: list[str]
    name: str = ""
    split: str = "all"

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def views(self) -> int:
        return self.images.shape[1]

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> ObjectViews:
        """A copy with images and poses on `device`."""
        return replace(self, images=self.images.to(device), poses=self.poses.to(device), names=list(self.names))

    def _index(self, index) -> torch.Tensor:
        return torch.as_tensor(index, dtype=torch.long, device=self.device)

    def rays(self, objects, views) -> torch.Tensor:
        """Plücker coordinates of every pixel of views `views` of objects `objects` (index tensors that
        broadcast to a shape (...)): (..., H, W, 6)."""
        poses = self.poses[self._index(objects), self._index(views)]
        return plucker(*camera_rays(poses, self.height, self.width, self.focal))

    def rgb(self, objects, views) -> torch.Tensor:
        """Float RGB in [0, 1] of the chosen views: (..., H, W, 3)."""
        return self.images[self._index(objects), self._index(views)].float() / 255.0

    def support_inputs(self, objects, views) -> torch.Tensor:
        """Encoder inputs: objects (B,), views (B, S) -> (B, S, H, W, 9), RGB then the 6 ray coordinates."""
        objects, views = self._index(objects), self._index(views)
        if objects.dim() != 1 or views.dim() != 2 or views.shape[0] != objects.shape[0]:
            raise NfieldsError(f"support views must be (B, S) for objects (B,); got {tuple(views.shape)} "
                               f"for {tuple(objects.shape)}.")
        return torch.cat([self.rgb(objects[:, None], views), self.rays(objects[:, None], views)], -1)

    def pixel_rays(self, objects, views, pixels) -> torch.Tensor:
        """Plücker coordinates of single pixels: objects, views and flat pixel indices (row * W + column)
        that broadcast to (...) -> (..., 6); equal to `rays(...)` at those pixels."""
        objects, views, pixels = self._index(objects), self._index(views), self._index(pixels)
        local = camera_directions(self.height, self.width, self.focal, self.device, self.poses.dtype)
        local = local.reshape(-1, 3)[pixels]
        poses = self.poses[objects, views]
        directions = (poses[..., :3, :3] @ local[..., None]).squeeze(-1)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        origins = poses[..., :3, 3].expand(directions.shape)
        return plucker(origins, directions)

    def pixel_rgb(self, objects, views, pixels) -> torch.Tensor:
        """Float RGB in [0, 1] of single pixels (flat indices): (...) -> (..., 3)."""
        objects, views, pixels = self._index(objects), self._index(views), self._index(pixels)
        flat = self.images.reshape(len(self), self.views, -1, 3)
        return flat[objects, views, pixels].float() / 255.0

    def sample_indices(self, objects, support: int, rays_per_object: int,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random choices of `sample_batch`: per object `support` distinct support views (B, S), and
        N query rays as view indices (B, N) among its other views and flat pixel indices (B, N), drawn
        uniformly. Drawn on the generator's device (the data's when None), returned on the data's."""
        objects = self._index(objects)
        if objects.dim() != 1:
            raise NfieldsError(f"objects must be a 1-D index tensor, not of shape {tuple(objects.shape)}.")
        if not 1 <= support < self.views:
            raise NfieldsError(f"support must be 1 to {self.views - 1} views (the objects have {self.views} "
                               f"views and queries need at least one other), not {support}.")
        if rays_per_object < 1:
            raise NfieldsError(f"rays_per_object must be at least 1, not {rays_per_object}.")
        batch = objects.shape[0]
        device = generator.device if generator is not None else self.device
        order = torch.rand(batch, self.views, generator=generator, device=device).argsort(-1)  # a random permutation
        slot = torch.randint(0, self.views - support, (batch, rays_per_object), generator=generator, device=device)
        pixels = torch.randint(0, self.height * self.width, (batch, rays_per_object), generator=generator,
                               device=device)
        support_views = order[:, :support]
        query_views = order[:, support:].gather(1, slot)
        return support_views.to(self.device), query_views.to(self.device), pixels.to(self.device)

    def sample_batch(self, objects, support: int, rays_per_object: int, generator: torch.Generator | None = None,
                     return_indices: bool = False):
        """A training batch: for each of the B `objects`, `support` distinct random views as encoder inputs
        (B, S, H, W, 9), and N = `rays_per_object` query rays (B, N, 6) with their colours (B, N, 3),
        drawn uniformly from the pixels of the object's other views. With `return_indices`, also the
        choices (support views, query views, query pixels) of `sample_indices`."""
        objects = self._index(objects)
        support_views, query_views, pixels = self.sample_indices(objects, support, rays_per_object, generator)
        inputs = self.support_inputs(objects, support_views)
        query_rays = self.pixel_rays(objects[:, None], query_views, pixels)
        query_rgb = self.pixel_rgb(objects[:, None], query_views, pixels)
        if return_indices:
            return inputs, query_rays, query_rgb, (support_views, query_views, pixels)
        return inputs, query_rays, query_rgb

    def target_view(self, objects, support_views, target_views) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Evaluation on whole views: objects (B,), support_views (B, S), target_views (B,) -> encoder
        inputs (B, S, H, W, 9), the target views' rays (B, H*W, 6) and colours (B, H*W, 3)."""
        objects, target_views = self._index(objects), self._index(target_views)
        inputs = self.support_inputs(objects, support_views)
        batch = objects.shape[0]
        rays = self.rays(objects, target_views).reshape(batch, -1, 6)
        rgb = self.rgb(objects, target_views).reshape(batch, -1, 3)
        return inputs, rays, rgb


def split_objects(names: list[str], split: str) -> list[str]:
    """The object names of `split` ('train', 'test' or 'all'): every TEST_EVERY-th object, from the
    first, is a test object."""
    if split not in SPLITS:
        raise NfieldsError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    if split == "all":
        return list(names)
    return [name for position, name in enumerate(names) if (position % TEST_EVERY == 0) == (split == "test")]


def load_object_views(folder: str | Path, split: str = "train", size: int | None = None,
                      limit: int | None = None) -> ObjectViews:
    """Read the objects of `split` from a `make-scene --objects` folder, each object's views pooled.
    `size` resizes every view to this width; `limit` keeps the first N objects of the split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NfieldsError(f"objects folder '{folder}' does not exist; {HOW_TO_MAKE}.")
    index_file = folder / "objects.json"
    if not index_file.is_file():
        if (folder / "transforms_train.json").is_file():
            raise NfieldsError(f"'{folder}' is a single scene, not a set of objects (it has no objects.json); "
                               f"{HOW_TO_MAKE}.")
        raise NfieldsError(f"'{folder}' has no objects.json, so it is not a set of objects; {HOW_TO_MAKE}.")
    if limit is not None and limit < 1:
        raise NfieldsError(f"limit must be at least 1 object, not {limit}.")
    index = read_json(index_file, "objects index")
    entries = index.get("objects") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise NfieldsError(f"'{index_file}' has no list of objects with names; {HOW_TO_MAKE}.")
    names = split_objects([str(e["name"]) for e in entries], split)
    if not names:
        raise NfieldsError(f"'{folder}' has no '{split}' objects (of {len(entries)}, every {TEST_EVERY}th from the "
                           "first is a test object); use split 'all' or make more objects.")
    names = names[:limit]
    images, poses, focal, shape = [], [], None, None
    for name in names:
        scene = load_scene(folder / name, size=size)
        parts = list(scene.views.values())
        rgb = torch.cat([part.images for part in parts])
        if shape is None:
            shape, focal = tuple(rgb.shape), parts[0].focal
        elif tuple(rgb.shape) != shape or not math.isclose(parts[0].focal, focal, rel_tol=1e-6):
            raise NfieldsError(f"object '{name}' in '{folder}' has {rgb.shape[0]} views of {rgb.shape[2]}x"
                               f"{rgb.shape[1]} pixels but '{names[0]}' has {shape[0]} of {shape[2]}x{shape[1]} "
                               "(or their cameras differ); all objects need the same views and size, so remake "
                               "the set with one `nfields make-scene --objects` call.")
        images.append((rgb * 255.0).round().clamp(0, 255).to(torch.uint8))
        poses.append(torch.cat([part.poses for part in parts]).float())
    return ObjectViews(torch.stack(images), torch.stack(poses), float(focal), names, folder.name, split)
