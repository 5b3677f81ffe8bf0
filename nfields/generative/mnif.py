"""mNIF: a mixture of neural implicit functions (You et al., NeurIPS 2023).

The weights (not the outputs) of M SIRENs are averaged: per layer l one coefficient a_{l,m}
per expert, shared by weight and bias, W_l = sum_m a_{l,m} W_{l,m} and b_l likewise. The
coefficients are a linear map of a latent, with bias 1/M and no softmax, so a zero latent
gives the plain mean of the experts. At inference one mixed SIREN is evaluated per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MNIFConfig:
    experts: int = 256
    width: int = 64
    #: width -> width layers between the first and the output layer (layers = hidden_layers + 2).
    hidden_layers: int = 4
    latent_dim: int = 1024
    w0: float = 30.0
    #: sin on the output layer too (images, voxels); False gives a linear output layer (NeRF).
    output_sine: bool = True


MNIF_SIZES: dict[str, MNIFConfig] = {
    "S": MNIFConfig(experts=256, width=64, hidden_layers=4, latent_dim=1024),
    "L": MNIFConfig(experts=384, width=128, hidden_layers=5, latent_dim=512),
}


class MixtureSiren(nn.Module):
    """M SIRENs whose weights are mixed per instance by latent-dependent coefficients.

    ``weights[l]`` has shape (M, fan_in, fan_out), ``biases[l]`` (M, fan_out); a layer
    computes sin(w0 (x W_l + b_l)) as in SIREN's official code.
    """

    def __init__(self, in_features: int, out_features: int, config: MNIFConfig | None = None):
        super().__init__()
        config = config or MNIFConfig()
        self.config = config
        self.in_features = in_features
        self.out_features = out_features
        m, w = config.experts, config.width
        sizes = [in_features] + [w] * (config.hidden_layers + 1) + [out_features]
        self.num_layers = len(sizes) - 1
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # SIREN's official init, drawn independently for every expert.
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / config.w0
            weight = torch.empty(m, fan_in, fan_out).uniform_(-bound, bound)
            # Biases: PyTorch's nn.Linear default U(±1/sqrt(fan_in)), as the official code leaves them.
            b_bound = 1.0 / math.sqrt(fan_in)
            bias = torch.empty(m, fan_out).uniform_(-b_bound, b_bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        # Weight: PyTorch's default init, as in the official code (LinearMixtureINR, 'layerwise');
        # bias 1/M so a zero latent averages the experts. Output index = m * layers + l.
        self.coefficients = nn.Linear(config.latent_dim, m * self.num_layers)
        with torch.no_grad():
            self.coefficients.bias.fill_(1.0 / m)

    def mixture_coefficients(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, M, layers) coefficients, no softmax."""
        return self.coefficients(latents).view(-1, self.config.experts, self.num_layers)

    def mixed_parameters(self, latents: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the per-instance weight (B, fan_in, fan_out) and bias (B, fan_out)."""
        coeff = self.mixture_coefficients(latents)
        out = []
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            a = coeff[:, :, layer]
            out.append((torch.einsum("bm,mio->bio", a, weight), torch.einsum("bm,mo->bo", a, bias)))
        return out

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """coords (B, N, in), latents (B, latent_dim) -> (B, N, out)."""
        w0 = self.config.w0
        x = coords
        params = self.mixed_parameters(latents)
        for layer, (weight, bias) in enumerate(params):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight)
            if layer < self.num_layers - 1 or self.config.output_sine:
                x = torch.sin(w0 * x)
        return x

    def learnable_parameters(self) -> int:
        """Every trained parameter: all experts and the coefficient map."""
        return sum(p.numel() for p in self.parameters())

    def inference_parameters(self) -> int:
        """Size of ONE mixed SIREN, what a sample uses at inference."""
        return sum(w[0].numel() + b[0].numel() for w, b in zip(self.weights, self.biases))
