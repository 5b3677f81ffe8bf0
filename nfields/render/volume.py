"""Volume rendering (NeRF, Eq. 3): alpha compositing of densities and colours along rays.

`composite` works on a dense (rays, samples) layout, `composite_packed` on a flat list of samples
with the ray each belongs to (so empty space can be skipped, as instant-NGP and nerfacc do).
Directions are unit vectors, so distances along a ray are in world units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: NeRF's length of the last interval (the ray continues to infinity).
FAR_INTERVAL = 1e10


@dataclass
class RayColors:
    rgb: torch.Tensor  # (R, 3), background already added
    depth: torch.Tensor  # (R,) expected termination distance, sum_i w_i t_i
    opacity: torch.Tensor  # (R,) sum_i w_i
    weights: torch.Tensor | None = None  # (R, S) for the dense layout
    #: Further colour predictions the loss also supervises (NeRF's coarse network).
    auxiliary: tuple[torch.Tensor, ...] = ()


def stratified_samples(near: float, far: float, rays: int, samples: int, jitter: bool,
                       device=None) -> torch.Tensor:
    """(rays, samples) distances: evenly spaced from near to far, each jittered within its bin when training."""
    t = torch.linspace(near, far, samples, device=device).expand(rays, samples)
    if not jitter:
        return t.contiguous()
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper = torch.cat([mids, t[:, -1:]], -1)
    lower = torch.cat([t[:, :1], mids], -1)
    return lower + (upper - lower) * torch.rand_like(t)


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
              background: torch.Tensor | None = None) -> RayColors:
    """sigma (R, S) >= 0, rgb (R, S, 3), sample distances t (R, S) sorted along each ray."""
    deltas = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], FAR_INTERVAL)], -1)
    alpha = 1.0 - torch.exp(-sigma * deltas)
    # Exclusive product of (1 - alpha): the light that reaches sample i (1e-10 as in NeRF's code).
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * transmittance
    color = (weights[..., None] * rgb).sum(1)
    opacity = weights.sum(1)
    if background is not None:
        color = color + (1.0 - opacity[:, None]) * background
    return RayColors(color, (weights * t).sum(1), opacity, weights)


def composite_packed(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, deltas: torch.Tensor,
                     ray_index: torch.Tensor, rays: int, background: torch.Tensor | None = None) -> RayColors:
    """Samples as flat lists (P,) grouped by ray in order along it: sigma, rgb (P, 3), distance t,
    interval length `deltas` and the ray each belongs to (`ray_index`, non-decreasing)."""
    tau = sigma * deltas
    transmittance = torch.exp(-optical_depth_before(tau, ray_index, rays)).to(sigma.dtype)
    weights = transmittance * (1.0 - torch.exp(-tau))
    color = torch.zeros(rays, 3, dtype=rgb.dtype, device=rgb.device).index_add_(0, ray_index, weights[:, None] * rgb)
    opacity = torch.zeros(rays, dtype=sigma.dtype, device=sigma.device).index_add_(0, ray_index, weights)
    depth = torch.zeros(rays, dtype=sigma.dtype, device=sigma.device).index_add_(0, ray_index, weights * t)
    if background is not None:
        color = color + (1.0 - opacity[:, None]) * background
    return RayColors(color, depth, opacity)


def optical_depth_before(tau: torch.Tensor, ray_index: torch.Tensor, rays: int) -> torch.Tensor:
    """Packed samples: each one's optical depth sum_{j < i} tau_j along its own ray (float64).

    A global running sum minus the sum before the ray's first sample; float64, since the running
    sum over millions of samples would lose the small terms."""
    before = torch.cumsum(tau.double(), 0) - tau.double()
    start = torch.full((rays,), float("inf"), dtype=before.dtype, device=before.device)
    return before - start.scatter_reduce(0, ray_index, before, reduce="amin")[ray_index]


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, samples: int, deterministic: bool) -> torch.Tensor:
    """Hierarchical sampling (NeRF §5.2): `samples` distances per ray drawn from the piecewise-constant
    distribution with `weights` (R, B) on the intervals `bins` (R, B + 1), by inverse transform."""
    weights = weights + 1e-5  # NeRF's code: keeps the pdf defined where all weights vanish
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, samples, device=bins.device).expand(bins.shape[0], samples)
    else:
        u = torch.rand(bins.shape[0], samples, device=bins.device)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    span = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / span * (bin_hi - bin_lo)


def ray_box(origins: torch.Tensor, directions: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the cube [-bound, bound]^3 (exit < entry: a miss)."""
    inverse = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    a = (-bound - origins) * inverse
    b = (bound - origins) * inverse
    entry = torch.minimum(a, b).amax(-1).clamp(min=0.0)
    exit_ = torch.maximum(a, b).amin(-1)
    return entry, exit_
