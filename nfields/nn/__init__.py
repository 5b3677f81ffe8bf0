"""Layers with their initialisations."""

from .layers import Gaussian, Sine, SineLinear, siren_uniform_
from .mlp import MLP

__all__ = ["Gaussian", "Sine", "SineLinear", "siren_uniform_", "MLP"]
