"""DDPM over latents (Ho et al. 2020) with the cosine schedule (Nichol & Dhariwal 2021), x0-prediction
and DDIM sampling (Song et al. 2021): the stage-2 prior of mNIF and of the locality-aware INR.

The denoiser is any module `denoiser(x_t, t, condition) -> x0_hat` with t an integer tensor (B,).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import NfieldsError


def cosine_alpha_bars(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """(steps,) float64 cumulative products alpha_bar_t, t = 1..steps: f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)
    normalised by f(0), with each beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at `max_beta`."""
    if steps < 1:
        raise NfieldsError(f"a diffusion needs at least 1 step, not {steps}.")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


class Diffusion(nn.Module):
    """The forward process q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I), the x0-prediction loss, DDIM sampling."""

    def __init__(self, steps: int = 1000):
        super().__init__()
        self.steps = steps
        self.register_buffer("alpha_bars", cosine_alpha_bars(steps).float())

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t for integer steps t (B,) in [0, steps): sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self.alpha_bars[t].view(-1, *[1] * (x0.dim() - 1))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, denoiser: Callable, x0: torch.Tensor, condition=None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the predicted x0 at uniformly drawn steps (x0-parameterisation)."""
        t = torch.randint(0, self.steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        return (denoiser(self.q_sample(x0, t, noise), t, condition) - x0).pow(2).mean()

    @torch.no_grad()
    def sample(self, denoiser: Callable, shape: tuple[int, ...], sampling_steps: int = 250, condition=None,
               device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) over `sampling_steps` evenly spaced steps, from pure noise."""
        if not 1 <= sampling_steps <= self.steps:
            raise NfieldsError(f"sampling steps must be between 1 and {self.steps}, not {sampling_steps}.")
        device = device or self.alpha_bars.device
        x = torch.randn(shape, device=device, generator=generator)
        times = torch.linspace(self.steps - 1, 0, sampling_steps, device=device).round().long()
        for i, t in enumerate(times):
            a = self.alpha_bars[t]
            x0 = denoiser(x, t.expand(shape[0]), condition)
            if i + 1 == len(times):
                return x0
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            a_next = self.alpha_bars[times[i + 1]]
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x
