"""Scores."""

from .image import mse_to_psnr, psnr, ssim

__all__ = ["mse_to_psnr", "psnr", "ssim"]
