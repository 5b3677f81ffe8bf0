"""Image datasets (many instances of one kind) for generalizable fields: Fashion-MNIST, the Noto colour
emoji and any folder of images. Images are stored as uint8 (N, H, W, C), C = 1 (gray) or 3 (RGB), and
handed out as float32 in [0, 1]. Nothing here ever downloads: the built-ins come from Debian packages.

    data = load_dataset("fashion-mnist", split="train", size=32)
    data = load_dataset("emoji", split="test")          # 64x64 RGB on white
    data = load_dataset("photos/", split="all", size=64)
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import NfieldsError
from ..io import atomic_path
from ..registry import did_you_mean
from . import catalog
from .image import SUFFIXES, _decode

SPLITS = ("train", "test", "all")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
BUILT_IN = {"fashion-mnist": "dataset-fashion-mnist", "emoji": "fonts-noto-color-emoji"}  # name -> Debian package
EMOJI_SIZE = 64  # DESIGN: emoji at 64x64
CACHE_VERSION = 1  # bump when the emoji decoding changes, so old caches are not read


@dataclass
class ImageDataset:
    """N images of one size: `images` uint8 (N, H, W, C), C = 1 (gray) or 3 (RGB); `labels` int64 (N,) or None;
    `names` one per image; `classes` the label names (Fashion-MNIST) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str]
    name: str
    split: str
    classes: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def float_images(self) -> torch.Tensor:
        """All images as float32 (N, H, W, C) in [0, 1] (a copy; storage stays uint8)."""
        return self.images.float().div_(255)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The selected images as float32 (B, H, W, C) in [0, 1]; converts only those."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index].float().div_(255)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, split={self.split!r}, {len(self)} images "
                f"{self.height}x{self.width}x{self.channels})")


def load_dataset(source: str | os.PathLike, split: str = "train", size: int | tuple[int, int] | None = None,
                 limit: int | None = None) -> ImageDataset:
    """A built-in dataset ('fashion-mnist', 'emoji') or a folder of images -> ImageDataset.

    - `fashion-mnist`: the official split, 60,000 train / 10,000 test, 28x28 gray, labels 0..9.
    - `emoji`: every colour bitmap of Noto Color Emoji (the largest strike, 136x128 RGBA), composited on white,
      padded with white to a square and resized with LANCZOS to `size` (default 64). Split by sorted glyph
      name: test = every 10th glyph (index % 10 == 0), train = the rest. The decoded arrays are cached in
      $XDG_CACHE_HOME/nfields (default ~/.cache/nfields), keyed by the font's size and mtime and by `size`.
    - a folder: its image files (PNG, JPEG, ...) in sorted name order; gray if every file is gray, else RGB
      (transparency composited on white); test = every 10th file in sorted order (index % 10 == 0), train =
      the rest, unless the folder has `train/` and `test/` subfolders: then those are the split; no labels.
      Files of different sizes need `size`.

    `split` is 'train', 'test' or 'all'; `size` S resizes to S x S (or (H, W) exactly); `limit` keeps the
    first N images of the split.
    """
    if split not in SPLITS:
        raise NfieldsError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; use one of: {', '.join(SPLITS)}.")
    shape = _check_size(size)
    if limit is not None and limit <= 0:
        raise NfieldsError(f"limit must be a positive number of images, not {limit}.")
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, split, shape, limit)
    text = str(source)
    if text == "fashion-mnist":
        return _load_fashion_mnist(split, shape, limit)
    if text == "emoji":
        return _load_emoji(split, shape or (EMOJI_SIZE, EMOJI_SIZE), limit)
    if text == "voxels":  # listed by 'nfields datasets' too, but shapes: nfields.data.voxels.load_voxels
        raise NfieldsError("'voxels' holds 3D shapes, not images; use it where shapes are taken, e.g. "
                           "'nfields train mnif --dataset voxels'.")
    if path.exists():
        raise NfieldsError(f"'{source}' is a file; give a folder of images or a built-in dataset "
                           f"({', '.join(BUILT_IN)}).")
    if os.sep in text or path.suffix:
        raise NfieldsError(f"folder '{source}' does not exist; check the path.")
    raise NfieldsError(f"unknown dataset '{source}'{did_you_mean(text, BUILT_IN)}; give a folder of images or "
                       f"one of: {', '.join(BUILT_IN)} (run 'nfields datasets').")


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(int(s) <= 0 for s in pair):
        raise NfieldsError(f"size must be one positive number (square) or a positive height and width, not {size}.")
    return int(pair[0]), int(pair[1])


