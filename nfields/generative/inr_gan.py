"""INR-GAN (Skorokhodov, Ignatyev and Elhoseiny, CVPR 2021): images as coordinate-based networks
whose weights a hypernetwork generates.

- A mapping network z -> w (StyleGAN2's: 2nd-moment normalisation, equalised-lr leaky-ReLU layers
  with a 0.01 learning-rate multiplier, a running mean of w for truncation).
- The INR is a stack of per-point linear layers on (y, x) coordinates. Each layer's weight is one
  shared matrix modulated per sample by factorized multiplicative modulation (FMM): the hypernetwork
  (an affine map of w) predicts A (out x r) and B (r x in), W = W_shared * (A B / sqrt(r) + 1), and
  each output row of W is L2-normalised (demodulated) so the signal keeps its scale through depth.
- Multi-scale INR: levels at growing lattice resolutions (frame / 2^(L-1), ..., frame), each
  concatenating the coarser level's features, nearest-upsampled, with its own Fourier coordinate
  embedding (INR-GAN's logarithmic basis: horizontal, vertical and both diagonal waves at 2^k
  frequencies, plus random Fourier features), and adding its own to-RGB output (StyleGAN2's skip).
- Nearest upsampling on any grid (ours): a coarse level is a piecewise-constant function on its
  lattice of cells of width 2/n (continuing past [-1, 1]); a query point takes its cell's features,
  which is exactly `interpolate(mode="nearest")` on the training grid and defines super-resolution,
  arbitrary regions and extrapolation with one rule.
- A StyleGAN2-style ResNet discriminator and the non-saturating logistic loss with R1 on reals.

Shapes: coordinates (N, 2) or (B, N, 2) as (y, x); images (B, H, W, C) channels-last, values in
[-1, 1] (StyleGAN's range) before `to_unit`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.grid import region_axis
from ..errors import NfieldsError

LRELU_GAIN = math.sqrt(2.0)  # keeps the second moment through leaky ReLU(0.2), as StyleGAN2's def_gain


@dataclass
class InrGanConfig:
    """The generator's and the discriminator's sizes (ours, small enough for minutes at 64^2; the
    paper's are in the comments)."""

    latent: int = 256  # z (paper: 512)
    style: int = 256  # w (paper: 512)
    mapping_layers: int = 2  # StyleGAN2-ADA's low-resolution setting (INR-GAN / StyleGAN2: 8)
    mapping_lr: float = 0.01  # learning-rate multiplier of the mapping network (StyleGAN2)
    levels: int = 3  # lattices frame/4, frame/2, frame (INR-GAN at 256^2: 32, 64, 128, 256)
    width: int = 256  # coarsest level's width, halved per finer level ...
    min_width: int = 64  # ... down to this
    layers: int = 2  # FMM layers per level (INR-GAN: conv0 + conv1 per block)
    rank: int = 10  # FMM rank (INR-GAN)
    random_features: int = 32  # random Fourier features per level, besides the logarithmic basis
    fourier_scale: float = math.sqrt(10.0)  # their std (INR-GAN's CoordFuser default)
    d_width: int = 64  # discriminator channels at full resolution, doubled per halving ...
    d_max_width: int = 256  # ... up to this
    mbstd_group: int = 4  # minibatch-stddev group size (StyleGAN2)

    def validate(self) -> None:
        for name in ("latent", "style", "mapping_layers", "levels", "width", "min_width", "layers", "rank",
                     "d_width", "d_max_width", "mbstd_group"):
            if getattr(self, name) <= 0:
                raise NfieldsError(f"INR-GAN option {name} must be positive, not {getattr(self, name)}.")
        if self.random_features < 0 or not self.mapping_lr > 0 or not self.fourier_scale > 0:
            raise NfieldsError("INR-GAN options random_features, mapping_lr and fourier_scale must not be negative "
                               "(the last two positive).")

    def level_widths(self) -> list[int]:
        return [max(self.width >> level, self.min_width) for level in range(self.levels)]


# -- equalised-learning-rate layers (StyleGAN2): weights ~ N(0, 1), scaled at run time ------------------

class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


class EqualConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


# -- generator --------------------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    def __init__(self, latent: int, style: int, layers: int, lr_multiplier: float, w_avg_beta: float = 0.995):
        super().__init__()
        sizes = [latent] + [style] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_multiplier=lr_multiplier, activation=True)
                                   for a, b in zip(sizes[:-1], sizes[1:])])
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(style))  # for the truncation trick

    def forward(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        z = z * z.square().mean(1, keepdim=True).add(1e-8).rsqrt()  # z on the sphere of radius sqrt(dim)
        w = self.net(z)
        if self.training:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w if truncation == 1.0 else self.w_avg.lerp(w, truncation)


def fmm_weights(shared: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample weights (B, out, in): W_shared * (A B / sqrt(r) + 1), each row L2-normalised.

    `shared` (out, in), `a` (B, out, r), `b` (B, r, in). Dividing by sqrt(r) keeps A B ~ N(0, 1) when the
    factors are; the +1 makes a zero modulation the shared weight itself (INR-GAN)."""
    weight = shared * (a @ b / math.sqrt(a.shape[-1]) + 1.0)
    return weight / (weight.norm(dim=2, keepdim=True) + 1e-8)


class FMMLinear(nn.Module):
    """One INR layer: a shared (out, in) matrix, modulated per sample by FMM from w, then bias and leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, style: int, rank: int):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.shared = nn.Parameter(torch.randn(out_features, in_features))
        self.hyper = EqualLinear(style, (in_features + out_features) * rank)  # the hypernetwork's head
        self.bias = nn.Parameter(torch.zeros(out_features))

    def weights(self, w: torch.Tensor) -> torch.Tensor:
        factors = self.hyper(w)
        split = self.out_features * self.rank
        a = factors[:, :split].view(-1, self.out_features, self.rank)
        b = factors[:, split:].view(-1, self.rank, self.in_features)
        return fmm_weights(self.shared, a, b)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return lrelu(torch.bmm(x, self.weights(w).transpose(1, 2)) + self.bias)


class ToRGB(nn.Module):
    """StyleGAN2's to-RGB: a 1x1 layer modulated (not demodulated) per input channel by an affine map of w."""

    def __init__(self, in_features: int, channels: int, style: int):
        super().__init__()
        self.affine = EqualLinear(style, in_features, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, in_features))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.gain = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale = self.affine(w) * self.gain  # (B, in)
        return (x * scale[:, None, :]) @ self.weight.t() + self.bias


