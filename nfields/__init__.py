"""nfields: neural fields (implicit neural representations) in PyTorch.

    import nfields
    image = nfields.load_image("camera", size=(256,))
    field = nfields.make_field("siren", 2, image.channels)
    fitted, _ = nfields.fit_image(image, field, steps=500)
    big = fitted.render(scale=4)          # (1024, 1024, 1) in [0, 1]
"""

from .data import AudioSignal, ImageSignal, catalog, load_audio, load_image
from .errors import NfieldsError
from .fields import FIELDS, Field, make_field
from .jobs import FitAudioConfig, FittedAudio, fit_audio, make_audio_field
from .jobs import FitImageConfig, FittedImage, export_run, fit_image, load_exported, load_fitted
from .jobs import FitVideoConfig, FittedVideo, fit_video
from .data import VideoSignal, load_video
from .data.shape import ShapeSamples, ShapeSignal, load_shape
from .jobs.fit_shape import FitShapeConfig, FittedShape, fit_shape, load_fitted_shape
from .metrics import psnr, ssim

__version__ = "0.1.0"
__all__ = ["ImageSignal", "catalog", "load_image", "NfieldsError", "FIELDS", "Field", "make_field",
           "FitImageConfig", "FittedImage", "export_run", "fit_image", "load_exported", "load_fitted",
           "psnr", "ssim", "__version__", "AudioSignal", "load_audio", "FitAudioConfig", "FittedAudio", "fit_audio",
           "make_audio_field", "VideoSignal", "load_video", "FitVideoConfig", "FittedVideo", "fit_video",
           "ShapeSignal", "ShapeSamples", "load_shape", "FitShapeConfig", "FittedShape", "fit_shape",
           "load_fitted_shape"]
