"""Priors over conditions and generative fields."""

from .mnif import MNIF_SIZES, MixtureSiren, MNIFConfig

__all__ = ["MNIF_SIZES", "MixtureSiren", "MNIFConfig"]
