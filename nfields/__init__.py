"""nfields: neural fields (implicit neural representations) in PyTorch.

    import nfields
    image = nfields.load_image("camera", size=(256,))
    field = nfields.make_field("siren", 2, image.channels)
    fitted, _ = nfields.fit_image(image, field, steps=500)
    big = fitted.render(scale=4)          # (1024, 1024, 1) in [0, 1]
"""

from .data import ImageSignal, catalog, load_image
from .errors import NfieldsError
from .fields import FIELDS, Field, make_field
from .jobs import FitImageConfig, FittedImage, export_run, fit_image, load_exported, load_fitted
from .metrics import psnr, ssim

__version__ = "0.1.0"
__all__ = ["ImageSignal", "catalog", "load_image", "NfieldsError", "FIELDS", "Field", "make_field",
           "FitImageConfig", "FittedImage", "export_run", "fit_image", "load_exported", "load_fitted",
           "psnr", "ssim", "__version__"]
