"""The two classic baselines of generalizable INRs, both a latent vector per instance that shift-modulates
one shared SIREN (`LatentSiren`):

- `functa` (Dupont et al. 2022, "From data to functa"): the latent is fitted by a few meta-SGD steps from
  zero (learned per-dimension inner learning rates), meta-learned end to end (second order, MAML-style).
- `autodecoder` (DeepSDF, Park et al. 2019): a table of training latents learned jointly with the decoder;
  a new instance's latent is found by optimising it with the decoder frozen.

Both adaptation schemes live in `adapt.py`, shared with mNIF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NfieldsError
from .adapt import LatentTable, LatentTableSettings, LatentVectorINR, MetaSGDLatents, MetaSGDSettings
from .model import GINR_METHODS, DataSpec


@dataclass
class LatentSirenConfig:
    """The shared shift-modulated SIREN. Defaults are scaled down for our small (32-64 px) images: functa's
    64x64 CelebA setting is width 512, 15 hidden layers, latent 512 (its config file: 128)."""

    latent_dim: int = 256
    hidden_width: int = 256
    hidden_layers: int = 5  # sine layers, each shift-modulated; the linear output layer comes on top
    w0: float = 30.0  # SIREN's omega_0, in every sine layer
    output_bias: float = 0.5  # functa's: targets lie in [0, 1], so the network learns zero-centred values

    def __post_init__(self):
        for name in ("latent_dim", "hidden_width", "hidden_layers"):
            if getattr(self, name) < 1:
                raise NfieldsError(f"option '{name}' must be at least 1, got {getattr(self, name)}.")


@dataclass
class FunctaConfig(MetaSGDSettings, LatentSirenConfig):
    """The shared SIREN and CAVIA's settings (`adapt.MetaSGDSettings`: functa's 3 inner steps, meta-SGD)."""

    def __post_init__(self):
        super().__post_init__()
        self.check_meta_sgd("functa")


@dataclass
class AutoDecoderConfig(LatentTableSettings, LatentSirenConfig):
    """The shared SIREN and auto-decoding's settings (`adapt.LatentTableSettings`)."""

    def __post_init__(self):
        super().__post_init__()
        self.check_latent_table("autodecoder")


class LatentSiren(nn.Module):
    """(B, N, in) coordinates + (B, latent_dim) latents -> (B, N, out) values.

    h_l = sin(w0 * (W_l h_{l-1} + b_l + s_l)) with shifts (s_1, ..., s_L) = A z + c, one linear map from the
    latent (functa's LatentToModulation with no hidden layers, which its authors found best); output W h_L + b
    + output_bias. Weights follow SIREN's initialisation: first layer U(-1/in, 1/in), later ones (output
    included, as in functa) U(-sqrt(6/in)/w0, sqrt(6/in)/w0); biases start at zero (functa's Haiku default).
    The latent map is N(0, 1/in) truncated at 2 std (Haiku's default), zero bias, so zero latents give the
    unmodulated SIREN."""

    def __init__(self, in_features: int, out_features: int, config: LatentSirenConfig):
        super().__init__()
        width, self.w0, self.output_bias = config.hidden_width, config.w0, config.output_bias
        fan_ins = [in_features] + [width] * (config.hidden_layers - 1)
        self.hidden = nn.ModuleList(nn.Linear(fan_in, width) for fan_in in fan_ins)
        self.output = nn.Linear(width, out_features)
        self.to_shifts = nn.Linear(config.latent_dim, width * config.hidden_layers)
        with torch.no_grad():
            for i, layer in enumerate([*self.hidden, self.output]):
                fan_in = layer.in_features
                bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / self.w0
                layer.weight.uniform_(-bound, bound)
                layer.bias.zero_()
            std = 1 / math.sqrt(config.latent_dim)
            nn.init.trunc_normal_(self.to_shifts.weight, std=std, a=-2 * std, b=2 * std)
            self.to_shifts.bias.zero_()

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        shifts = self.to_shifts(latents).unsqueeze(1).chunk(len(self.hidden), dim=-1)
        h = coords
        for layer, shift in zip(self.hidden, shifts):
            h = torch.sin(self.w0 * (layer(h) + shift))
        return self.output(h) + self.output_bias


class LatentINR(LatentVectorINR):
    """A latent vector per instance and the shared `LatentSiren`; works on single images (and voxel grids)."""

    def __init__(self, data: DataSpec, config: LatentSirenConfig):
        super().__init__(data, config)
        self.decoder = LatentSiren(data.in_features, data.out_features, config)

    def decode(self, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decoder(coords, latents)


@GINR_METHODS.register("functa", FunctaConfig)
class Functa(MetaSGDLatents, LatentINR):
    """functa (Dupont et al. 2022): a shift-modulated SIREN, latents from 3 meta-SGD steps from zero.

    The latent comes from `adapt.MetaSGDLatents`: `inner_steps` meta-SGD steps from zero on the image's MSE,
    second order in training."""

    # functa's outer Adam learning rate is 3e-6 at batch 128 (width 512, 15 layers); far too slow for our
    # trainer. Measured on CPU, 256 Fashion-MNIST 32x32 train images, batch 16, 300 Adam steps, width 64,
    # 3 hidden layers, latent 64, 3 inner steps, seed 0 (train loss, mean of the first -> last 20 steps;
    # test PSNR of 16 new images after the 3 inner steps): lr 3e-6: 0.135 -> 0.095, 10.8 dB; 1e-4: 0.098 ->
    # 0.013, 19.3 dB; 1e-3: 0.053 -> 0.0074, 20.9 dB. But the default net (width 256, 5 layers, latent 256)
    # at 1e-3 diverges (40 steps: loss 0.126 -> 0.137, 8.2 dB) while 1e-4 trains it (24 steps: 0.089 -> 0.023).
    default_lr = 1e-4


@GINR_METHODS.register("autodecoder", AutoDecoderConfig)
class AutoDecoder(LatentTable, LatentINR):
    """Auto-decoder (DeepSDF, Park et al. 2019): a learned latent per training image; new ones are fitted.

    `adapt.LatentTable`: training latents are rows of a learned table (looked up by dataset index); in
    evaluation mode a new image's latent is fitted by Adam with the decoder frozen."""

    # SIREN's official 1e-4 for the decoder: at 1e-3 the default-size net collapsed to the mean image on emoji
    # (H200, 200 s: 12.4 -> 10.5 dB). The table learns `latent_lr_scale` times faster (ours; DeepSDF gives its
    # latents 2x the decoder's rate): each row is updated once per epoch. CPU, emoji 32x32, 256 images,
    # 300 steps: latent rate 1x 18.5 dB, 10x 21.4 dB (training PSNR).
    default_lr = 1e-4
