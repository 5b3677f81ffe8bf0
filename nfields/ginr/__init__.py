"""Generalizable INRs: one shared field plus a per-instance condition over a whole dataset. The
Transformer-token methods (TransINR, IPC, the locality-aware INR) encode an instance in one pass;
the baselines (functa, auto-decoder) and mNIF fit a latent vector by one of the schemes of `adapt.py`."""

from .decoders import IPCDecoder, LocalityDecoder, TransINRDecoder
from .encoder import TokenEncoder
from ..encodings import LogFourierFeatures
from .config import EncoderConfig, IPCConfig, LocalityConfig, TransINRConfig
from .model import GINR_METHODS, DataSpec, GeneralizableINR, TokenINR, ginr_from_spec, grid_coords, make_ginr
from .adapt import LatentTable, LatentVectorINR, MetaSGDLatents
from .baselines import AutoDecoder, AutoDecoderConfig, Functa, FunctaConfig, LatentSiren  # registers both
from .mnif import MNIF, MNIFMethodConfig  # registers mnif

__all__ = ["TokenEncoder", "LogFourierFeatures", "TransINRDecoder", "IPCDecoder", "LocalityDecoder",
           "GeneralizableINR", "TokenINR", "grid_coords", "DataSpec", "GINR_METHODS", "EncoderConfig", "TransINRConfig",
           "IPCConfig", "LocalityConfig", "make_ginr", "ginr_from_spec", "Functa", "FunctaConfig",
           "AutoDecoder", "AutoDecoderConfig", "LatentSiren", "LatentVectorINR", "MetaSGDLatents", "LatentTable",
           "MNIF", "MNIFMethodConfig"]
