"""mNIF on radiance fields: a mixture of SIRENs maps a 3D point to (RGB, sigma) without view
direction, one learned latent per object (auto-decoding), trained by volume rendering the objects'
posed views (seed 000: "simplified NeRF rendering without ray direction").

What follows the official mNIF code for SRN cars (tackgeun/mNIF: configs/SRNCars128px-...yaml,
scripts/train_stage1_small_SRNCars.sh, src/models/stage1/nerf/helper.py, main_stage1_autodecoding.py):
- the field: K 256 experts, width 64, 4 hidden layers, w0 30, latent 128, linear output layer
  (`outermost_linear` for 'scene'), raw points in, no positional encoding;
- auto-decoding: a table of per-object latents that starts at zero; a latent penalty
  (`weight_decay_inner` 1.0: 0.5 ||z||^2 summed over the batch of 8, next to an MSE on [-1, 1] colours);
- colours: no activation, in the [-1, 1] range of their data; here c = 0.5 + 0.5 * raw, the same map
  seen on our [0, 1] images (compositing is affine in colour and background, so it is the same model);
- density: sigma = clip(elu(raw, alpha=0.1) + 0.1, 0, 10) ('elu', MAX_DENSITY 10);
- white background, NeRF's compositing with a 1e10 last interval ('baseline' rendering), which is
  `nfields.render.volume.composite`.
Ours, each said where it is set: the coordinate scale, the samples per ray, stratified jitter while
training, Adam on the latent table.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.cameras import orbit_poses
from ..errors import NfieldsError
from ..registry import build_dataclass
from ..render.rays import camera_directions, camera_rays
from ..render.scene import render_view as render_scene_view
from ..render.volume import RayColors, composite, stratified_samples
from .mnif import MNIF_SIZES, MixtureSiren, MNIFConfig

#: Ray samples evaluated per call when many latents are rendered (ours: ~1 GB of activations at width 64).
RENDER_POINTS = 1 << 21


@dataclass
class RadianceMNIFConfig:
    """A mixture radiance field. Defaults: the official SRN-cars stage-1 model (K256 L4 W64 H128)."""

    experts: int = 256
    width: int = 64
    hidden_layers: int = 4
    latent_dim: int = 128
    w0: float = 30.0
    #: Points along each ray. Ours: the official 32 span SRN cars' near-far range of ~1 object diameter; our
    #: near-far range (2 to 6) is 2 object diameters, so 64 keep ~32 samples across the object.
    samples: int = 64
    #: SIREN input = coord_scale * world point. Ours: our objects' longest side is 2 (make_scene's MESH_EXTENT);
    #: SRN cars span ~1 unit (cameras at 1.3, near 0.8, far 1.8), the size the official w0 = 30 was tuned on.
    coord_scale: float = 0.5
    #: The official density cap (MAX_DENSITY), per unit of the scaled coordinates.
    max_density: float = 10.0
    #: Weight of mean_b ||z_b||^2 next to the [0, 1] MSE: the official 0.5 sum_b ||z_b||^2 over a batch of 8
    #: next to an MSE on [-1, 1] colours (4x ours) is 4 mean_b ||z_b||^2 next to 4 MSE, i.e. 1.0 here.
    latent_decay: float = 1.0
    #: Std of the training latents at the start (the official table starts at zero: `std_latent` 0).
    latent_init_std: float = 0.0
    #: The latent table's Adam rate over the field's. Ours, as nfields' auto-decoder (ginr/baselines.py): each
    #: row is updated only when its object is in the batch. (The official code: plain SGD at 1e-4 on the rows.)
    latent_lr_scale: float = 10.0
    #: Fitting a new object's latent (frozen field, from zero): Adam steps, rate, rays per step.
    fit_steps: int = 200
    fit_lr: float = 1e-2
    fit_rays: int = 1024

    def __post_init__(self):
        for name in ("experts", "width", "latent_dim", "samples", "fit_rays"):
            if getattr(self, name) < 1:
                raise NfieldsError(f"mnif option '{name}' must be at least 1, not {getattr(self, name)}.")
        if self.hidden_layers < 0 or self.fit_steps < 0:
            raise NfieldsError("mnif options 'hidden_layers' and 'fit_steps' must not be negative.")
        if self.coord_scale <= 0 or self.max_density <= 0 or self.w0 <= 0:
            raise NfieldsError("mnif options 'coord_scale', 'max_density' and 'w0' must be positive.")
        if self.latent_decay < 0 or self.latent_init_std < 0 or self.latent_lr_scale <= 0 or self.fit_lr <= 0:
            raise NfieldsError("mnif options 'latent_decay', 'latent_init_std' must not be negative and "
                               "'latent_lr_scale', 'fit_lr' must be positive.")

    def mnif(self) -> MNIFConfig:
        """The MixtureSiren's config: a linear output layer (NeRF)."""
        return MNIFConfig(experts=self.experts, width=self.width, hidden_layers=self.hidden_layers,
                          latent_dim=self.latent_dim, w0=self.w0, output_sine=False)