def log_basis(lattice: int) -> torch.Tensor:
    """(4K, 2) wave vectors in (y, x) of INR-GAN's logarithmic basis for an n-cell lattice, K = ceil(log2 n):
    horizontal, vertical and both diagonal waves of periods 4 / 2^k coordinate units (from the whole
    [-1, 1] span down to 4 cells), the diagonals with the same period along each axis."""
    count = max(1, math.ceil(math.log2(lattice)))
    freq = (math.pi / 2) * 2.0 ** torch.arange(count, dtype=torch.float32)  # 2 pi / 4 * 2^k
    directions = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    return (directions[:, None, :] * freq[None, :, None]).reshape(-1, 2)


class CoordEmbedding(nn.Module):
    """sin and cos of fixed wave vectors (the logarithmic basis and random Gaussian ones) times (y, x).

    INR-GAN also concatenates a learned per-pixel constant grid; we leave it out (ours) because a lookup
    table on the training lattice has no value between or beyond its cells."""

    def __init__(self, lattice: int, random_features: int, scale: float, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        basis = torch.cat([log_basis(lattice), torch.randn(random_features, 2, generator=generator) * scale])
        self.register_buffer("basis", basis)
        self.features = 2 * basis.shape[0]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        phase = points @ self.basis.t()
        return torch.cat([phase.sin(), phase.cos()], -1)


@dataclass
class Layout:
    """Where each level is evaluated for one set of query points: `points[l]` (U_l, 2) and `parent[l]` (U_l,),
    the index of each point's cell among level l-1's points (None at level 0). The last level's points
    are the queries themselves."""

    points: list[torch.Tensor]
    parent: list[torch.Tensor | None]


def cell_index(points: torch.Tensor, lattice: tuple[int, int]) -> torch.Tensor:
    """(N, 2) integer cells of an (h, w) lattice of width 2/n covering [-1, 1] (and continuing past it)."""
    n = torch.tensor(lattice, device=points.device, dtype=points.dtype)
    return torch.floor((points + 1.0) * n / 2.0).long()


def cell_centres(cells: torch.Tensor, lattice: tuple[int, int]) -> torch.Tensor:
    n = torch.tensor(lattice, device=cells.device, dtype=torch.float32)
    return (2.0 * cells.float() + 1.0) / n - 1.0


def multiscale_layout(points: torch.Tensor, lattices: Sequence[tuple[int, int]]) -> Layout:
    """Cells of each coarse level that the queries fall in, evaluated once each (nearest upsampling)."""
    levels = len(lattices)
    inverse: list[torch.Tensor] = []  # per coarse level: (N,) index of each query's cell among that level's cells
    out_points: list[torch.Tensor] = []
    for lattice in lattices[:-1]:
        cells = cell_index(points, lattice)
        offset = cells.min(0).values
        span = int(cells[:, 1].max() - offset[1]) + 1
        key = (cells[:, 0] - offset[0]) * span + (cells[:, 1] - offset[1])
        unique, inv = torch.unique(key, return_inverse=True)
        inverse.append(inv)
        out_points.append(cell_centres(torch.stack([unique // span + offset[0], unique % span + offset[1]], 1),
                                       lattice))
    out_points.append(points)
    parents: list[torch.Tensor | None] = [None]
    for level in range(1, levels):
        if level == levels - 1:
            parents.append(inverse[level - 1])
            continue
        # Any query of each level-l cell tells which level-(l-1) cell holds it (the lattices nest).
        some_query = torch.empty(out_points[level].shape[0], dtype=torch.long, device=points.device)
        some_query.scatter_(0, inverse[level], torch.arange(points.shape[0], device=points.device))
        parents.append(inverse[level - 1][some_query])
    return Layout(out_points, parents)


def grid_points(height: int, width: int, frame: tuple[int, int], region: Sequence[float] | None = None,
                device=None) -> torch.Tensor:
    """(height * width, 2) pixel centres covering `region` = (x0, y0, x1, y1) in pixels of the training
    frame (default the whole frame; past its edges for extrapolation), as nfields' render --region."""
    frame_h, frame_w = frame
    x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, float(frame_w), float(frame_h))
    ys = region_axis(y0, y1, height, frame_h, "centers", device)
    xs = region_axis(x0, x1, width, frame_w, "centers", device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)


class InrGanGenerator(nn.Module):
    """z -> w -> per-level FMM weights of a multi-scale INR, evaluated on any coordinates."""

    def __init__(self, config: InrGanConfig, frame: tuple[int, int], channels: int):
        super().__init__()
        config.validate()
        factor = 2 ** (config.levels - 1)
        if frame[0] % factor or frame[1] % factor:
            raise NfieldsError(f"a {frame[0]}x{frame[1]} frame cannot hold {config.levels} levels that halve the "
                               f"resolution; give a --size divisible by {factor} or fewer levels (-o levels=N).")
        self.config, self.frame, self.channels = config, tuple(frame), channels
        self.lattices = [(frame[0] // 2 ** (config.levels - 1 - lv), frame[1] // 2 ** (config.levels - 1 - lv))
                         for lv in range(config.levels)]
        self.mapping = MappingNetwork(config.latent, config.style, config.mapping_layers, config.mapping_lr)
        self.embeddings = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        previous = 0
        for level, width in enumerate(config.level_widths()):
            embedding = CoordEmbedding(max(self.lattices[level]), config.random_features, config.fourier_scale,
                                       seed=level)
            sizes = [previous + embedding.features] + [width] * config.layers
            self.embeddings.append(embedding)
            self.blocks.append(nn.ModuleList([FMMLinear(a, b, config.style, config.rank)
                                              for a, b in zip(sizes[:-1], sizes[1:])]))
            self.to_rgb.append(ToRGB(width, channels, config.style))
            previous = width
        self._layouts: dict[tuple, Layout] = {}

    def layout(self, points: torch.Tensor, key: tuple | None = None) -> Layout:
        """The levels' evaluation points; grids (given by `key`) are computed once and cached."""
        if key is None:
            return multiscale_layout(points, self.lattices)
        if key not in self._layouts:
            if len(self._layouts) > 16:
                self._layouts.clear()
            self._layouts[key] = multiscale_layout(points, self.lattices)
        return self._layouts[key]

    def synthesize(self, w: torch.Tensor, layout: Layout) -> torch.Tensor:
        """(B, N, C) values in about [-1, 1] at the layout's query points, for styles w (B, style)."""
        features = rgb = None
        for level, (block, embed, to_rgb) in enumerate(zip(self.blocks, self.embeddings, self.to_rgb)):
            x = embed(layout.points[level]).expand(w.shape[0], -1, -1)
            if features is not None:
                parent = layout.parent[level]
                x = torch.cat([features[:, parent], x], -1)
                rgb = rgb[:, parent]
            for layer in block:
                x = layer(x, w)
            out = to_rgb(x, w)
            rgb, features = (out if rgb is None else rgb + out), x
        return rgb

    def forward(self, z: torch.Tensor, grid: torch.Tensor | tuple[int, int] | None = None,
                region: Sequence[float] | None = None, truncation: float = 1.0) -> torch.Tensor:
        """Samples for latents z (B, latent): on `grid` = (height, width) pixels covering `region` (x0, y0, x1, y1)
        in pixels of the training frame (default: the frame at its own size) -> (B, H, W, C); or at
        coordinates (N, 2) / (B, N, 2) as (y, x) -> (B, N, C)."""
        return self.render(self.mapping(z, truncation), grid, region)

    def render(self, w: torch.Tensor, grid: torch.Tensor | tuple[int, int] | None = None,
               region: Sequence[float] | None = None) -> torch.Tensor:
        """As `forward`, from styles w (B, style) (interpolation lerps between ws)."""
        if grid is None or not torch.is_tensor(grid):
            height, width = grid if grid is not None else self.frame
            key = (height, width, tuple(region) if region is not None else None, str(w.device))
            layout = self._layouts.get(key) or self.layout(grid_points(height, width, self.frame, region, w.device), key)
            return self.synthesize(w, layout).view(w.shape[0], height, width, -1)
        coords = grid.to(w.device, torch.float32)
        if coords.dim() == 2:
            return self.synthesize(w, self.layout(coords))
        if coords.shape[0] == 1:
            return self.synthesize(w, self.layout(coords[0]))
        # Different coordinates per sample: each gets its own layout.
        return torch.cat([self.synthesize(w[i:i + 1], self.layout(coords[i])) for i in range(coords.shape[0])])

    def inr_parameters(self) -> int:
        """Weights and biases of one generated INR (what a sample is)."""
        count = 0
        for block, to_rgb in zip(self.blocks, self.to_rgb):
            count += sum(layer.shared.numel() + layer.bias.numel() for layer in block)
            count += to_rgb.weight.numel() + to_rgb.bias.numel()
        return count

    def flops_per_sample(self, height: int, width: int) -> float:
        """Multiply-adds x 2 of one sample on the frame-aligned (height, width) grid: mapping, hypernetwork,
        FMM weights, and the per-point layers (elementwise work and sin/cos not counted)."""
        cfg = self.config
        flops = 2 * cfg.latent * cfg.style + 2 * (cfg.mapping_layers - 1) * cfg.style ** 2
        scale = (height / self.frame[0]) * (width / self.frame[1])
        for level, (block, embed, to_rgb) in enumerate(zip(self.blocks, self.embeddings, self.to_rgb)):
            points = self.lattices[level][0] * self.lattices[level][1] * (scale if level == len(self.blocks) - 1
                                                                         else min(scale, 1.0))
            flops += points * 2 * 2 * embed.basis.shape[0]
            for layer in block:
                o, i, r = layer.out_features, layer.in_features, layer.rank
                flops += 2 * cfg.style * (o + i) * r + 2 * o * r * i + points * 2 * o * i
            flops += 2 * cfg.style * to_rgb.weight.shape[1] + points * 2 * to_rgb.weight.numel()
        return float(flops)


# -- discriminator --------------------------------------------------------------------------------------------

class DiscriminatorBlock(nn.Module):
    """StyleGAN2's residual block: two 3x3 convs and a 1x1 skip, both halving the resolution, summed x sqrt(1/2).
    Ours: 2x2 average pooling instead of the [1, 3, 3, 1] low-pass filter before striding."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)
        return (skip + x) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """StyleGAN's minibatch standard deviation: one extra channel, the mean over features and pixels of the
    std over a group of samples, so D can see a lack of variety."""
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])  # (B / g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """from-RGB, residual blocks halving the resolution while both sides are even and above 4, then
    minibatch-stddev, a 3x3 conv, a dense layer and the logit (StyleGAN2's 'resnet' D)."""

    def __init__(self, config: InrGanConfig, frame: tuple[int, int], channels: int):
        super().__init__()
        self.group = config.mbstd_group
        h, w = frame
        width = config.d_width
        self.from_rgb = EqualConv2d(channels, width, 1)
        blocks = []
        while h % 2 == 0 and w % 2 == 0 and min(h, w) > 4:
            wider = min(width * 2, config.d_max_width)
            blocks.append(DiscriminatorBlock(width, wider))
            width, h, w = wider, h // 2, w // 2
        self.blocks = nn.Sequential(*blocks)
        self.conv = EqualConv2d(width + 1, width, 3)
        self.dense = EqualLinear(width * h * w, width, activation=True)
        self.out = EqualLinear(width, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B,) logits."""
        x = self.blocks(lrelu(self.from_rgb(images)))
        x = lrelu(self.conv(minibatch_stddev(x, self.group)))
        return self.out(self.dense(x.flatten(1))).squeeze(1)


# -- the pair, its losses --------------------------------------------------------------------------------------

class InrGan(nn.Module):
    """Generator, discriminator and the generator's exponential moving average (StyleGAN's G_ema, used for
    sampling; not trained by the optimizer)."""

    def __init__(self, config: InrGanConfig, frame: tuple[int, int], channels: int):
        super().__init__()
        self.config, self.frame, self.channels = config, tuple(frame), channels
        self.generator = InrGanGenerator(config, frame, channels)
        self.discriminator = Discriminator(config, frame, channels)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "InrGan":
        super().train(mode)
        self.generator_ema.eval()  # its w_avg is copied from the generator, never updated by itself
        return self

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live, 1.0 - beta)
        for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema.copy_(live)

    def spec(self) -> dict:
        from dataclasses import asdict

        return {"name": "inr-gan", "config": asdict(self.config), "frame": list(self.frame),
                "channels": self.channels}


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """E ||d D(x) / d x||^2 over the real batch (reals must require grad), differentiable (for D's update)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def gan_losses(model: InrGan, reals: torch.Tensor, z: torch.Tensor, r1_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """All terms of one simultaneous step on `reals` (B, C, H, W) in [-1, 1]: `total` = L_D + L_G + r1_weight * R1.

    L_D = softplus(D(G(z))) + softplus(-D(x)) sees the fakes detached, so it gives G no gradient; L_G =
    softplus(-D(G(z))) runs D with detached parameters (functional_call), so it gives D none. One backward
    then leaves each network its own gradient (ours: one optimizer, simultaneous updates). `r1_weight`
    is gamma / 2 times the lazy interval on R1 steps, 0 otherwise."""
    fakes = model.generator(z).permute(0, 3, 1, 2)
    reals = reals.detach().requires_grad_(r1_weight > 0)
    real_logits = model.discriminator(reals)
    fake_logits = model.discriminator(fakes.detach())
    d_loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    frozen = {name: p.detach() for name, p in model.discriminator.named_parameters()}
    g_loss = F.softplus(-torch.func.functional_call(model.discriminator, frozen, (fakes,))).mean()
    r1 = r1_penalty(real_logits, reals) if r1_weight > 0 else d_loss.new_zeros(())
    return {"total": d_loss + g_loss + r1_weight * r1, "d_loss": d_loss, "g_loss": g_loss, "r1": r1,
            "real_logit": real_logits.detach().mean(), "fake_logit": fake_logits.detach().mean()}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1], clamped."""
    return images.add(1.0).mul(0.5).clamp(0.0, 1.0)
