"""Jobs: what the command line runs, each built on the one trainer."""

from .export import export_run, load_exported
from .fit_audio import FitAudioConfig, FittedAudio, fit_audio, make_audio_field, run_fit_audio
from .fit_image import FitImageConfig, FittedImage, fit_image, load_fitted, run_fit_image
from .fit_video import FitVideoConfig, FittedVideo, fit_video, run_fit_video

__all__ = ["export_run", "load_exported", "FitImageConfig", "FittedImage", "fit_image", "load_fitted",
           "run_fit_image", "FitAudioConfig", "FittedAudio", "fit_audio", "make_audio_field", "run_fit_audio",
           "FitVideoConfig", "FittedVideo", "fit_video", "run_fit_video"]
