"""A DDPM prior over standardised latents: the denoiser, its EMA copy, the diffusion and the statistics.

Everything lives in one module, so a checkpoint of it holds the live weights, the EMA weights, the EMA's
update count and the standardisation, and a resumed run continues exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import NfieldsError
from .denoisers import ConditionalDenoiser, Guided
from .diffusion import Diffusion

STD_FLOOR = 1e-6  # a latent coordinate that never varies is left centred instead of divided by ~0


def latent_statistics(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over the instances (dim 0), one per latent coordinate: per dimension for vectors
    (mNIF's), per token and channel for tokens (Appendix A.3: "mean and standard deviation of feature
    channels of each latent token")."""
    if latents.shape[0] < 2:
        raise NfieldsError(f"a prior needs at least 2 training latents to standardise them, not {latents.shape[0]}.")
    return latents.mean(0), latents.std(0).clamp_min(STD_FLOOR)


class LatentPrior(nn.Module):
    """`denoiser` is trained; `ema` is its exponential moving average (not trained: no gradients), the
    one sampling uses. EMA decay at update n is min(decay, (1 + n) / (10 + n)) (ours, the warm-up of
    latent diffusion's LitEma, which mNIF's code uses), so short runs are not dominated by the initial
    weights."""

    def __init__(self, denoiser: ConditionalDenoiser, mean: torch.Tensor, std: torch.Tensor,
                 steps: int = 1000, ema_decay: float = 0.9999):
        super().__init__()
        if tuple(mean.shape) != denoiser.latent_shape or tuple(std.shape) != denoiser.latent_shape:
            raise NfieldsError(f"latent statistics of shape {tuple(mean.shape)} do not fit a denoiser for "
                               f"{denoiser.latent_shape}.")
        if not 0.0 <= ema_decay < 1.0:
            raise NfieldsError(f"the EMA decay must be in [0, 1), not {ema_decay}.")
        self.denoiser = denoiser
        self.ema = copy.deepcopy(denoiser).requires_grad_(False)
        self.diffusion = Diffusion(steps)
        self.ema_decay = ema_decay
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.denoiser.latent_shape

    @property
    def num_classes(self) -> int:
        return self.denoiser.num_classes

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.denoiser.parameters())

    def standardize(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.mean) / self.std

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    @torch.no_grad()
    def update_ema(self) -> None:
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for ema, live in zip(self.ema.parameters(), self.denoiser.parameters()):
            ema.lerp_(live, 1.0 - decay)
        for ema, live in zip(self.ema.buffers(), self.denoiser.buffers()):
            ema.copy_(live)
        self.ema_updates += 1

    def loss(self, latents: torch.Tensor, condition: torch.Tensor | None = None,
             generator: torch.Generator | None = None, use_ema: bool = False) -> torch.Tensor:
        """x0-prediction MSE on standardised latents (the live denoiser, or the EMA one)."""
        denoiser = self.ema if use_ema else self.denoiser
        return self.diffusion.loss(denoiser, self.standardize(latents), condition, generator)

    @torch.no_grad()
    def sample(self, n: int, sampling_steps: int = 250, classes: torch.Tensor | None = None,
               guidance: float = 1.0, generator: torch.Generator | None = None,
               use_ema: bool = True) -> torch.Tensor:
        """(n, *latent_shape) latents in the stage-1 scale: DDIM from noise, then de-standardised.
        `classes` (n,) for a class-conditional prior (None: unconditional, the null class), guided with
        scale `guidance` (1: no guidance)."""
        denoiser = self.ema if use_ema else self.denoiser
        if classes is not None:
            denoiser = Guided(denoiser, guidance)
        device = self.mean.device
        x = self.diffusion.sample(denoiser, (n, *self.latent_shape), sampling_steps, classes, device=device,
                                  generator=generator)
        return self.destandardize(x)
