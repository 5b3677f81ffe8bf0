"""Image metrics on values in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_to_psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for a peak value of 1."""
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def psnr(prediction: torch.Tensor, target: torch.Tensor, clamp: bool = True) -> float:
    """PSNR of one instance on [0, 1]; the prediction is clamped to [0, 1] first unless told not to."""
    if clamp:
        prediction = prediction.clamp(0, 1)
    return float(mse_to_psnr(((prediction.float() - target.float()) ** 2).mean()))


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of (H, W, C)
    images in [0, 1], averaged over valid windows and channels; the prediction is clamped."""
    x = prediction.clamp(0, 1).float().permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = target.float().permute(2, 0, 1)[:, None]
    g = _gaussian_window(device=x.device)
    size = min(11, x.shape[-1], x.shape[-2])
    if size < 11:  # tiny images: a shorter window
        g = _gaussian_window(size, 1.5 * size / 11, device=x.device)

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
