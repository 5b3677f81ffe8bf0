"""Scores."""

from .audio import snr, waveform_psnr
from .image import mse_to_psnr, psnr, ssim

__all__ = ["mse_to_psnr", "psnr", "ssim", "snr", "waveform_psnr"]
