"""Generalizable INRs: one Transformer encoder turns an image into latent tokens, one shared
decoder (TransINR, IPC or the locality-aware INR) turns tokens + coordinates into values."""

from .decoders import IPCDecoder, LocalityDecoder, TransINRDecoder
from .encoder import TokenEncoder
from ..encodings import LogFourierFeatures
from .config import EncoderConfig, IPCConfig, LocalityConfig, TransINRConfig
from .model import GINR_METHODS, GeneralizableINR, ginr_from_spec, make_ginr

__all__ = ["TokenEncoder", "LogFourierFeatures", "TransINRDecoder", "IPCDecoder", "LocalityDecoder",
           "GeneralizableINR", "GINR_METHODS", "EncoderConfig", "TransINRConfig", "IPCConfig", "LocalityConfig",
           "make_ginr", "ginr_from_spec"]
