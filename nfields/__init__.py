"""nfields: neural fields (implicit neural representations) in PyTorch.

    import nfields
    image = nfields.load_image("camera", size=(256,))
    field = nfields.make_field("siren", 2, image.channels)
    fitted, _ = nfields.fit_image(image, field, steps=500)
    big = fitted.render(scale=4)          # (1024, 1024, 1) in [0, 1]
"""

from .data import AudioSignal, ImageSignal, VideoSignal, catalog, load_audio, load_image, load_video
from .data.shape import ShapeSamples, ShapeSignal, load_shape
from .errors import NfieldsError
from .fields import FIELDS, Field, make_field
from .jobs import (FitAudioConfig, FitImageConfig, FittedAudio, FittedImage, FittedVideo, FitVideoConfig,
                   export_run, fit_audio, fit_image, fit_video, load_exported, load_fitted, make_audio_field)
from .jobs.fit_audio import load_fitted_audio
from .jobs.fit_shape import FitShapeConfig, FittedShape, fit_shape, load_fitted_shape
from .jobs.fit_video import load_fitted_video
from .train.manifest import run_kind
from .data.datasets import ImageDataset, load_dataset
from .jobs.fit_images import FitImagesConfig, FittedImages, fit_images, load_fitted_images
from .data.scene import Scene, SceneViews, load_scene
from .fields.radiance import SCENE_FIELDS, SceneBounds, make_scene_field
from .jobs.fit_scene import FitSceneConfig, FittedScene, fit_scene, load_fitted_scene
from .metrics import psnr, ssim

__version__ = "0.1.0"
__all__ = ["NfieldsError", "FIELDS", "Field", "make_field", "catalog", "psnr", "ssim", "__version__", "run_kind",
           # images
           "ImageSignal", "load_image", "FitImageConfig", "FittedImage", "fit_image", "load_fitted", "export_run",
           "load_exported",
           # audio
           "AudioSignal", "load_audio", "FitAudioConfig", "FittedAudio", "fit_audio", "make_audio_field",
           "load_fitted_audio",
           # video
           "VideoSignal", "load_video", "FitVideoConfig", "FittedVideo", "fit_video", "load_fitted_video",
           # shapes
           "ShapeSignal", "ShapeSamples", "load_shape", "FitShapeConfig", "FittedShape", "fit_shape",
           "load_fitted_shape",
           # datasets of images
           "ImageDataset", "load_dataset", "FitImagesConfig", "FittedImages", "fit_images", "load_fitted_images",
           # scenes
           "Scene", "SceneViews", "load_scene", "SCENE_FIELDS", "SceneBounds", "make_scene_field", "FitSceneConfig",
           "FittedScene", "fit_scene", "load_fitted_scene"]
