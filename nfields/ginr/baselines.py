"""The two classic baselines of generalizable INRs, both a latent vector per instance that shift-modulates
one shared SIREN (`LatentSiren`):

- `functa` (Dupont et al. 2022, "From data to functa"): the latent is fitted by a few meta-SGD steps from
  zero (learned per-dimension inner learning rates), meta-learned end to end (second order, MAML-style).
- `autodecoder` (DeepSDF, Park et al. 2019): a table of training latents learned jointly with the decoder;
  a new instance's latent is found by optimising it with the decoder frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NfieldsError
from .model import GINR_METHODS, DataSpec, GeneralizableINR


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
class FunctaConfig(LatentSirenConfig):
    inner_steps: int = 3  # functa's training and evaluation setting
    meta_sgd: bool = True  # learned per-dimension inner learning rates; False: plain SGD at inner_lr
    inner_lr: float = 1e-2  # only without meta-SGD (functa's opt_inner)

    def __post_init__(self):
        super().__post_init__()
        if self.inner_steps < 1:
            raise NfieldsError(f"functa option 'inner_steps' must be at least 1, got {self.inner_steps}.")


@dataclass
class AutoDecoderConfig(LatentSirenConfig):
    latent_init_std: float = 0.01  # DeepSDF: training latents start N(0, 0.01^2)
    fit_steps: int = 100  # Adam steps fitting a new instance's latent (from zeros), decoder frozen
    fit_lr: float = 1e-2
    latent_lr_scale: float = 10.0  # the latent table's learning rate over the decoder's

    def __post_init__(self):
        super().__post_init__()
        if self.fit_steps < 1:
            raise NfieldsError(f"autodecoder option 'fit_steps' must be at least 1, got {self.fit_steps}.")


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


def per_image_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's mean squared error, so each latent's gradient ignores batch size."""
    return (prediction - target).pow(2).flatten(1).mean(1).sum()


