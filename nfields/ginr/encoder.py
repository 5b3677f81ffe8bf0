"""The Transformer encoder shared by TransINR, IPC and the locality-aware INR: image -> latent tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import NfieldsError


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise NfieldsError(f"encoder width {width} must be divisible by its {heads} heads; change one of them.")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN Transformer block: x + drop(attn(LN(x))), then x + drop(MLP(LN(x))) with GELU; `dropout` on both
    residual branches, as IPC's official `resid_pdrop`."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TokenEncoder(nn.Module):
    """(B, H, W, C) image, or (B, V, H, W, C) views of one instance -> (B, R, D) latent tokens.

    Non-overlapping P x P patches -> Linear to D + learned positions (shared by all views: a view's
    pixels carry their own rays when they matter); R learned tokens are appended; `depth` pre-LN
    blocks (no final LayerNorm); the outputs at the R appended tokens are returned. Positions and tokens
    start N(0, 1), as in IPC's official code (its `LatentMapping` and `WeightGroups`).
    """

    def __init__(self, image_size: tuple[int, int], channels: int, patch_size: int, tokens: int,
                 width: int = 768, depth: int = 6, heads: int = 12, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        height, wide = image_size
        if patch_size < 1 or height % patch_size or wide % patch_size:
            raise NfieldsError(f"image size {height}x{wide} is not divisible by the patch size {patch_size}; "
                               "choose a patch size that divides both sides (-o patch_size=P) or resize the images.")
        self.image_size, self.channels, self.patch_size = (height, wide), channels, patch_size
        self.num_patches = (height // patch_size) * (wide // patch_size)
        self.patch_embed = nn.Linear(patch_size * patch_size * channels, width)
        self.positions = nn.Parameter(torch.randn(1, self.num_patches, width))
        self.latents = nn.Parameter(torch.randn(1, tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.width, self.tokens = width, tokens

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, [V,] H, W, C) -> (B, V * H/P * W/P, P * P * C), patches in row-major order, view after view."""
        if images.dim() not in (4, 5) or tuple(images.shape[-3:]) != (*self.image_size, self.channels):
            raise NfieldsError(f"expected images of shape (B, {self.image_size[0]}, {self.image_size[1]}, "
                               f"{self.channels}), got {tuple(images.shape)}; resize or rebuild the model.")
        b, h, w, c = images.shape[0], *images.shape[-3:]
        p = self.patch_size
        x = images.reshape(-1, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, -1, p * p * c)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.patchify(images))
        x = x + self.positions.repeat(1, x.shape[1] // self.num_patches, 1)
        x = torch.cat([x, self.latents.expand(x.shape[0], -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, -self.tokens:]
