"""Where coordinates and values come from."""

from . import catalog
from .audio import AudioSignal, load_audio
from .datasets import ImageDataset, load_dataset
from .grid import pixel_grid
from .image import ImageSignal, load_image
from .video import VideoSignal, load_video

__all__ = ["catalog", "pixel_grid", "ImageSignal", "load_image", "AudioSignal", "load_audio",
           "VideoSignal", "load_video", "ImageDataset", "load_dataset"]
