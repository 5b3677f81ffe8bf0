"""GeneralizableINR = TokenEncoder + a decoder, picked by method name from GINR_METHODS."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..data.grid import pixel_grid
from ..registry import Registry
from .config import EncoderConfig, IPCConfig, LocalityConfig, TransINRConfig
from .decoders import IPCDecoder, LocalityDecoder, TransINRDecoder
from .encoder import TokenEncoder

GINR_METHODS: Registry[nn.Module] = Registry("method")
GINR_METHODS.register("transinr", TransINRConfig)(TransINRDecoder)
GINR_METHODS.register("ipc", IPCConfig)(IPCDecoder)
GINR_METHODS.register("locality", LocalityConfig)(LocalityDecoder)

__all__ = ["GINR_METHODS", "GeneralizableINR", "make_ginr", "ginr_from_spec", "EncoderConfig", "TransINRConfig",
           "IPCConfig", "LocalityConfig"]


class GeneralizableINR(nn.Module):
    """images (B, H, W, C) in [0, 1] -> tokens (B, R, D); tokens + coords (B, N, 2) -> values (B, N, C).

    Coordinates are (y, x) pixel centres in [-1, 1] (`nfields.data.grid`); `coords()` gives the full grid.
    """

    def __init__(self, method: str, encoder: TokenEncoder, decoder: nn.Module, config: Any):
        super().__init__()
        self.method, self.encoder, self.decoder, self.config = method, encoder, decoder, config

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decoder(coords, tokens)

    def forward(self, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), coords)

    def coords(self, batch: int = 1, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """(batch, height * width, 2) pixel-centre coordinates, row-major; the training size by default."""
        h, w = height or self.encoder.image_size[0], width or self.encoder.image_size[1]
        grid = pixel_grid(h, w, device=self.encoder.latents.device).reshape(1, h * w, 2)
        return grid.expand(batch, -1, -1)

    def reconstruct(self, images: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """(B, H, W, C) images -> (B, h, w, C) predictions on a full pixel grid (any resolution)."""
        h, w = height or images.shape[1], width or images.shape[2]
        values = self(images, self.coords(images.shape[0], h, w))
        return values.reshape(images.shape[0], h, w, -1)

    def spec(self) -> dict:
        """Everything needed to rebuild the module (weights come from its state_dict)."""
        return {"method": self.method, "image_size": list(self.encoder.image_size),
                "channels": self.encoder.channels, "patch_size": self.encoder.patch_size,
                "config": dataclasses.asdict(self.config)}


def make_ginr(method: str, image_size: int | tuple[int, int], channels: int, patch_size: int,
              **options: Any) -> GeneralizableINR:
    """Build a generalizable INR by name, e.g. make_ginr("locality", 32, 3, 8, width=64, depth=2)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    decoder_cls, _ = GINR_METHODS.lookup(method)
    config = GINR_METHODS.config(method, options)
    decoder = decoder_cls(2, channels, config.width, config)
    encoder = TokenEncoder(size, channels, patch_size, decoder.num_tokens, width=config.width, depth=config.depth,
                           heads=config.heads, mlp_ratio=config.mlp_ratio)
    return GeneralizableINR(method, encoder, decoder, config)


def ginr_from_spec(spec: dict) -> GeneralizableINR:
    """Rebuild (untrained weights) from `GeneralizableINR.spec()`."""
    return make_ginr(spec["method"], tuple(spec["image_size"]), spec["channels"], spec["patch_size"],
                     **spec["config"])
