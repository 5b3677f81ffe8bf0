"""Coordinate -> feature encodings."""

from .fourier import GaussianFourierFeatures
from .hashgrid import HashGridEncoding
from .log_fourier import LogFourierFeatures
from .positional import PositionalEncoding

__all__ = ["GaussianFourierFeatures", "HashGridEncoding", "LogFourierFeatures", "PositionalEncoding"]
