"""Forward maps from a field to what a sensor sees."""

from .audio import render_samples
from .image import render_image

__all__ = ["render_image", "render_samples"]
