"""Triton kernels for the multi-resolution hash encoding (nfields.encodings.HashGridEncoding).

One program encodes BLOCK_N points at one level (the 1D grid is ordered level-fastest, so the programs that
run together write neighbouring columns of the same output rows). Each lane computes its point's cell, the
2^d corner indices (dense levels: clamped vertex dotted with the level's strides; hashed levels: XOR of
vertex * prime, masked to the table size; exactly the indexing of the PyTorch encoding), gathers each
corner's F features from a float16 copy of the table and interpolates them in float32.

The backward scatters the output gradient into a float32 gradient of the float32 master table with
atomic adds. Only the table gets a gradient: a call whose coordinates need one (gradient and Eikonal losses)
must take the PyTorch encoding, which is twice differentiable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 128
NUM_WARPS = 4


@triton.jit
def _corner(x_ptr, rows, row_mask, res, max_vertex, is_dense, table_mask, strides_ptr, primes_ptr, level,
            CORNER: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Table row (within the level) and d-linear weight of corner CORNER (bit i: +1 along axis i)."""
    weight = tl.full([BLOCK_N], 1.0, tl.float32)
    dense_index = tl.zeros([BLOCK_N], tl.int64)
    hash_index = tl.zeros([BLOCK_N], tl.int64)
    for i in tl.static_range(D):
        xi = tl.load(x_ptr + rows * D + i, mask=row_mask, other=0.0)
        u = (xi + 1.0) * 0.5 * res  # the PyTorch encoding's order of operations
        cell = tl.floor(u)
        frac = u - cell
        vertex = cell.to(tl.int64)
        if (CORNER >> i) & 1:
            vertex = vertex + 1
            weight = weight * frac
        else:
            weight = weight * (1.0 - frac)
        clamped = tl.minimum(tl.maximum(vertex, 0), max_vertex)
        dense_index += clamped * tl.load(strides_ptr + level * D + i)
        hash_index = hash_index ^ (vertex * tl.load(primes_ptr + i))
    # Both indices are in range whatever x is (clamped / masked), so no load can go out of bounds.
    index = tl.where(is_dense != 0, dense_index, hash_index & table_mask)
    return index, weight


