"""Forward maps from a field to what a sensor sees."""

from .image import render_image

__all__ = ["render_image"]
