"""The two ways a latent-vector method gets an instance's latent, shared by functa, the auto-decoder and mNIF.

- `MetaSGDLatents`: CAVIA (Zintgraf et al. 2019) with meta-SGD rates (Li et al. 2017), as functa and mNIF's
  "cavia" adaptation use it: a few gradient steps on the latent from zero, meta-learned end to end.
- `LatentTable`: auto-decoding (DeepSDF, Park et al. 2019; mNIF's "autodecode"): a learned latent per training
  instance; a new instance's latent is optimised with the decoder frozen.

Both are mixins over `LatentVectorINR`, which gives them an instance's coordinates and values (`fit_targets`)
and the loss latents are fitted with (`latent_loss`). A method combines one of them with its decoder:
`class Functa(MetaSGDLatents, LatentINR)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NfieldsError
from .model import DataSpec, GeneralizableINR


@dataclass
class MetaSGDSettings:
    """CAVIA's settings. functa and mNIF: 3 inner steps, meta-SGD rates U(0.005, 0.1) clipped to [0, 1]."""

    inner_steps: int = 3
    meta_sgd: bool = True  # learned per-dimension inner learning rates; False: plain SGD at inner_lr
    inner_lr: float = 1e-2  # only without meta-SGD (functa's opt_inner; mNIF's lr_inner default)

    def check_meta_sgd(self, method: str) -> None:
        if self.inner_steps < 1:
            raise NfieldsError(f"{method} option 'inner_steps' must be at least 1, got {self.inner_steps}.")


@dataclass
class LatentTableSettings:
    """Auto-decoding's settings (DeepSDF's, scaled as measured in `baselines.AutoDecoder`)."""

    latent_init_std: float = 0.01  # DeepSDF: training latents start N(0, 0.01^2)
    fit_steps: int = 100  # Adam steps fitting a new instance's latent (from zeros), decoder frozen
    fit_lr: float = 1e-2
    latent_lr_scale: float = 10.0  # the latent table's learning rate over the decoder's

    def check_latent_table(self, method: str) -> None:
        if self.fit_steps < 1:
            raise NfieldsError(f"{method} option 'fit_steps' must be at least 1, got {self.fit_steps}.")


def per_instance_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each instance's mean squared error, so each latent's gradient ignores batch size."""
    return (prediction - target).pow(2).flatten(1).mean(1).sum()


class LatentVectorINR(GeneralizableINR):
    """A latent vector (config.latent_dim) per instance, decoded by a shared field; instances are single images
    (B, H, W, C) or voxel grids (B, D, H, W, C) on the DataSpec's grid."""

    def fit_targets(self, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, *grid, C) instances -> their (B, N, dims) grid coordinates and (B, N, C) values."""
        grid = self.data.image_size
        if instances.dim() != len(grid) + 2:
            if len(grid) == 2:
                raise NfieldsError(f"{self.method} works on single images, not support views: expected (B, H, W, C) "
                                   f"images, got shape {tuple(instances.shape)}; use a token method for light fields.")
            raise NfieldsError(f"{self.method} was built for {len(grid)}-D grids, (B, {', '.join(map(str, grid))}, C), "
                               f"but got shape {tuple(instances.shape)}.")
        b, c = instances.shape[0], instances.shape[-1]
        if c != self.data.out_features or self.data.in_features != len(grid):
            raise NfieldsError(f"{self.method} was built for {self.data.out_features}-channel images on "
                               f"{len(grid)}D coordinates but got {c}-channel images; build it with the images' "
                               f"channels.")
        return self.coords(b, shape=instances.shape[1:-1]), instances.reshape(b, -1, c).to(self.device)

    def latent_loss(self, latents: torch.Tensor, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss latents are fitted with (methods whose field works on another value scale override it)."""
        return per_instance_loss(self.decode(latents, coords), target)

    def zero_latents(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.config.latent_dim, device=self.device, requires_grad=True)


