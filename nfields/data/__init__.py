"""Where coordinates and values come from."""

from . import catalog
from .grid import pixel_grid
from .image import ImageSignal, load_image

__all__ = ["catalog", "pixel_grid", "ImageSignal", "load_image"]
