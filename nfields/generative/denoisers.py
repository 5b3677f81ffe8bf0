"""Denoisers for the stage-2 prior: `denoiser(x_t, t, condition) -> x0_hat`, as `Diffusion` expects.

- `mlp`: mNIF's residual MLP over vector latents (official code, `FunctaMLP` with net_type "functa":
  input linear, 8 residual blocks of width 4096 joined U-Net fashion, 16 GroupNorm groups, SiLU,
  a 64-channel sinusoidal time embedding through one linear layer).
- `transformer`: a Transformer over (T, D) latent tokens (the locality-aware INR's Appendix A.3: 24
  self-attention blocks, 1024 wide, 16 heads, 458M parameters, which is exactly DiT-L; so the blocks are
  DiT's adaLN-Zero blocks conditioned on time + class).

Both take an optional class condition: `condition` is None (unconditional) or (B,) class indices in
[0, num_classes], where index `num_classes` is the learned null class that classifier-free guidance uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import NfieldsError
from ..registry import AT_LEAST_ONE, Limits, Registry

DENOISERS: Registry["nn.Module"] = Registry("denoiser")


def timestep_embedding(t: torch.Tensor, channels: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B, channels) sinusoidal features of integer steps (B,): cosines then sines at geometric frequencies
    from 1 to 1/max_period (the DDPM / ADM embedding both papers' code builds on)."""
    half = channels // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(embedding, (0, channels % 2))


class ConditionalDenoiser(nn.Module):
    """What both denoisers share: the latent shape they work on and the class table with its null row."""

    def __init__(self, latent_shape: tuple[int, ...], num_classes: int, embed_dim: int):
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.num_classes = int(num_classes)
        # num_classes + 1 rows: the last is the "no class" of classifier-free guidance (Ho & Salimans 2022).
        self.class_embed = nn.Embedding(self.num_classes + 1, embed_dim) if self.num_classes else None

    @property
    def null_class(self) -> int:
        return self.num_classes

    def condition_embedding(self, condition: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        if self.class_embed is None:
            if condition is not None:
                raise NfieldsError("this denoiser is unconditional; sample it without classes.")
            return None
        if condition is None:  # unconditional sampling of a conditional model: the null class
            condition = torch.full((batch,), self.null_class, device=device, dtype=torch.long)
        return self.class_embed(condition.long())


# -- mNIF's residual MLP ---------------------------------------------------------------------------------

@dataclass
class ResidualMLPConfig:
    """mNIF's stage-2 denoiser (official configs `ResidualMLP_L8_D4096`, `FunctaMLP`)."""

    width: int = 4096  # num_hid_channels
    blocks: int = 8  # num_layers: the first half's inputs are added back into the second half, U-Net fashion
    groups: int = 16  # num_hid_groups of the GroupNorms
    time_channels: int = 64  # num_time_emb_channels: sinusoidal features, then one linear layer
    dropout: float = 0.0

    limits: ClassVar[dict[str, Limits]] = {"width": AT_LEAST_ONE, "groups": AT_LEAST_ONE,
                                           "time_channels": AT_LEAST_ONE, "dropout": Limits(0, 1)}

    def __post_init__(self):
        if self.blocks < 2 or self.blocks % 2:
            raise NfieldsError(f"mlp denoiser option 'blocks' must be an even number >= 2, not {self.blocks}.")
        if self.width < 1 or self.width % self.groups:
            raise NfieldsError(f"mlp denoiser option 'width' ({self.width}) must be a multiple of 'groups' "
                               f"({self.groups}).")


class ResidualBlock(nn.Module):
    """x + Linear(SiLU(GN(Linear(SiLU(GN(x))) + Linear(SiLU(t))))), the last linear zero-initialised so
    every block starts as the identity (as mNIF's)."""

    def __init__(self, width: int, time_channels: int, groups: int, dropout: float):
        super().__init__()
        self.inner = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), nn.Linear(width, width))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_channels, width))
        self.outer = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Linear(width, width))
        for layer in (self.inner[-1], self.time[-1]):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.outer[-1].weight)
        nn.init.zeros_(self.outer[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + self.outer(self.inner(x) + self.time(t))


@DENOISERS.register("mlp", ResidualMLPConfig)
class ResidualMLPDenoiser(ConditionalDenoiser):
    """(B, D) noisy latents -> (B, D) predicted clean latents."""

    def __init__(self, latent_shape: tuple[int, ...], num_classes: int = 0, config: ResidualMLPConfig | None = None):
        config = config or ResidualMLPConfig()
        super().__init__(latent_shape, num_classes, config.time_channels)
        if len(self.latent_shape) != 1:
            raise NfieldsError(f"the mlp denoiser works on latent vectors, not shape {self.latent_shape}; use the "
                               f"transformer denoiser for tokens.")
        self.config = config
        dim, width = self.latent_shape[0], config.width
        self.time_embed = nn.Linear(config.time_channels, config.time_channels)
        self.input = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, config.time_channels, config.groups, config.dropout)
                                    for _ in range(config.blocks))
        self.output = nn.Sequential(nn.GroupNorm(config.groups, width), nn.SiLU(), nn.Linear(width, dim))
        for layer in (self.time_embed, self.input, self.output[-1]):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.time_embed(timestep_embedding(t, self.config.time_channels))
        classes = self.condition_embedding(condition, x.shape[0], x.device)
        if classes is not None:  # ours: mNIF is unconditional; a class enters where time does
            embedding = embedding + classes
        h = self.input(x)
        half = len(self.blocks) // 2
        skips = []
        for block in self.blocks[:half]:
            skips.append(h)
            h = block(h, embedding)
        for block, skip in zip(self.blocks[half:], reversed(skips)):
            h = block(h + skip, embedding)
        return self.output(h)