#: S is the official SRN-cars model; L (ours: the paper has no large radiance model) takes MNIF_SIZES' L
#: mixture with the SRN latent size kept at 128 x 4 = 512, L's image latent.
RADIANCE_SIZES: dict[str, dict] = {
    "S": {"experts": 256, "width": 64, "hidden_layers": 4, "latent_dim": 128},
    "L": {"experts": MNIF_SIZES["L"].experts, "width": MNIF_SIZES["L"].width,
          "hidden_layers": MNIF_SIZES["L"].hidden_layers, "latent_dim": MNIF_SIZES["L"].latent_dim},
}


def radiance_config(size: str = "S", **options) -> RadianceMNIFConfig:
    """A size preset (RADIANCE_SIZES) with `options` on top."""
    if size not in RADIANCE_SIZES:
        raise NfieldsError(f"unknown mNIF size '{size}'; choose one of: {', '.join(RADIANCE_SIZES)}.")
    return RadianceMNIFConfig(**{**RADIANCE_SIZES[size], **options})


@dataclass
class RadianceOptions(RadianceMNIFConfig):
    """What `nfields train mnif --dataset scenes:DIR [-o KEY=VALUE]` sets: `size` (S, L) and `adapt` as the image
    method takes them (only auto-decoding here, as the official SRN-cars runs), the RadianceMNIFConfig fields on
    top; experts, width, hidden_layers or latent_dim 0 mean the size's preset, as for the image method (resolved
    here, so a run's config shows the values used)."""

    experts: int = 0
    width: int = 0
    hidden_layers: int = 0
    latent_dim: int = 0
    size: str = "S"
    adapt: str = "autodecode"

    def __post_init__(self):
        if self.adapt != "autodecode":
            raise NfieldsError(f"mNIF trains radiance fields (scenes:) by auto-decoding, as the official SRN-cars "
                               f"code does, not by '{self.adapt}'; use --adapt autodecode or leave it out.")
        if self.size not in RADIANCE_SIZES:
            raise NfieldsError(f"unknown mNIF size '{self.size}'; choose one of: {', '.join(RADIANCE_SIZES)}.")
        for name, preset in RADIANCE_SIZES[self.size].items():
            if getattr(self, name) == 0:
                setattr(self, name, preset)
        super().__post_init__()

    def model_config(self) -> RadianceMNIFConfig:
        return RadianceMNIFConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RadianceMNIFConfig)})


def radiance_options(options: dict) -> RadianceOptions:
    """Command-line options (strings converted, unknown keys refused) -> RadianceOptions."""
    return build_dataclass(RadianceOptions, dict(options), what="mnif on radiance fields")


def radiance_model_from_options(options: dict, objects: int,
                                bounds: RadianceBounds | None = None) -> MixtureRadianceField:
    """The model `nfields train mnif --dataset scenes:DIR [-o KEY=VALUE]` builds (RadianceOptions)."""
    return MixtureRadianceField(radiance_options(options).model_config(), objects, bounds or RadianceBounds())


@dataclass(frozen=True)
class RadianceBounds:
    """Where rays are sampled (near, far along unit directions) and the box the objects fit in; make-scene's
    object sets use near 2, far 6, bound 1.5 (their transforms JSON)."""

    near: float = 2.0
    far: float = 6.0
    bound: float = 1.5


