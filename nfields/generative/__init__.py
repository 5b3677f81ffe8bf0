"""Priors over conditions and generative fields."""

from .diffusion import Diffusion, cosine_alpha_bars
from .mnif import MNIF_SIZES, MixtureSiren, MNIFConfig

__all__ = ["Diffusion", "cosine_alpha_bars", "MNIF_SIZES", "MixtureSiren", "MNIFConfig"]