def _split_indices(count: int, split: str) -> np.ndarray:
    """Every 10th item in sorted order (index % 10 == 0) is test, the rest train."""
    index = np.arange(count)
    if split == "test":
        return index[index % 10 == 0]
    if split == "train":
        return index[index % 10 != 0]
    return index


def _installed(name: str) -> Path:
    path = catalog.ENTRIES[name].path()
    if path is None:
        raise NfieldsError(f"built-in dataset '{name}' is not installed; run "
                           f"'apt-get install {BUILT_IN[name]}' first.")
    return path


def _resize_all(images: np.ndarray, shape: tuple[int, int] | None, resample=Image.BILINEAR) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, h, w, C), each image resized by PIL as 8-bit (antialiased)."""
    if shape is None or images.shape[1:3] == shape:
        return images
    height, width = shape
    out = np.empty((images.shape[0], height, width, images.shape[3]), np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if images.shape[3] == 1 else image)
        resized = np.asarray(pil.resize((width, height), resample))
        out[i] = resized.reshape(height, width, images.shape[3])
    return out


def _dataset(images: np.ndarray, labels: np.ndarray | None, names: list[str], name: str, split: str,
             classes: list[str] | None = None) -> ImageDataset:
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        None if labels is None else torch.from_numpy(labels.astype(np.int64)),
                        names, name, split, classes)


# -- Fashion-MNIST -----------------------------------------------------------------------------------

IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers: 0x0000 0803 (uint8, 3 dims), 0x0000 0801 (uint8, 1 dim)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzip'ed): big-endian magic, dims, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise NfieldsError(f"'{path}' could not be read ({error}); reinstall dataset-fashion-mnist.") from None
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise NfieldsError(f"'{path}' is not an IDX file of the expected kind (bad magic number); "
                           f"reinstall dataset-fashion-mnist.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(data) - header != int(np.prod(shape)):
        raise NfieldsError(f"'{path}' holds {len(data) - header} bytes of data, not the {int(np.prod(shape))} its "
                           f"header promises; reinstall dataset-fashion-mnist.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _load_fashion_mnist(split: str, shape, limit) -> ImageDataset:
    folder = _installed("fashion-mnist")
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels, names = [], [], []
    for part in parts:
        x = _read_idx(folder / f"{part}-images-idx3-ubyte.gz", IDX_IMAGES)
        y = _read_idx(folder / f"{part}-labels-idx1-ubyte.gz", IDX_LABELS)
        if len(x) != len(y) or y.size and y.max() > 9:
            raise NfieldsError(f"Fashion-MNIST '{part}' files disagree ({len(x)} images, {len(y)} labels, "
                               f"labels up to {y.max() if y.size else 0}); reinstall dataset-fashion-mnist.")
        images.append(x)
        labels.append(y)
        names += [f"{'train' if part == 'train' else 'test'}-{i:05d}" for i in range(len(x))]
    x, y = np.concatenate(images), np.concatenate(labels)
    if limit is not None:
        x, y, names = x[:limit], y[:limit], names[:limit]
    x = _resize_all(x[..., None], shape)
    return _dataset(x, y, names, "fashion-mnist", split, list(FASHION_CLASSES))


# -- Noto Color Emoji ----------------------------------------------------------------------------------

def cache_dir() -> Path:
    """$XDG_CACHE_HOME/nfields, or ~/.cache/nfields."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nfields"


def _emoji_cache_path(font: Path, shape: tuple[int, int]) -> Path:
    stat = font.stat()
    return cache_dir() / f"emoji-{shape[0]}x{shape[1]}-{stat.st_size}-{stat.st_mtime_ns}-v{CACHE_VERSION}.npz"


def _load_emoji(split: str, shape: tuple[int, int], limit) -> ImageDataset:
    font = _installed("emoji")
    cache = _emoji_cache_path(font, shape)
    cached = _read_emoji_cache(cache, shape)
    if cached is None:
        cached = _decode_emoji(font, shape)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, images=cached[0], names=np.array(cached[1]))
        except OSError:
            pass  # a read-only cache folder only costs the next load its time
    images, names = cached
    keep = _split_indices(len(names), split)[:limit]
    return _dataset(images[keep], None, [names[i] for i in keep], "emoji", split)


