"""What fitting an image minimises: the values themselves, or (Poisson reconstruction, SIREN
§4.1) only their gradients or Laplacian.

Derivatives fix an image only up to a constant (and the Laplacian up to a harmonic function),
so a Poisson fit's evaluation shifts each channel by the constant that matches the target's
mean (our choice: the one number the supervision lacks) before PSNR and SSIM.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.derivatives import field_gradient, field_laplacian, image_gradient, image_laplacian
from ..data.image import ImageSignal
from ..fields import Field
from ..metrics import mse_to_psnr, psnr, ssim

SUPERVISION = ("values", "gradient", "laplacian")


def encode_values(values: torch.Tensor) -> torch.Tensor:
    """Image values [0, 1] -> the field's range [-1, 1] (SIREN's setup; we use it for every field)."""
    return values * 2.0 - 1.0


def decode_values(outputs: torch.Tensor | np.ndarray):
    """The field's range [-1, 1] -> image values [0, 1] (not clamped)."""
    return (outputs + 1.0) * 0.5


class ImageObjective:
    """MSE between the field and the image on the training pixels, in the field's [-1, 1] range."""

    cuda_graph_safe = True  # static shapes, no host syncs: the trainer may replay the step as a CUDA graph

    def __init__(self, model: Field, signal: ImageSignal, convention: str, keep: torch.Tensor | None,
                 batch_pixels: int, device: torch.device, eval_chunk: int = 1 << 18):
        self.model = model
        self.signal = signal
        self.keep = keep
        self.coords = signal.coords(convention).to(device)
        self.targets = signal.targets().to(device)
        train_index = None if keep is None else keep.reshape(-1).nonzero().squeeze(1).to(device)
        self.train_coords = self.coords if train_index is None else self.coords[train_index]
        self.train_values = encode_values(self.targets if train_index is None else self.targets[train_index])
        self.batch_pixels = batch_pixels if 0 < batch_pixels < len(self.train_coords) else 0
        self.eval_chunk = eval_chunk

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        coords, values = self.train_coords, self.train_values
        if self.batch_pixels:
            index = torch.randint(len(coords), (self.batch_pixels,), device=coords.device)
            coords, values = coords[index], values[index]
        mse = ((self.model(coords) - values) ** 2).mean()
        return mse, {"psnr": mse_to_psnr(mse.detach() / 4.0)}  # /4: [-1, 1] MSE -> [0, 1] MSE

    @torch.no_grad()
    def predict(self) -> torch.Tensor:
        """(H*W, C) values in [0, 1], not clamped."""
        parts = [self.model(self.coords[i:i + self.eval_chunk]) for i in range(0, len(self.coords), self.eval_chunk)]
        return decode_values(torch.cat(parts))

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        prediction = self.predict()
        self.model.train(was_training)
        h, w, c = self.signal.height, self.signal.width, self.signal.channels
        metrics = {"psnr": psnr(prediction, self.targets),
                   "ssim": ssim(prediction.reshape(h, w, c), self.targets.reshape(h, w, c))}
        if self.keep is not None:
            keep = self.keep.reshape(-1).to(prediction.device)
            metrics["psnr_train_pixels"] = psnr(prediction[keep], self.targets[keep])
            metrics["psnr_heldout"] = psnr(prediction[~keep], self.targets[~keep])
        return metrics


class PoissonObjective(ImageObjective):
    """MSE between the field's derivatives (autograd, twice for the Laplacian) and the image's."""

    cuda_graph_safe = False  # double backward: kept eager

    def __init__(self, model: Field, signal: ImageSignal, convention: str, supervise: str,
                 batch_pixels: int, device: torch.device):
        super().__init__(model, signal, convention, None, batch_pixels, device)
        self.supervise = supervise
        values = encode_values(torch.from_numpy(signal.values)).numpy()  # derivatives in the field's range
        make = image_gradient if supervise == "gradient" else image_laplacian
        self.train_values = make(values, convention).to(device)
        self.offset = torch.zeros(signal.channels, device=device)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        coords, target = self.train_coords, self.train_values
        if self.batch_pixels:
            index = torch.randint(len(coords), (self.batch_pixels,), device=coords.device)
            coords, target = coords[index], target[index]
        coords = coords.clone().requires_grad_(True)
        gradient = field_gradient(self.model(coords), coords)
        estimate = gradient if self.supervise == "gradient" else field_laplacian(gradient, coords)
        return ((estimate - target) ** 2).mean(), {}

    def evaluate(self) -> dict[str, float]:
        prediction = self.predict()
        self.offset = (self.targets - prediction).mean(0)
        aligned = prediction + self.offset
        h, w, c = self.signal.height, self.signal.width, self.signal.channels
        return {"psnr": psnr(aligned, self.targets),
                "ssim": ssim(aligned.reshape(h, w, c), self.targets.reshape(h, w, c))}
