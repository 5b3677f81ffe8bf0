"""Multi-resolution hash encoding (Müller et al. 2022), in plain PyTorch.

Every operation is an ordinary differentiable tensor op (gather, products, sums), so the
encoding is differentiable twice: gradients of the output with respect to the input can
themselves be back-propagated (Eikonal and gradient losses).

On CUDA with Triton (`kernel` "auto" or "fused", nfields.kernels) a call whose coordinates need no
gradient runs fused kernels instead (nfields.kernels.hashgrid): features gathered from a float16 copy of
the table, as instant-NGP stores them, interpolated in float32, the gradient scattered into the float32
table, which stays the parameter (what the optimizer updates, checkpoints save and the PyTorch path reads).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..kernels import fused_applies

# The paper's per-dimension primes; pi_1 = 1 keeps the first dimension coherent in memory.
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


class HashGridEncoding(nn.Module):
    """Features from `levels` grids of growing resolution N_l = floor(N_min * b^l).

    Coarse levels whose (N_l + 1)^d vertices fit in the table are stored densely (one entry per
    vertex, no collisions); finer ones are hashed into 2^log2_table_size entries. Features are
    d-linearly interpolated from the 2^d cell corners and the levels concatenated.
    Inputs are in [-1, 1]; outside it, dense levels clamp and hashed levels wrap.
    """

    kernel = "auto"  # nfields.kernels: "auto", "torch" or "fused"
    #: What the fused kernels gather from: float16 (instant-NGP's tables) or float32 (the master itself;
    #: for measuring what half tables cost in PSNR).
    gather_dtype = torch.float16

    def __init__(self, in_features: int, levels: int = 16, log2_table_size: int = 19,
                 features_per_level: int = 2, base_resolution: int = 16, growth_factor: float = 1.5):
        super().__init__()
        if in_features > len(PRIMES):
            raise ValueError(f"hash encoding supports up to {len(PRIMES)} input dimensions")
        d, table = in_features, 2 ** log2_table_size
        resolutions = [math.floor(base_resolution * growth_factor ** level) for level in range(levels)]
        sizes = [min(table, (r + 1) ** d) for r in resolutions]
        dense = [(r + 1) ** d <= table for r in resolutions]
        offsets = [0] + list(itertools.accumulate(sizes))[:-1]

        self.in_features = d
        self.levels = levels
        self.features_per_level = features_per_level
        self.out_features = levels * features_per_level
        self.table_size = table
        # The paper's init: U(-1e-4, 1e-4).
        self.table = nn.Parameter(torch.empty(sum(sizes), features_per_level).uniform_(-1e-4, 1e-4))
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("max_vertex", torch.tensor(resolutions, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        strides = [[(r + 1) ** i for i in range(d)] for r in resolutions]
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.long), persistent=False)
        self.register_buffer("primes", torch.tensor(PRIMES[:d], dtype=torch.long), persistent=False)
        corners = list(itertools.product((0, 1), repeat=d))
        self.register_buffer("corners", torch.tensor(corners, dtype=torch.long), persistent=False)
        # The fused path's float16 copy of the table, made on first use. It is re-copied when the table is
        # another tensor or was modified in place through autograd (_version), and after any call that
        # recorded a graph for the table: such a call means training, and an optimizer may change the
        # table without bumping _version (torch.optim.Adam(fused=True) does not).
        self.register_buffer("table_half", None, persistent=False)
        self._half_key = None
        self._half_stale = True
        self._kernel_tables = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trains_table = torch.is_grad_enabled() and self.table.requires_grad
        if self.table.dtype == torch.float32 and fused_applies(self.kernel, x):
            out = self._fused_forward(x)
        else:
            out = self._torch_forward(x)
        if trains_table:
            self._half_stale = True
        return out

    def half_table(self) -> torch.Tensor:
        """The float16 copy of the table that the fused kernels gather from, refreshed if out of date."""
        table = self.table
        if self.gather_dtype == torch.float32:
            return table.detach()
        key = (table.data_ptr(), table._version, table.device, table.shape)
        if self.table_half is None or self._half_stale or key != self._half_key:
            with torch.no_grad():
                if self.table_half is not None and self.table_half.shape == table.shape \
                        and self.table_half.device == table.device and self.table_half.dtype == torch.float16:
                    self.table_half.copy_(table)
                else:
                    self.table_half = table.detach().to(torch.float16)
            self._half_key = key
            self._half_stale = False
        return self.table_half

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..kernels.hashgrid import HashGridTables, hash_encode

        tables = self._kernel_tables
        if tables is None or tables.resolutions.device != x.device:
            tables = self._kernel_tables = HashGridTables.of(self)
        lead = x.shape[:-1]
        out = hash_encode(x.reshape(-1, self.in_features), self.table, self.half_table(), tables)
        return out.reshape(*lead, self.out_features)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        u = (x + 1.0) * 0.5 * self.resolutions.to(x.dtype)[:, None, None]  # (L, N, d)
        cell = torch.floor(u)
        frac = u - cell  # d-linear weights; floor has zero gradient, so this stays twice differentiable
        vertex = cell.long()[:, :, None, :] + self.corners  # (L, N, C, d)

        clamped = torch.minimum(vertex.clamp(min=0), self.max_vertex[:, None, None, None])
        dense_index = (clamped * self.strides[:, None, None, :]).sum(-1)
        hashed = vertex * self.primes
        hash_index = hashed[..., 0]
        for i in range(1, self.in_features):
            hash_index = torch.bitwise_xor(hash_index, hashed[..., i])
        hash_index = hash_index & (self.table_size - 1)
        index = torch.where(self.dense[:, None, None], dense_index, hash_index) + self.offsets[:, None, None]

        # Corner weight: prod_i (frac_i if corner_i else 1 - frac_i).
        bits = self.corners.to(x.dtype)  # (C, d)
        weights = (frac[:, :, None, :] * bits + (1 - frac[:, :, None, :]) * (1 - bits)).prod(-1)  # (L, N, C)
        features = self.table[index]  # (L, N, C, F)
        out = (weights[..., None] * features).sum(2)  # (L, N, F)
        return out.permute(1, 0, 2).reshape(*lead, self.out_features)