def _read_emoji_cache(path: Path, shape) -> tuple[np.ndarray, list[str]] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            images, names = data["images"], [str(n) for n in data["names"]]
    except Exception:  # missing or damaged: decode again
        return None
    if images.dtype != np.uint8 or images.shape[1:] != (*shape, 3) or len(names) != len(images):
        return None
    return images, names


def _decode_emoji(font: Path, shape: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """Every glyph of the largest CBDT strike, sorted by name: RGBA PNG -> on white, padded to a square -> shape."""
    from fontTools.ttLib import TTFont

    try:
        tt = TTFont(str(font), lazy=True)
        if "CBDT" not in tt or "CBLC" not in tt:
            raise NfieldsError(f"'{font}' has no colour bitmaps (CBDT/CBLC tables); reinstall "
                               f"fonts-noto-color-emoji.")
        strikes = tt["CBLC"].strikes
        largest = max(range(len(strikes)), key=lambda i: strikes[i].bitmapSizeTable.ppemY)
        glyphs = tt["CBDT"].strikeData[largest]
        names = sorted(glyphs)
        height, width = shape
        images = np.empty((len(names), height, width, 3), np.uint8)
        for i, glyph_name in enumerate(names):
            glyph = glyphs[glyph_name]
            glyph.ensureDecompiled()
            with Image.open(io.BytesIO(glyph.imageData)) as png:
                rgba = png.convert("RGBA")
            side = max(rgba.size)
            canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
            canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
            images[i] = np.asarray(canvas.convert("RGB").resize((width, height), Image.LANCZOS))
    except NfieldsError:
        raise
    except Exception as error:  # fontTools and PIL raise many types for damaged data
        raise NfieldsError(f"could not read the emoji bitmaps of '{font}' ({error}); "
                           f"reinstall fonts-noto-color-emoji.") from None
    if not names:
        raise NfieldsError(f"'{font}' has no colour bitmaps; reinstall fonts-noto-color-emoji.")
    return images, names


# -- a folder of images ------------------------------------------------------------------------------

def _image_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    except OSError as error:
        raise NfieldsError(f"cannot read folder '{folder}' ({error.strerror}); check its permissions.") from None


def _load_folder(folder: Path, split: str, shape, limit) -> ImageDataset:
    if (folder / "train").is_dir() and (folder / "test").is_dir():  # the user's own split
        parts = ["train", "test"] if split == "all" else [split]
        files = [f for part in parts for f in _image_files(folder / part)][:limit]
        if not files:
            raise NfieldsError(f"folder '{folder / parts[0]}' holds no images ({', '.join(sorted(SUFFIXES))}); "
                               f"give a folder of image files.")
        return _decode_files(folder, files, split, shape)
    files = _image_files(folder)
    if not files:
        raise NfieldsError(f"folder '{folder}' holds no images ({', '.join(sorted(SUFFIXES))}); "
                           f"give a folder of image files.")
    files = [files[i] for i in _split_indices(len(files), split)[:limit]]
    if not files:
        raise NfieldsError(f"folder '{folder}' has no images in its '{split}' split (every 10th file is test); "
                           f"add images or use split 'all'.")
    return _decode_files(folder, files, split, shape)


def _decode_files(folder: Path, files: list[Path], split: str, shape) -> ImageDataset:
    arrays = []
    for path in files:
        values = _decode(path)  # float32 (H, W, C) in [0, 1], or NfieldsError naming the file
        if values.shape[2] in (2, 4):  # transparency: composite on white
            alpha = values[..., -1:]
            values = values[..., :-1] * alpha + (1 - alpha)
        arrays.append(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
    sizes = sorted({a.shape[:2] for a in arrays})
    if shape is None and len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
        raise NfieldsError(f"mixed image sizes in '{folder}' ({shown}); pass --size to resize them all.")
    channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    images = np.stack([_resize_all(np.repeat(a, channels // a.shape[2], axis=2)[None], shape)[0] for a in arrays])
    return _dataset(images, None, [p.name for p in files], folder.name, split)

