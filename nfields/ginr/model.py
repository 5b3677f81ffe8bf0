"""Every generalizable INR: instances -> latents (`encode`), latents + coordinates -> values (`decode`).

A method is one `GeneralizableINR` subclass registered in GINR_METHODS with its config dataclass:
the Transformer-token methods here (TransINR, IPC, locality-aware), the classic baselines in
`baselines.py` (functa, auto-decoder) and mNIF in `mnif.py`; the latent-vector methods share the two
adaptation schemes of `adapt.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.grid import axis
from ..errors import NfieldsError
from ..registry import Registry
from .config import IPCConfig, LocalityConfig, TransINRConfig
from .decoders import IPCDecoder, LocalityDecoder, TransINRDecoder
from .encoder import TokenEncoder

GINR_METHODS: Registry["GeneralizableINR"] = Registry("method")


@dataclass
class DataSpec:
    """What a model is built for: instances are (V,) H x W x `channels` images (V support views for light
    fields, whose pixels carry RGB + 6 Plücker channels), or D x H x W x `channels` voxel grids when
    `image_size` has three sides; the field maps `in_features` coordinates (2: pixel (y, x); 3: voxel
    (x, y, z); 6: Plücker rays) to `out_features` values. `instances`: the training-set size (the latent
    table of auto-decoding)."""

    image_size: tuple[int, ...]  # the grid's sides: (H, W) for images, (D, H, W) for voxel grids
    channels: int
    out_features: int = 0  # 0: same as channels
    in_features: int = 2
    instances: int = 0

    def __post_init__(self):
        self.image_size = tuple(int(s) for s in self.image_size)
        self.out_features = self.out_features or self.channels


def grid_coords(shape: tuple[int, ...], device=None) -> torch.Tensor:
    """(*shape, len(shape)) coordinates of every cell centre of a grid, in [-1, 1] along each axis, in the axes'
    order ((y, x) for pixels, as `nfields.data.grid.pixel_grid`; (x, y, z) for voxels, as
    `nfields.data.voxels.voxel_centres`)."""
    axes = [axis(int(n), device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


class GeneralizableINR(nn.Module):
    """Base of every method. Images are float (B, [V,] H, W, C) in [0, 1] (voxel grids (B, D, H, W, C));
    coordinates (B, N, in_features), cell centres in [-1, 1] (`grid_coords`); values (B, N, out_features).
    `index` (B,) are dataset indices, used by methods that keep a table of training latents."""

    #: Adam's learning rate when the run does not set one (the paper's Appendix A: 1e-4).
    default_lr: ClassVar[float] = 1e-4
    #: True when `encode` is a table lookup for training instances (new instances need optimisation).
    needs_index: ClassVar[bool] = False

    def __init__(self, data: DataSpec, config: Any):
        super().__init__()
        self.data, self.config = data, config

    @property
    def method(self) -> str:
        return type(self).registry_name  # type: ignore[attr-defined]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_groups(self, lr: float) -> list[dict]:
        """Adam's parameter groups at base rate `lr`; methods whose parts learn at different rates override."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, coords: torch.Tensor, index: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Values at `coords` of the instances. `targets`, the true (B, N, C) values at `coords` when the caller
        has them (the trainer does), let methods that fit latents by optimisation fit them on those points."""
        return self.decode(self.encode(images, index), coords)

    def grid_shape(self, height: int | None = None, width: int | None = None,
                   shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """The grid to evaluate: `shape`, else the training grid with an image's height and width replaced."""
        if shape is not None:
            return tuple(int(s) for s in shape)
        size = self.data.image_size
        if len(size) == 2:
            return (height or size[0], width or size[1])
        if height or width:
            raise NfieldsError(f"a {len(size)}-D grid is evaluated at shape=(...) with {len(size)} sides, not at a "
                               f"height and width.")
        return size

    def coords(self, batch: int = 1, height: int | None = None, width: int | None = None,
               shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """(batch, cells, dims) cell-centre coordinates, row-major; the training grid by default."""
        shape = self.grid_shape(height, width, shape)
        grid = grid_coords(shape, device=self.device).reshape(1, -1, len(shape))
        return grid.expand(batch, -1, -1)

    def render(self, latents: torch.Tensor, height: int | None = None, width: int | None = None,
               chunk: int = 1 << 16, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """(B, h, w, C) images (or (B, *shape, C) grids) decoded from latents on a full grid of any
        resolution, in chunks."""
        shape = self.grid_shape(height, width, shape)
        coords = self.coords(latents.shape[0], shape=shape)
        values = torch.cat([self.decode(latents, part) for part in coords.split(chunk, dim=1)], dim=1)
        return values.reshape(latents.shape[0], *shape, -1)

    def reconstruct(self, images: torch.Tensor, height: int | None = None, width: int | None = None,
                    index: torch.Tensor | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """(B, H, W, C) images -> (B, h, w, C) predictions on a full grid (any resolution; voxels: `shape`)."""
        return self.render(self.encode(images, index), height, width, shape=shape)

    def spec(self) -> dict:
        """Everything needed to rebuild the module (weights come from its state_dict)."""
        return {"method": self.method, "data": dataclasses.asdict(self.data),
                "config": dataclasses.asdict(self.config)}


class TokenINR(GeneralizableINR):
    """The shared Transformer encoder (patches + learned latent tokens) and a token decoder."""

    decoder_cls: ClassVar[type[nn.Module]]

    def __init__(self, data: DataSpec, config: Any):
        super().__init__(data, config)
        self.decoder = self.decoder_cls(data.in_features, data.out_features, config.width, config)
        self.encoder = TokenEncoder(data.image_size, data.channels, config.patch_size, self.decoder.num_tokens,
                                    width=config.width, depth=config.depth, heads=config.heads,
                                    mlp_ratio=config.mlp_ratio, dropout=config.dropout)

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decoder(coords, latents)


@GINR_METHODS.register("transinr", TransINRConfig)
class TransINR(TokenINR):
    """TransINR (Chen & Wang 2022): tokens modulate every hyponet weight."""

    decoder_cls = TransINRDecoder


@GINR_METHODS.register("ipc", IPCConfig)
class IPC(TokenINR):
    """Instance pattern composers (Kim et al. 2023): tokens modulate the first weight, low rank."""

    decoder_cls = IPCDecoder


@GINR_METHODS.register("locality", LocalityConfig)
class LocalityINR(TokenINR):
    """Locality-aware INR (Lee et al. 2023): selective token aggregation, multi-band modulation."""

    decoder_cls = LocalityDecoder


def make_ginr(method: str, data: DataSpec | int | tuple[int, int], channels: int | None = None,
              **options: Any) -> GeneralizableINR:
    """Build a method by name: make_ginr("locality", DataSpec((32, 32), 3), width=64, depth=2), or the
    short form make_ginr("locality", 32, 3, ...) for square images."""
    if not isinstance(data, DataSpec):
        if channels is None:
            raise NfieldsError("make_ginr needs the image channels, e.g. make_ginr('ipc', 32, 3).")
        data = DataSpec((data, data) if isinstance(data, int) else tuple(data), channels)
    cls, _ = GINR_METHODS.lookup(method)
    return cls(data, GINR_METHODS.config(method, options))


#: Options that runs saved before the option existed had fixed otherwise (IPC modulated its first layer).
LEGACY_OPTIONS = {"ipc": {"modulated_layer": 0}}


def ginr_from_spec(spec: dict) -> GeneralizableINR:
    """Rebuild (untrained weights) from `GeneralizableINR.spec()`."""
    options = {**LEGACY_OPTIONS.get(spec["method"], {}), **spec["config"]}
    return make_ginr(spec["method"], DataSpec(**spec["data"]), **options)