class LatentINR(GeneralizableINR):
    """A latent vector per instance and the shared `LatentSiren`; works on single images only."""

    def __init__(self, data: DataSpec, config: LatentSirenConfig):
        super().__init__(data, config)
        self.decoder = LatentSiren(data.in_features, data.out_features, config)

    def decode(self, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decoder(coords, latents)

    def _targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) images -> their (B, H*W, 2) pixel coordinates and (B, H*W, C) values."""
        if images.dim() != 4:
            raise NfieldsError(f"{self.method} works on single images, not support views: expected (B, H, W, C) "
                               f"images, got shape {tuple(images.shape)}; use a token method for light fields.")
        b, h, w, c = images.shape
        if c != self.data.out_features or self.data.in_features != 2:
            raise NfieldsError(f"{self.method} was built for {self.data.out_features}-channel images on 2D "
                               f"coordinates but got {c}-channel images; build it with the images' channels.")
        return self.coords(b, h, w), images.reshape(b, h * w, c).to(self.device)

    def _zeros(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.config.latent_dim, device=self.device, requires_grad=True)


@GINR_METHODS.register("functa", FunctaConfig)
class Functa(LatentINR):
    """functa (Dupont et al. 2022): a shift-modulated SIREN, latents from 3 meta-SGD steps from zero.

    Latent = `inner_steps` meta-SGD steps from zero on the image's MSE: z <- z - clamp(lr, 0, 1) * grad.
    In training mode (with grad enabled) the steps keep their graph (create_graph), so the trainer's loss on
    the result trains the decoder and the learned rates through the inner loop (second order); otherwise the
    steps are first order and the latents come back detached."""

    # functa's outer Adam learning rate is 3e-6 at batch 128 (width 512, 15 layers); far too slow for our
    # trainer. Measured on CPU, 256 Fashion-MNIST 32x32 train images, batch 16, 300 Adam steps, width 64,
    # 3 hidden layers, latent 64, 3 inner steps, seed 0 (train loss, mean of the first -> last 20 steps;
    # test PSNR of 16 new images after the 3 inner steps): lr 3e-6: 0.135 -> 0.095, 10.8 dB; 1e-4: 0.098 ->
    # 0.013, 19.3 dB; 1e-3: 0.053 -> 0.0074, 20.9 dB. But the default net (width 256, 5 layers, latent 256)
    # at 1e-3 diverges (40 steps: loss 0.126 -> 0.137, 8.2 dB) while 1e-4 trains it (24 steps: 0.089 -> 0.023).
    default_lr = 1e-4

    def __init__(self, data: DataSpec, config: FunctaConfig):
        super().__init__(data, config)
        if config.meta_sgd:  # functa's MetaSGDLrs: U(0.005, 0.1) per latent dimension, clipped to [0, 1]
            self.inner_lrs = nn.Parameter(torch.empty(config.latent_dim).uniform_(0.005, 0.1))
        else:
            self.inner_lrs = None

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        coords, target = self._targets(images)
        second_order = self.training and torch.is_grad_enabled()
        lrs = self.inner_lrs.clamp(0, 1) if self.inner_lrs is not None else self.config.inner_lr
        latents = self._zeros(images.shape[0])
        with torch.enable_grad():
            for _ in range(self.config.inner_steps):
                loss = per_image_loss(self.decode(latents, coords), target)
                grad, = torch.autograd.grad(loss, latents, create_graph=second_order)
                latents = latents - lrs * grad
                if not second_order:
                    latents = latents.detach().requires_grad_()
        return latents if second_order else latents.detach()


@GINR_METHODS.register("autodecoder", AutoDecoderConfig)
class AutoDecoder(LatentINR):
    """Auto-decoder (DeepSDF, Park et al. 2019): a learned latent per training image; new ones are fitted.

    Training: `encode(images, index)` is row `index` of a learned (instances, latent_dim) table. Evaluation
    (`model.eval()`): a new latent is fitted from zeros by `fit_steps` Adam steps at `fit_lr` on the image's
    MSE with the decoder frozen. DeepSDF's latent-norm penalty (1e-4 ||z||^2 in training) is left out: the
    trainer computes the loss from the decoded values only."""

    needs_index = True
    # SIREN's official 1e-4 for the decoder: at 1e-3 the default-size net collapsed to the mean image on emoji
    # (H200, 200 s: 12.4 -> 10.5 dB). The table learns `latent_lr_scale` times faster (ours; DeepSDF gives its
    # latents 2x the decoder's rate): each row is updated once per epoch. CPU, emoji 32x32, 256 images,
    # 300 steps: latent rate 1x 18.5 dB, 10x 21.4 dB (training PSNR).
    default_lr = 1e-4

    def parameter_groups(self, lr: float) -> list[dict]:
        rest = [p for name, p in self.named_parameters() if name != "latents"]
        return [{"params": rest, "lr": lr}, {"params": [self.latents], "lr": lr * self.config.latent_lr_scale}]

    def __init__(self, data: DataSpec, config: AutoDecoderConfig):
        super().__init__(data, config)
        if data.instances < 1:
            raise NfieldsError("autodecoder needs the training-set size for its latent table: build it with "
                               "DataSpec(..., instances=N), N the number of training images.")
        self.latents = nn.Parameter(torch.randn(data.instances, config.latent_dim) * config.latent_init_std)

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        coords, target = self._targets(images)
        if self.training:
            if index is None:
                raise NfieldsError("autodecoder looks training latents up by dataset index: call it with "
                                   "index=(B,) dataset indices in training mode, or call model.eval() to fit "
                                   "latents to new images.")
            index = torch.as_tensor(index, device=self.device).long().reshape(-1)
            if index.numel() != images.shape[0] or (index < 0).any() or (index >= len(self.latents)).any():
                raise NfieldsError(f"autodecoder needs one index in [0, {len(self.latents)}) per image, got "
                                   f"{index.tolist()} for {images.shape[0]} images.")
            return self.latents[index]
        return self.fit(coords, target)

    def fit(self, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Detached (B, latent_dim) latents fitted to (B, N, C) target values at coords; only the latents get
        gradients (the decoder's .grad are left untouched)."""
        latents = self._zeros(target.shape[0])
        optimizer = torch.optim.Adam([latents], lr=self.config.fit_lr)
        with torch.enable_grad():
            for _ in range(self.config.fit_steps):
                loss = per_image_loss(self.decode(latents, coords), target)
                latents.grad, = torch.autograd.grad(loss, latents)
                optimizer.step()
        return latents.detach()