class MixtureRadianceField(nn.Module):
    """Per-object latents (an (objects, latent_dim) table) + a MixtureSiren(3 -> 4): point -> (RGB, sigma).

    `render_rays(latents, origins, directions)` renders rays of B objects, each with its own latent:
    origins and unit directions (B, R, 3) -> RayColors with rgb (B, R, 3), depth and opacity (B, R)."""

    default_lr = 1e-4  # the official lr_outer for SRN cars (AdamW without weight decay there; Adam here)
    needs_index = True  # a latent table: stage 2 takes its rows (train_diffusion.extract_latents)

    def __init__(self, config: RadianceMNIFConfig, objects: int, bounds: RadianceBounds = RadianceBounds()):
        super().__init__()
        if objects < 1:
            raise NfieldsError(f"a radiance mNIF needs at least one training object for its latent table, not "
                               f"{objects}.")
        self.config, self.bounds, self.objects = config, bounds, objects
        self.field = MixtureSiren(3, 4, config.mnif())
        self.latents = nn.Parameter(torch.randn(objects, config.latent_dim) * config.latent_init_std)

    @property
    def device(self) -> torch.device:
        return self.latents.device

    def parameter_groups(self, lr: float) -> list[dict]:
        """Adam's groups: the field at `lr`, the latent table at lr * latent_lr_scale."""
        return [{"params": list(self.field.parameters()), "lr": lr},
                {"params": [self.latents], "lr": lr * self.config.latent_lr_scale}]

    def spec(self) -> dict:
        return {"method": "mnif", "kind": "radiance", "objects": self.objects,
                "config": dataclasses.asdict(self.config), "bounds": dataclasses.asdict(self.bounds)}

    # -- the field ---------------------------------------------------------------------------------
    def query(self, points: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (B, N, 3), latents (B, latent_dim) -> sigma (B, N) per world unit, rgb (B, N, 3) in
        [0, 1] (not clamped: the official colours have no activation)."""
        scale = self.config.coord_scale
        raw = self.field(points * scale, latents)
        rgb = 0.5 + 0.5 * raw[..., :3]  # [-1, 1] -> [0, 1], see the module docstring
        sigma = (F.elu(raw[..., 3], alpha=0.1) + 0.1).clamp(0.0, self.config.max_density)
        # sigma is per unit of the scaled coordinates, where a world length l measures scale * l.
        return sigma * scale, rgb

    def density(self, points: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """sigma >= 0 at world points (B, N, 3) -> (B, N), per world unit."""
        return self.query(points, latents)[0]

    def render_rays(self, latents: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                    near: float | None = None, far: float | None = None, samples: int | None = None,
                    training: bool = False, background: torch.Tensor | None = None) -> RayColors:
        """latents (B, D), origins and unit directions (B, R, 3): `samples` stratified distances in [near, far]
        (jittered when `training`), composited over `background` (white by default, as make-scene's views).
        Returns rgb (B, R, 3), depth and opacity (B, R); no per-sample weights."""
        near = self.bounds.near if near is None else near
        far = self.bounds.far if far is None else far
        samples = samples or self.config.samples
        b, r, _ = origins.shape
        t = stratified_samples(near, far, b * r, samples, training, origins.device)  # (B*R, S)
        points = origins.reshape(-1, 1, 3) + directions.reshape(-1, 1, 3) * t[..., None]
        sigma, rgb = self.query(points.reshape(b, r * samples, 3), latents)
        if background is None:
            background = torch.ones(3, device=origins.device, dtype=origins.dtype)
        out = composite(sigma.reshape(b * r, samples), rgb.reshape(b * r, samples, 3), t, background)
        return RayColors(out.rgb.reshape(b, r, 3), out.depth.reshape(b, r), out.opacity.reshape(b, r))

    def forward(self, index: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Training objects `index` (B,) and their rays (B, R, 3) -> colours (B, R, 3) and the latent penalty
        (a scalar, already weighted), so that a DDP wrapper sees every use of the latent table."""
        latents = self.latents[index]
        colors = self.render_rays(latents, origins, directions, training=training).rgb
        penalty = self.config.latent_decay * latents.pow(2).sum(-1).mean()
        return colors, penalty

    # -- whole views -------------------------------------------------------------------------------
    def render_view(self, latent: torch.Tensor, pose: torch.Tensor, height: int, width: int, focal: float,
                    chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One latent (D,) seen from a camera-to-world pose (4, 4): colour (H, W, 3) in [0, 1], depth and
        opacity (H, W); deterministic samples, `chunk` rays at a time (nfields.render.scene.render_view)."""
        return render_scene_view(_LatentView(self, latent), pose, height, width, focal, chunk)

    @torch.no_grad()
    def render_latents(self, latents: torch.Tensor, poses: torch.Tensor, height: int, width: int, focal: float,
                       points: int = RENDER_POINTS) -> torch.Tensor:
        """Latents (N, D) from V predefined poses (V, 4, 4) -> (N, V, H, W, 3) in [0, 1] on the latents' device
        (FID of renders). Deterministic samples, as `render_view`; many latents share each call (one mixed
        SIREN each), at most `points` ray samples per call (bounded memory)."""
        was_training = self.training
        self.eval()
        latents = latents.to(self.device)
        n, v, pixels, samples = latents.shape[0], poses.shape[0], height * width, self.config.samples
        origins, directions = camera_rays(poses.to(self.device, torch.float32), height, width, focal)
        origins, directions = origins.reshape(v, pixels, 3), directions.reshape(v, pixels, 3)
        group = max(1, min(n, points // (pixels * samples)))  # latents per call
        chunk = max(1, points // (group * samples))  # rays per latent per call
        out = torch.empty(n, v, pixels, 3, device=self.device)
        try:
            for view in range(v):
                for start in range(0, n, group):
                    z = latents[start:start + group]
                    for r in range(0, pixels, chunk):
                        o = origins[view, r:r + chunk].expand(len(z), -1, -1)
                        d = directions[view, r:r + chunk].expand(len(z), -1, -1)
                        out[start:start + group, view, r:r + chunk] = self.render_rays(z, o, d).rgb.clamp(0, 1)
        finally:
            self.train(was_training)
        return out.reshape(n, v, height, width, 3)

    def render_orbit(self, latent: torch.Tensor, frames: int, height: int, width: int, focal: float,
                     radius: float = 4.0, elevation: float = 30.0, chunk: int = 8192) -> np.ndarray:
        """(frames, H, W, 3) float in [0, 1]: a circle of cameras around the object (`cameras.orbit_poses`, as
        `nfields render --orbit` uses), for `nfields.data.video.write_video` after `viz.to_uint8`."""
        if frames < 1:
            raise NfieldsError(f"an orbit needs at least one frame, not {frames}.")
        poses = torch.tensor(orbit_poses(frames, elevation, radius), dtype=torch.float32)
        return np.stack([self.render_view(latent, pose, height, width, focal, chunk)[0].cpu().numpy()
                         for pose in poses])

    # -- new objects -------------------------------------------------------------------------------
    def fit_latents(self, origins: torch.Tensor, directions: torch.Tensor, colors: torch.Tensor,
                    steps: int | None = None, lr: float | None = None, rays: int | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, D) for B new objects from their rays (B, N, 3) and colours (B, N, 3): from zero, Adam on
        MSE + the latent penalty with the field frozen (only the latents get gradients), `rays` of the N drawn
        at random per step. Training-mode jitter, as in training."""
        cfg = self.config
        steps = cfg.fit_steps if steps is None else steps
        lr, rays = lr or cfg.fit_lr, rays or cfg.fit_rays
        b, n, _ = origins.shape
        latents = torch.zeros(b, cfg.latent_dim, device=origins.device, requires_grad=True)
        optimizer = torch.optim.Adam([latents], lr=lr)
        for _ in range(steps):
            pick = torch.randint(0, n, (b, min(rays, n)), device=origins.device, generator=generator)
            take = pick[..., None].expand(-1, -1, 3)
            predicted = self.render_rays(latents, origins.gather(1, take), directions.gather(1, take),
                                         training=True).rgb
            loss = (predicted - colors.gather(1, take)).pow(2).mean(1).sum() / b
            loss = loss + cfg.latent_decay * latents.pow(2).sum(-1).mean()
            (grad,) = torch.autograd.grad(loss, [latents])  # the field's .grad stays untouched
            latents.grad = grad
            optimizer.step()
        return latents.detach()


class _LatentView(nn.Module):
    """A MixtureRadianceField with one latent fixed, in the SceneField interface that
    `nfields.render.scene.render_view` renders (render_rays(origins, directions, background, training))."""

    def __init__(self, model: MixtureRadianceField, latent: torch.Tensor):
        super().__init__()
        self.model = model
        self.latent = latent.detach().reshape(1, -1).to(model.device)

    def render_rays(self, origins, directions, background, training: bool) -> RayColors:
        out = self.model.render_rays(self.latent, origins[None], directions[None], training=training,
                                     background=background)
        return RayColors(out.rgb[0], out.depth[0], out.opacity[0])


def pixel_rays(poses: torch.Tensor, height: int, width: int, focal: float,
               pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera origins and unit directions of single pixels: camera-to-world poses (..., 4, 4) and flat pixel
    indices (row * W + column) of the same shape (...) -> two (..., 3) tensors; the rays of
    `nfields.render.rays.camera_rays` at those pixels (ObjectViews.pixel_rays gives them as Plücker
    coordinates, which lose the camera's position along the ray that near and far are measured from)."""
    local = camera_directions(height, width, focal, poses.device, poses.dtype).reshape(-1, 3)[pixels]
    directions = (poses[..., :3, :3] @ local[..., None]).squeeze(-1)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return poses[..., :3, 3].expand(directions.shape), directions


def camera_angle(width: int, focal: float) -> float:
    """The horizontal field of view (radians) of a camera `width` pixels wide with `focal` pixels."""
    return 2.0 * math.atan(0.5 * width / focal)


def radiance_field_from_spec(spec: dict) -> MixtureRadianceField:
    """Rebuild (untrained weights) from `MixtureRadianceField.spec()`."""
    return MixtureRadianceField(RadianceMNIFConfig(**spec["config"]), spec["objects"],
                                RadianceBounds(**spec["bounds"]))
