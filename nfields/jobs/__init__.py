"""Jobs: what the command line runs, each built on the one trainer."""

from .export import export_run, load_exported
from .fit_image import FitImageConfig, FittedImage, fit_image, load_fitted, run_fit_image

__all__ = ["export_run", "load_exported", "FitImageConfig", "FittedImage", "fit_image", "load_fitted",
           "run_fit_image"]
