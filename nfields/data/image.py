"""Images as signals: load any common file or built-in, validate it, give coordinates and values."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import NfieldsError
from ..memory import available_memory, gigabytes
from . import catalog
from .grid import pixel_grid

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


#: Peak bytes of host memory that `_decode` costs per pixel-channel, measured as the peak RSS of decoding
#: (2026-12-07, this machine; tests/test_run_kinds.py checks it): at 4000x4000, 8-bit gray, RGB and RGBA PNG
#: 7.0-7.4, 16-bit RGB PNG (pypng) 7.0, 16-bit gray PNG 9.1, 8-bit TIFF 6.1, float32 TIFF 9.0 (4 of them the
#: float32 result, 1 the finiteness check); at 2000x2000 16-bit gray 10.3 (the float64 block of rows weighs
#: more on a small image). Before the conversion to float went a block of rows at a time it was 16-22.
#: Rounded up.
DECODE_BYTES_PER_VALUE = 12
#: Rows converted to float at a time: the float64 working copy stays small.
_CONVERT_ROWS = 256


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
    return ImageSignal(_decode(path), name).resized(size)


def _check_fits_in_memory(path: Path, height: int, width: int, channels: int,
                          per_value: int = DECODE_BYTES_PER_VALUE) -> None:
    """Refuse, before decoding, an image whose decoding would not fit in the memory available now."""
    need = height * width * channels * per_value
    if need > available_memory():
        raise NfieldsError(
            f"'{path}' is {width}x{height} pixels, too large to hold in memory (decoding it takes {gigabytes(need)}, "
            f"{gigabytes(available_memory())} are available); downscale it first or use a machine with more memory.")


@contextmanager
def _no_pixel_limit():
    """Pillow's decompression-bomb limit off for one call (we check memory ourselves), then as it was."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decode(path: Path) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]; NfieldsError for a file that is unreadable, too large or not finite."""
    if path.suffix.lower() in (".tif", ".tiff"):
        values = _decode_tiff(path)
    elif path.suffix.lower() == ".png" and _png_is_16bit_colour(path):
        values = _decode_png16(path)
    else:
        values = _decode_pil(path)
    if not np.isfinite(values).all():
        raise NfieldsError(f"'{path}' contains NaN or infinite values; clean the image first.")
    return values


def _decode_pil(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings(), _no_pixel_limit():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                # A palette image becomes RGB(A) before it is converted to float.
                channels = 4 if img.mode in ("P", "PA") else len(img.getbands())
                _check_fits_in_memory(path, img.height, img.width, channels)
                img.load()
                return _pil_to_array(img, path)
    except UnidentifiedImageError:
        raise NfieldsError(f"'{path}' is not an image that can be read (PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise NfieldsError(f"'{path}' could not be decoded ({error}); the file may be truncated or damaged.") from None


def _unit_float32(array: np.ndarray, scale: float, path: Path) -> np.ndarray:
    """array / scale clipped to [0, 1], as float32 (H, W, C), computed in float64 a block of rows at a time
    (the same values as converting the whole array at once, without its float64 copy). NaN or infinite
    values (float images) are an NfieldsError, checked before clipping would hide an infinity."""
    if array.ndim == 2:
        array = array[..., None]
    out = np.empty(array.shape, np.float32)
    for start in range(0, array.shape[0], _CONVERT_ROWS):
        block = array[start:start + _CONVERT_ROWS].astype(np.float64)
        if array.dtype.kind == "f" and not np.isfinite(block).all():
            raise NfieldsError(f"'{path}' contains NaN or infinite values; clean the image first.")
        if scale != 1.0:
            block /= scale
        out[start:start + _CONVERT_ROWS] = np.clip(block, 0, 1)
    return out


def _pil_to_array(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("L" if img.mode == "1" else "RGB")
    array = np.asarray(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        peak = array.max()
        return _unit_float32(array, 65535.0 if peak <= 65535 else float(peak), path)
    if img.mode == "F":
        return _unit_float32(array, 1.0, path)
    return _unit_float32(array, 255.0, path)


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as f:
        header = f.read(26)
    return len(header) == 26 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 4, 6)


def _decode_png16(path: Path) -> np.ndarray:
    import png  # pypng: Pillow reduces 16-bit colour PNGs to 8 bits

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        _check_fits_in_memory(path, height, width, info["planes"])
        array = np.empty((height, width * info["planes"]), np.uint16)
        for i, row in enumerate(rows):
            array[i] = row
    except png.Error as error:
        raise NfieldsError(f"'{path}' could not be decoded ({error}); the file may be truncated or damaged.") from None
    return _unit_float32(array.reshape(height, width, info["planes"]), 65535.0, path)


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
        return _unit_float32(array, float(np.iinfo(array.dtype).max), path)
    return _unit_float32(array, 1.0, path)
