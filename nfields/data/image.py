"""Images as signals: load any common file or built-in, validate it, give coordinates and values."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import NfieldsError
from . import catalog
from .grid import pixel_grid

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass
class ImageSignal:
    """An image as a signal: values (H, W, C) float32 in [0, 1]; C is 1 (gray), 2, 3 (RGB) or 4 (RGBA)."""

    values: np.ndarray
    name: str

    @property
    def height(self) -> int:
        return self.values.shape[0]

    @property
    def width(self) -> int:
        return self.values.shape[1]

    @property
    def channels(self) -> int:
        return self.values.shape[2]

    def coords(self, convention: str = "centers") -> torch.Tensor:
        """(H*W, 2) pixel-centre coordinates, row-major, matching `targets()`."""
        return pixel_grid(self.height, self.width, convention).reshape(-1, 2)

    def targets(self) -> torch.Tensor:
        """(H*W, C) values in [0, 1]."""
        return torch.from_numpy(self.values).reshape(-1, self.channels)

    def resized(self, size: tuple[int, ...] | None) -> "ImageSignal":
        if size is None:
            return self
        height, width = target_size(self.height, self.width, size)
        if (height, width) == (self.height, self.width):
            return self
        return ImageSignal(resize(self.values, height, width), self.name)


def target_size(height: int, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    """--size S scales the longer side to S, keeping the aspect ratio; --size H W is exact."""
    if any(s <= 0 for s in size):
        raise NfieldsError(f"--size must be positive, not {' '.join(map(str, size))}.")
    if len(size) == 2:
        return size[0], size[1]
    scale = size[0] / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, antialiased (PIL), per channel in float; 8-bit data is resized as 8-bit, as
    SIREN's official pipeline (torchvision Resize on a PIL image) does, so its targets match."""
    channels = []
    for c in range(values.shape[2]):
        plane = values[..., c]
        eight_bit = np.allclose(plane * 255, np.round(plane * 255), atol=1e-4)
        if eight_bit:
            img = Image.fromarray(np.round(plane * 255).astype(np.uint8), mode="L")
            channels.append(np.asarray(img.resize((width, height), Image.BILINEAR), np.float32) / 255)
        else:
            img = Image.fromarray(plane.astype(np.float32), mode="F")
            channels.append(np.clip(np.asarray(img.resize((width, height), Image.BILINEAR)), 0, 1))
    return np.stack(channels, axis=-1).astype(np.float32)


def resolve_source(source: str | os.PathLike) -> tuple[Path, str]:
    """A path or a built-in image name -> (file path, display name)."""
    return catalog.resolve(source, "image", SUFFIXES)


def load_image(source: str | os.PathLike, size: tuple[int, ...] | None = None) -> ImageSignal:
    """Load PNG, JPEG, TIFF, WebP, BMP or GIF (gray, RGB, RGBA; 8- or 16-bit) or a built-in name."""
    path, name = resolve_source(source)
    values = _decode(path)
    if not np.isfinite(values).all():
        raise NfieldsError(f"'{path}' contains NaN or infinite values; clean the image first.")
    return ImageSignal(values, name).resized(size)


def _check_fits_in_memory(path: Path, height: int, width: int, channels: int) -> None:
    need = height * width * channels * 4 * 3  # decoded, as float32, plus working copies
    if need > available_memory():
        raise NfieldsError(
            f"'{path}' is {width}x{height} pixels, too large to hold in memory; "
            f"downscale it first or use a machine with more memory.")


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return _decode_tiff(path)
    if path.suffix.lower() == ".png" and _png_is_16bit_colour(path):
        return _decode_png16(path)
    Image.MAX_IMAGE_PIXELS = None  # we check memory ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                _check_fits_in_memory(path, img.height, img.width, len(img.getbands()))
                img.load()
                return _pil_to_array(img)
    except UnidentifiedImageError:
        raise NfieldsError(f"'{path}' is not an image that can be read (PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise NfieldsError(f"'{path}' could not be decoded ({error}); the file may be truncated or damaged.") from None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("L" if img.mode == "1" else "RGB")
    array = np.asarray(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        array = array.astype(np.float64) / (65535.0 if array.max() <= 65535 else float(array.max()))
    elif img.mode == "F":
        array = array.astype(np.float64)
    else:
        array = array.astype(np.float64) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return np.clip(array, 0, 1).astype(np.float32)


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as f:
        header = f.read(26)
    return len(header) == 26 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 4, 6)


def _decode_png16(path: Path) -> np.ndarray:
    import png  # pypng: Pillow reduces 16-bit colour PNGs to 8 bits

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        _check_fits_in_memory(path, height, width, info["planes"])
        array = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(height, width, info["planes"])
    except png.Error as error:
        raise NfieldsError(f"'{path}' could not be decoded ({error}); the file may be truncated or damaged.") from None
    return (array.astype(np.float64) / 65535.0).astype(np.float32)


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            _check_fits_in_memory(path, *page.shape[:2], page.shape[2] if len(page.shape) > 2 else 1)
            array = page.asarray()
    except NfieldsError:
        raise
    except Exception as error:  # tifffile raises many types for damaged files
        raise NfieldsError(f"'{path}' could not be decoded as TIFF ({error}); the file may be damaged.") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] > 4:
        raise NfieldsError(f"'{path}' has shape {array.shape}; expected a gray, RGB or RGBA image.")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64) / np.iinfo(array.dtype).max
    return np.clip(array, 0, 1).astype(np.float32)
