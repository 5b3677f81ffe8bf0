"""Coordinate -> feature encodings."""

from .fourier import GaussianFourierFeatures
from .hashgrid import HashGridEncoding
from .positional import PositionalEncoding

__all__ = ["GaussianFourierFeatures", "HashGridEncoding", "PositionalEncoding"]
