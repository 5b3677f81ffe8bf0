"""instant-NGP's radiance field (Müller et al. 2022, NeRF section), in plain PyTorch.

A multi-resolution hash encoding of the position feeds a small density MLP; its 16 outputs and the
view direction in spherical harmonics feed a small colour MLP. Rays are marched with a fixed step
and only the samples in cells that an occupancy grid marks occupied reach the network; they are
composited as a packed list (`composite_packed`). No Python loop runs over rays, no custom CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...encodings import HashGridEncoding
from ...registry import AT_LEAST_ONE, NOT_NEGATIVE, Limits
from ...render.volume import RayColors, composite_packed, optical_depth_before, ray_box
from .base import SCENE_FIELDS, SceneField
from .occupancy import OccupancyGrid

#: Rays are sampled in slices of at most this many candidate steps (bounds the marcher's memory).
CANDIDATE_CHUNK = 1 << 24
#: Points per network call where nothing is back-propagated (grid refresh, `density`, evaluation).
EVAL_CHUNK = 1 << 18


class _TruncExp(torch.autograd.Function):
    """exp with instant-NGP's guard: the gradient is exp(clamp(x, -15, 15)) (network_to_density_derivative).
    The forward clamps at 15 too (ours: an inf density would turn the packed running sum into nan)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=15.0))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15.0, 15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def spherical_harmonics(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics of degree < 4 (16 values) of unit directions (N, 3), in tiny-cuda-nn's
    order and signs. instant-NGP feeds (d + 1) / 2 and tiny-cuda-nn maps it back with 2x - 1, so the
    basis is evaluated on the unit direction itself."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    k = 1.0 / math.sqrt(math.pi)
    c1, c2, c3 = math.sqrt(3) / 2 * k, math.sqrt(15) / 2 * k, math.sqrt(5) / 4 * k
    c4, c5, c6 = math.sqrt(70) / 8 * k, math.sqrt(105) / 2 * k, math.sqrt(42) / 8 * k
    c7 = math.sqrt(7) / 4 * k
    return torch.stack([
        torch.full_like(x, 0.5 * k),
        -c1 * y, c1 * z, -c1 * x,
        c2 * x * y, -c2 * y * z, c3 * (3 * zz - 1), -c2 * x * z, 0.5 * c2 * (xx - yy),
        c4 * y * (yy - 3 * xx), c5 * x * y * z, c6 * y * (1 - 5 * zz), c7 * z * (5 * zz - 3),
        c6 * x * (1 - 5 * zz), 0.5 * c5 * z * (xx - yy), c4 * x * (3 * yy - xx),
    ], -1)


def _mlp(in_features: int, out_features: int, width: int, hidden_layers: int, bias: bool) -> nn.Sequential:
    """`hidden_layers` hidden layers of `width` ReLU units (tiny-cuda-nn's count), Xavier-uniform weights
    as tiny-cuda-nn initialises them, zero biases when there are any."""
    sizes = [in_features] + [width] * hidden_layers + [out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b, bias=bias)
        nn.init.xavier_uniform_(linear.weight)
        if bias:
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class PackedSamples:
    """Samples along rays as flat lists, grouped by ray and in order along each one."""

    t: torch.Tensor  # (P,) distance along the ray
    deltas: torch.Tensor  # (P,) interval length each sample stands for
    ray_index: torch.Tensor  # (P,) long, non-decreasing
    step: torch.Tensor  # (P,) long, which step of the ray's march (0 at its start)

    def __len__(self) -> int:
        return self.t.shape[0]

    def select(self, mask_or_index: torch.Tensor) -> "PackedSamples":
        return PackedSamples(self.t[mask_or_index], self.deltas[mask_or_index], self.ray_index[mask_or_index],
                             self.step[mask_or_index])


@dataclass
class HashGridSceneConfig:
    levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 0  # finest level N_max; 0: instant-NGP's rule for NeRF scenes, 2048 * bound
    width: int = 64
    geometry_features: int = 16  # density-MLP outputs: log-density first, all 16 go to the colour MLP
    density_hidden_layers: int = 1
    color_hidden_layers: int = 2
    bias: bool = False  # tiny-cuda-nn's fully fused MLPs have no biases
    grid_resolution: int = 128
    grid_every: int = 16  # refresh the occupancy grid every this many steps
    grid_warmup: int = 256  # before this step a refresh visits every cell
    grid_decay: float = 0.95
    grid_threshold: float = 0.01  # optical thickness of one step below which a cell counts as empty
    march_steps: int = 1024  # steps along the box's diagonal: dt = 2 sqrt(3) bound / march_steps
    max_samples: int = 1 << 19  # training samples per batch (~9 GB of activations here); more: coarser step
    early_stop: float = 1e-4  # training: drop samples behind transmittance below this (0: off)

    limits: ClassVar[dict[str, Limits]] = {
        "levels": AT_LEAST_ONE, "features_per_level": AT_LEAST_ONE, "log2_table_size": Limits(1, 24),
        "base_resolution": AT_LEAST_ONE, "max_resolution": NOT_NEGATIVE, "width": AT_LEAST_ONE,
        "geometry_features": AT_LEAST_ONE, "density_hidden_layers": NOT_NEGATIVE, "color_hidden_layers": NOT_NEGATIVE,
        "grid_resolution": AT_LEAST_ONE, "grid_every": AT_LEAST_ONE, "grid_warmup": NOT_NEGATIVE,
        "grid_decay": Limits(0, 1), "grid_threshold": NOT_NEGATIVE, "march_steps": AT_LEAST_ONE,
        "max_samples": AT_LEAST_ONE, "early_stop": Limits(0, 1)}


@SCENE_FIELDS.register("hashgrid", HashGridSceneConfig)
class HashGridSceneField(SceneField):
    """instant-NGP: hash encoding (L=16, F=2, T=2^19, N_min=16, N_max=2048 * bound), density MLP 1 x 64
    -> 16 (sigma = exp of the first), colour MLP on those 16 + SH(direction) 2 x 64 -> 3 (sigmoid),
    occupancy grid 128^3, fixed step sqrt(3)/1024 of the unit cube scaled to our box."""

    default_lr = 1e-2

    def __init__(self, config: HashGridSceneConfig, bounds):
        super().__init__(config, bounds)
        bound = bounds.bound
        finest = config.max_resolution or 2048 * bound
        growth = math.exp((math.log(finest) - math.log(config.base_resolution)) / max(config.levels - 1, 1))
        self.encoding = HashGridEncoding(3, config.levels, config.log2_table_size, config.features_per_level,
                                         config.base_resolution, growth)
        self.density_net = _mlp(self.encoding.out_features, config.geometry_features, config.width,
                                config.density_hidden_layers, config.bias)
        self.color_net = _mlp(config.geometry_features + 16, 3, config.width, config.color_hidden_layers,
                              config.bias)
        # instant-NGP's constant step for synthetic scenes is sqrt(3)/1024 of its unit cube; our cube has
        # side 2 * bound, so one march along the diagonal takes `march_steps` steps.
        self.step_size = 2.0 * math.sqrt(3.0) * bound / config.march_steps
        self.max_steps = config.march_steps + 1
        # The grid stores density; instant-NGP thresholds optical thickness sigma * dt, the same test.
        self.grid = OccupancyGrid(config.grid_resolution, bound, config.grid_threshold / self.step_size,
                                  config.grid_decay)

    # --- the network -------------------------------------------------------------------------
    def geometry(self, points: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) -> the density MLP's (N, geometry_features) outputs (log-density first)."""
        return self.density_net(self.encoding(points / self.bounds.bound))

    def _shade(self, points: torch.Tensor, sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        geometry = self.geometry(points)
        sigma = trunc_exp(geometry[:, 0])
        rgb = torch.sigmoid(self.color_net(torch.cat([geometry, sh], -1)))
        return sigma, rgb

    def _sigma(self, points: torch.Tensor) -> torch.Tensor:
        return trunc_exp(self.geometry(points)[:, 0])

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """sigma at world points (N, 3) -> (N,), zero outside [-bound, bound]^3."""
        parts = []
        for chunk in points.split(EVAL_CHUNK):
            inside = (chunk.abs() <= self.bounds.bound).all(-1)
            parts.append(torch.where(inside, self._sigma(chunk), torch.zeros_like(chunk[:, 0])))
        return torch.cat(parts) if parts else points.new_zeros(0)

    # --- training housekeeping -----------------------------------------------------------------
    def before_step(self, step: int) -> None:
        cfg = self.config
        if step % cfg.grid_every == 0:
            self.grid.update(self._sigma, all_cells=step < cfg.grid_warmup, chunk=EVAL_CHUNK)

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        # instant-NGP's Adam: betas (0.9, 0.99), eps 1e-15, L2 1e-6 on the MLP weights only (tiny-cuda-nn's
        # l2_reg skips the hash table). Plain Adam: it also moves table entries a batch did not touch.
        mlp = [p for name, p in self.named_parameters() if not name.startswith("encoding.")]
        table = list(self.encoding.parameters())
        return torch.optim.Adam([{"params": mlp, "weight_decay": 1e-6}, {"params": table, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.99), eps=1e-15)

    # --- ray marching ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_rays(self, origins: torch.Tensor, directions: torch.Tensor, training: bool) -> PackedSamples:
        """March each ray from where it enters the box (and `near`) to where it leaves (or `far`) with the
        fixed step, the start jittered by U(0, dt) in training (the middle of the first step otherwise);
        keep the samples whose grid cell is occupied."""
        bounds, dt = self.bounds, self.step_size
        entry, exit_ = ray_box(origins, directions, bounds.bound)
        start = entry.clamp(min=bounds.near)
        end = exit_.clamp(max=bounds.far)
        offset = torch.rand_like(start) if training else torch.full_like(start, 0.5)
        start = start + offset * dt
        counts = torch.ceil((end - start) / dt).clamp(0, self.max_steps).long()  # steps with t < end
        pieces = []
        rays_per_chunk = max(1, CANDIDATE_CHUNK // self.max_steps)
        for lo in range(0, origins.shape[0], rays_per_chunk):
            hi = lo + rays_per_chunk
            pieces.append(self._march(origins[lo:hi], directions[lo:hi], start[lo:hi], counts[lo:hi], lo))
        t, step, ray = (torch.cat(parts) for parts in zip(*pieces)) if pieces else (
            origins.new_zeros(0), counts.new_zeros(0), counts.new_zeros(0))
        return PackedSamples(t, torch.full_like(t, dt), ray, step)

    def _march(self, origins, directions, start, counts, first_ray: int):
        """Candidates of one slice of rays as flat lists (no per-ray loop), filtered by one grid gather."""
        total = int(counts.sum())
        device = origins.device
        if total == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return origins.new_zeros(0), empty, empty
        ray = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts, output_size=total)
        step = torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts)[ray]
        t = start[ray] + step.to(start.dtype) * self.step_size
        keep = self.grid.occupied_at(torch.addcmul(origins[ray], directions[ray], t[:, None])).nonzero().squeeze(1)
        return t[keep], step[keep], ray[keep] + first_ray

    @torch.no_grad()
    def _early_stop(self, samples: PackedSamples, origins, directions, rays: int) -> PackedSamples:
        """Drop the samples that light reaches with transmittance below `early_stop` (one density-only pass
        without gradients; instant-NGP also stops a ray there)."""
        ray = samples.ray_index
        points = torch.addcmul(origins[ray], directions[ray], samples.t[:, None])
        sigma = torch.cat([self._sigma(chunk) for chunk in points.split(EVAL_CHUNK)])
        depth = optical_depth_before(sigma * samples.deltas, ray, rays)
        return samples.select(depth < -math.log(self.config.early_stop))

    def _thin(self, samples: PackedSamples) -> PackedSamples:
        """At most `max_samples`: keep every s-th step of each ray (random phase per ray), each then
        standing for s * dt. Ours, to bound memory (it only bites while the grid still marks most cells
        occupied); instant-NGP instead fits fewer rays in a batch."""
        cap = self.config.max_samples
        if len(samples) <= cap:
            return samples
        stride = math.ceil(len(samples) / cap)
        phase = torch.randint(0, 1 << 30, (int(samples.ray_index.max()) + 1,), device=samples.t.device)
        while True:
            keep = (samples.step + phase[samples.ray_index]) % stride == 0
            if int(keep.sum()) <= cap:
                break
            stride += 1
        thinned = samples.select(keep)
        thinned.deltas = thinned.deltas * stride
        return thinned

    def render_rays(self, origins: torch.Tensor, directions: torch.Tensor, background: torch.Tensor,
                    training: bool) -> RayColors:
        rays = origins.shape[0]
        samples = self.sample_rays(origins, directions, training)
        if training:
            samples = self._thin(samples)  # first, so the early-stop pass never sees more than the cap
            if self.config.early_stop > 0 and len(samples):
                samples = self._early_stop(samples, origins, directions, rays)
        ray = samples.ray_index
        points = torch.addcmul(origins[ray], directions[ray], samples.t[:, None])
        sh = spherical_harmonics(directions)[ray]
        if training:
            sigma, rgb = self._shade(points, sh)
        else:  # nothing to back-propagate through: bounded memory for any number of samples
            shaded = [self._shade(p, s) for p, s in zip(points.split(EVAL_CHUNK), sh.split(EVAL_CHUNK))]
            sigma, rgb = (torch.cat(parts) for parts in zip(*shaded)) if shaded else self._shade(points, sh)
        return composite_packed(sigma, rgb, samples.t, samples.deltas, ray, rays, background)