class MetaSGDLatents(LatentVectorINR):
    """CAVIA with meta-SGD: latent = `inner_steps` steps from zero on `latent_loss`, z <- z - clamp(lr, 0, 1) * grad.

    In training mode (with grad enabled) the steps keep their graph (create_graph), so the trainer's loss on the
    result trains the decoder and the learned rates through the inner loop (second order); otherwise the steps
    are first order and the latents come back detached. Given `targets` (the values at `coords`, as the trainer
    passes them), the inner loop fits exactly the points the outer loss sees, as functa and mNIF do."""

    def __init__(self, data: DataSpec, config: MetaSGDSettings):
        super().__init__(data, config)
        if config.meta_sgd:  # functa's MetaSGDLrs (mNIF's too): U(0.005, 0.1) per latent dimension
            self.inner_lrs = nn.Parameter(torch.empty(config.latent_dim).uniform_(0.005, 0.1))
        else:
            self.inner_lrs = None

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.adapt(*self.fit_targets(images))

    def forward(self, images: torch.Tensor, coords: torch.Tensor, index: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            return super().forward(images, coords, index)
        return self.decode(self.adapt(coords, targets.to(self.device)), coords)

    def adapt(self, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents fitted to (B, N, C) target values at (B, N, dims) coords."""
        second_order = self.training and torch.is_grad_enabled()
        lrs = self.inner_lrs.clamp(0, 1) if self.inner_lrs is not None else self.config.inner_lr
        latents = self.zero_latents(target.shape[0])
        with torch.enable_grad():
            for _ in range(self.config.inner_steps):
                grad, = torch.autograd.grad(self.latent_loss(latents, coords, target), latents,
                                            create_graph=second_order)
                latents = latents - lrs * grad
                if not second_order:
                    latents = latents.detach().requires_grad_()
        return latents if second_order else latents.detach()


class LatentTable(LatentVectorINR):
    """Auto-decoding: training `encode(images, index)` is row `index` of a learned (instances, latent_dim) table.
    Evaluation (`model.eval()`): a new latent is fitted from zeros by `fit_steps` Adam steps at `fit_lr` on
    `latent_loss` with the decoder frozen. DeepSDF's latent-norm penalty (1e-4 ||z||^2 in training) is left
    out: the trainer computes the loss from the decoded values only."""

    needs_index = True

    def __init__(self, data: DataSpec, config: LatentTableSettings):
        super().__init__(data, config)
        if data.instances < 1:
            raise NfieldsError(f"{self.method} needs the training-set size for its latent table: build it with "
                               "DataSpec(..., instances=N), N the number of training instances.")
        self.latents = nn.Parameter(torch.randn(data.instances, config.latent_dim) * config.latent_init_std)

    def parameter_groups(self, lr: float) -> list[dict]:
        # Each row is updated once per epoch, so the table learns `latent_lr_scale` times faster.
        rest = [p for name, p in self.named_parameters() if name != "latents"]
        return [{"params": rest, "lr": lr}, {"params": [self.latents], "lr": lr * self.config.latent_lr_scale}]

    def encode(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        coords, target = self.fit_targets(images)
        if self.training:
            if index is None:
                raise NfieldsError(f"{self.method} looks training latents up by dataset index: call it with "
                                   "index=(B,) dataset indices in training mode, or call model.eval() to fit "
                                   "latents to new instances.")
            index = torch.as_tensor(index, device=self.device).long().reshape(-1)
            if index.numel() != images.shape[0] or (index < 0).any() or (index >= len(self.latents)).any():
                raise NfieldsError(f"{self.method} needs one index in [0, {len(self.latents)}) per instance, got "
                                   f"{index.tolist()} for {images.shape[0]} instances.")
            return self.latents[index]
        return self.fit(coords, target)

    def fit(self, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Detached (B, latent_dim) latents fitted to (B, N, C) target values at coords; only the latents get
        gradients (the decoder's .grad are left untouched)."""
        latents = self.zero_latents(target.shape[0])
        optimizer = torch.optim.Adam([latents], lr=self.config.fit_lr)
        with torch.enable_grad():
            for _ in range(self.config.fit_steps):
                latents.grad, = torch.autograd.grad(self.latent_loss(latents, coords, target), latents)
                optimizer.step()
        return latents.detach()

