"""Audio metrics on waveforms."""

from __future__ import annotations

import torch

from .image import mse_to_psnr


def waveform_psnr(prediction: torch.Tensor, target: torch.Tensor, clamp: bool = True) -> float:
    """PSNR in dB of a waveform whose samples lie in [-1, 1]: the peak-to-peak range is 2, so
    PSNR = 10 log10(2^2 / MSE), over every sample and channel; the prediction is clamped to
    [-1, 1] first (what a PCM file can hold) unless told not to."""
    if clamp:
        prediction = prediction.clamp(-1, 1)
    return float(mse_to_psnr(((prediction.float() - target.float()) ** 2).mean() / 4.0))


def snr(prediction: torch.Tensor, target: torch.Tensor, clamp: bool = True) -> float:
    """Signal-to-noise ratio in dB: 10 log10(sum x^2 / sum (x - x_hat)^2) over every sample and
    channel; independent of the clip's loudness, unlike the PSNR. Clamped as `waveform_psnr`."""
    if clamp:
        prediction = prediction.clamp(-1, 1)
    target = target.float()
    noise = ((prediction.float() - target) ** 2).sum().clamp_min(1e-30)
    return float(10.0 * torch.log10(((target ** 2).sum()).clamp_min(1e-30) / noise))