# -- the token Transformer ---------------------------------------------------------------------------------

@dataclass
class TransformerDenoiserConfig:
    """Appendix A.3 of the locality-aware INR: 24 blocks, width 1024, 16 heads (with adaLN-Zero: DiT-L)."""

    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: int = 4  # DiT's
    time_channels: int = 256  # DiT's frequency embedding size
    # Ours: a learned embedding per token position. The tokens are standardised per token and each holds its
    # own region of the image, so the denoiser must know which token is which at high noise.
    token_embedding: bool = True

    limits: ClassVar[dict[str, Limits]] = {name: AT_LEAST_ONE for name in
                                           ("width", "depth", "heads", "mlp_ratio", "time_channels")}

    def __post_init__(self):
        if self.width % self.heads:
            raise NfieldsError(f"transformer denoiser option 'width' ({self.width}) must be a multiple of "
                               f"'heads' ({self.heads}).")
        if min(self.width, self.depth, self.heads, self.mlp_ratio, self.time_channels) < 1:
            raise NfieldsError("transformer denoiser options must be positive.")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNBlock(nn.Module):
    """Pre-norm self-attention + MLP whose LayerNorm shift/scale and residual gates come from the
    conditioning vector; the gates start at zero so the block starts as the identity (DiT's adaLN-Zero)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(approximate="tanh"),
                                 nn.Linear(width * mlp_ratio, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


@DENOISERS.register("transformer", TransformerDenoiserConfig)
class TransformerDenoiser(ConditionalDenoiser):
    """(B, T, D) noisy latent tokens -> (B, T, D) predicted clean tokens."""

    def __init__(self, latent_shape: tuple[int, ...], num_classes: int = 0,
                 config: TransformerDenoiserConfig | None = None):
        config = config or TransformerDenoiserConfig()
        super().__init__(latent_shape, num_classes, config.width)
        if len(self.latent_shape) != 2:
            raise NfieldsError(f"the transformer denoiser works on (tokens, dim) latents, not shape "
                               f"{self.latent_shape}; use the mlp denoiser for vectors.")
        self.config = config
        tokens, dim = self.latent_shape
        w = config.width
        self.input = nn.Linear(dim, w)
        self.position = nn.Parameter(torch.randn(tokens, w) * 0.02) if config.token_embedding else None
        self.time_embed = nn.Sequential(nn.Linear(config.time_channels, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(AdaLNBlock(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.output = nn.Linear(w, dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT's: Xavier-uniform linears with zero bias, N(0, 0.02) time and class embeddings, and a
        # zero-initialised output, so the first prediction is x0 = 0, the mean of standardised latents.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.time_embed[0], self.time_embed[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        for layer in (self.final_modulation[-1], self.output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        c = self.time_embed(timestep_embedding(t, self.config.time_channels))
        classes = self.condition_embedding(condition, x.shape[0], x.device)
        if classes is not None:
            c = c + classes
        h = self.input(x)
        if self.position is not None:
            h = h + self.position
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.output(modulate(self.final_norm(h), shift, scale))


# -- building and guiding ----------------------------------------------------------------------------------

def denoiser_for_shape(latent_shape: tuple[int, ...]) -> str:
    """`auto`: vectors (D,) get mNIF's residual MLP, tokens (T, D) the Transformer."""
    if len(latent_shape) == 1:
        return "mlp"
    if len(latent_shape) == 2:
        return "transformer"
    raise NfieldsError(f"no denoiser for latents of shape {tuple(latent_shape)}; latents must be vectors or tokens.")


def make_denoiser(name: str, latent_shape: tuple[int, ...], num_classes: int = 0, **options) -> ConditionalDenoiser:
    cls, _ = DENOISERS.lookup(name)
    return cls(tuple(latent_shape), num_classes, DENOISERS.config(name, options))


def denoiser_spec(denoiser: ConditionalDenoiser) -> dict:
    """Everything needed to rebuild the module (weights come from its state_dict)."""
    import dataclasses

    return {"denoiser": denoiser.registry_name, "latent_shape": list(denoiser.latent_shape),
            "num_classes": denoiser.num_classes, "config": dataclasses.asdict(denoiser.config)}


def denoiser_from_spec(spec: dict) -> ConditionalDenoiser:
    return make_denoiser(spec["denoiser"], tuple(spec["latent_shape"]), spec["num_classes"], **spec["config"])


class Guided(nn.Module):
    """Classifier-free guidance around a class-conditional denoiser: x0 = x0_null + w (x0_class - x0_null).

    In x0-space this is the same as guiding the noise prediction (Ho & Salimans 2022, with w = 1 + their w):
    eps is affine in x0 at a given x_t, and the two weights sum to 1. w = 1 is the plain conditional model;
    both predictions come from one batched forward pass."""

    def __init__(self, denoiser: ConditionalDenoiser, scale: float):
        super().__init__()
        self.denoiser, self.scale = denoiser, float(scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return self.denoiser(x, t, condition)
        null = torch.full_like(condition, self.denoiser.null_class)
        both = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([condition, null]))
        x0_class, x0_null = both.chunk(2)
        return x0_null + self.scale * (x0_class - x0_null)