@triton.jit
def _level_tile(res_ptr, max_ptr, dense_ptr, offsets_ptr, N, L, F: tl.constexpr, F_P2: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """Program -> (level, rows, row mask, feature lanes, row x feature mask, and the level's resolution, largest
    vertex, dense flag and table offset); levels vary fastest, so neighbouring programs share output rows."""
    pid = tl.program_id(0)
    level = pid % L
    block = pid // L
    rows = (block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = rows < N
    feats = tl.arange(0, F_P2)
    mask2 = row_mask[:, None] & (feats < F)[None, :]
    return (level, rows, row_mask, feats, mask2, tl.load(res_ptr + level), tl.load(max_ptr + level),
            tl.load(dense_ptr + level), tl.load(offsets_ptr + level))


@triton.jit
def _hash_forward(x_ptr, table_ptr, out_ptr, res_ptr, max_ptr, dense_ptr, offsets_ptr, strides_ptr, primes_ptr,
                  N, L, table_mask, D: tl.constexpr, F: tl.constexpr, F_P2: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    level, rows, row_mask, feats, mask2, res, max_vertex, is_dense, offset = _level_tile(
        res_ptr, max_ptr, dense_ptr, offsets_ptr, N, L, F, F_P2, BLOCK_N)

    acc = tl.zeros([BLOCK_N, F_P2], tl.float32)
    for c in tl.static_range(1 << D):
        index, weight = _corner(x_ptr, rows, row_mask, res, max_vertex, is_dense, table_mask, strides_ptr,
                                primes_ptr, level, c, D, BLOCK_N)
        values = tl.load(table_ptr + (index + offset)[:, None] * F + feats[None, :], mask=mask2, other=0.0)
        acc += weight[:, None] * values.to(tl.float32)
    tl.store(out_ptr + rows[:, None] * (L * F) + level * F + feats[None, :], acc, mask=mask2)


@triton.jit
def _hash_backward(x_ptr, grad_out_ptr, grad_table_ptr, res_ptr, max_ptr, dense_ptr, offsets_ptr, strides_ptr,
                   primes_ptr, N, L, table_mask, D: tl.constexpr, F: tl.constexpr, F_P2: tl.constexpr,
                   BLOCK_N: tl.constexpr):
    level, rows, row_mask, feats, mask2, res, max_vertex, is_dense, offset = _level_tile(
        res_ptr, max_ptr, dense_ptr, offsets_ptr, N, L, F, F_P2, BLOCK_N)

    grad = tl.load(grad_out_ptr + rows[:, None] * (L * F) + level * F + feats[None, :], mask=mask2, other=0.0)
    for c in tl.static_range(1 << D):
        index, weight = _corner(x_ptr, rows, row_mask, res, max_vertex, is_dense, table_mask, strides_ptr,
                                primes_ptr, level, c, D, BLOCK_N)
        tl.atomic_add(grad_table_ptr + (index + offset)[:, None] * F + feats[None, :], weight[:, None] * grad,
                      mask=mask2, sem="relaxed")


class HashGridTables:
    """The per-level constants the kernels read, as device tensors of the kernels' dtypes."""

    def __init__(self, resolutions, max_vertex, dense, offsets, strides, primes, table_size: int):
        self.resolutions = resolutions.to(torch.float32).contiguous()
        self.max_vertex = max_vertex.to(torch.int64).contiguous()
        self.dense = dense.to(torch.int32).contiguous()
        self.offsets = offsets.to(torch.int64).contiguous()
        self.strides = strides.to(torch.int64).contiguous()
        self.primes = primes.to(torch.int64).contiguous()
        self.table_mask = table_size - 1
        self.levels = len(self.resolutions)

    @classmethod
    def of(cls, encoding) -> "HashGridTables":
        return cls(encoding.resolutions, encoding.max_vertex, encoding.dense, encoding.offsets, encoding.strides,
                   encoding.primes, encoding.table_size)

    def args(self):
        return (self.resolutions, self.max_vertex, self.dense, self.offsets, self.strides, self.primes)


def _launch(kernel, x: torch.Tensor, tensors: tuple, tables: HashGridTables, features: int) -> None:
    n, d = x.shape
    grid = (triton.cdiv(n, BLOCK_N) * tables.levels,)
    kernel[grid](x, *tensors, *tables.args(), n, tables.levels, tables.table_mask, D=d, F=features,
                 F_P2=triton.next_power_of_2(features), BLOCK_N=BLOCK_N, num_warps=NUM_WARPS,
                 enable_fp_fusion=False)  # no FMA contraction: cell positions round as PyTorch's do


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, table_half, tables):
        n = x.shape[0]
        features = table.shape[1]
        out = torch.empty(n, tables.levels * features, device=x.device, dtype=torch.float32)
        if n:
            _launch(_hash_forward, x, (table_half, out), tables, features)
        ctx.save_for_backward(x)
        ctx.tables = tables
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        (x,) = ctx.saved_tensors
        grad_table = torch.zeros(ctx.table_shape, device=x.device, dtype=torch.float32)
        if x.shape[0]:
            _launch(_hash_backward, x, (grad_out.contiguous().float(), grad_table), ctx.tables,
                    ctx.table_shape[1])
        return None, grad_table, None, None


def hash_encode(x: torch.Tensor, table: torch.Tensor, table_half: torch.Tensor,
                tables: HashGridTables) -> torch.Tensor:
    """Encode `x` (N, d) float32 with the levels in `tables`: features gathered from `table_half` (a float16
    copy of `table`; `table` itself also works), the gradient going to `table` (float32, rows x F).
    Returns (N, L * F) float32."""
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("the fused hash encoding has no gradient with respect to the coordinates; "
                         "use the PyTorch path (kernel='torch') for derivatives of the field")
    if table_half.dtype not in (torch.float16, torch.float32) or table_half.shape != table.shape:
        raise ValueError("table_half must be a float16 (or float32) copy of table")
    x = x.detach().to(torch.float32).contiguous()
    return _HashEncode.apply(x, table, table_half.contiguous(), tables)
