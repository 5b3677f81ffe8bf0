"""Fused Triton training kernels for coordinate MLPs with sine (SIREN) or ReLU activations.

The network is  x -> [in -> width] -> act -> ([width -> width] -> act) x L -> [width -> out],
layer j computing Z_j = X_{j-1} (w_j W_j)^T + w_j b_j and X_j = act(Z_j), with act = sin on the
omega-scaled pre-activation (exactly SineLinear's formula, w_0 = first_omega0, w_j = omega after it, so the
parameters and their gradients are those of the PyTorch path) or act = relu (every w_j = 1).

Every width x width layer is a standard, pipelined tiled GEMM (tl.dot, tf32 on tensor cores) over
(row tiles x column tiles), with the elementwise work fused into its epilogue; the thin first and last
layers (in_features <= 64, out_features <= 16) are fused into elementwise row kernels and epilogues:

forward   F0  X_0 = act(x (w_0 W_0)^T + w_0 b_0)    row kernel (broadcast FMAs; an exact-fp32 dot for in > 4)
          Fl  Z_l = X_{l-1} (W_l)^T w_l + w_l b_l, l = 1..L      GEMM; the epilogue stores Z_l (sin: backward
              needs cos Z_l) and X_l = act(Z_l) (the next GEMM's A operand and the weight gradient's), and
              the last one adds its share of y = X_L W_out^T + b_out atomically (one atomic per row and
              output per column tile: with <= 2 column tiles the sum is still deterministic).
backward  B0  dX_L = dY W_out; dZ'_L = w_L dX_L act'(Z_L)            row kernel, plus atomically summed
              dW_out = dY^T X_L, db_out = sum dY and db_L = sum dZ'_L
          Bl  dX_{l-1} = dZ'_l W_l, l = L..1; dZ'_{l-1} = w_{l-1} dX_{l-1} act'(Z_{l-1})   GEMM with
              W_l^T (a 256 KiB copy) as its K-major B operand; the epilogue stores dZ'_{l-1} and adds
              db_{l-1} = sum dZ'_{l-1} atomically (one BLOCK_N vector per program); for l = 1, Z_0 is
              recomputed from x (sin; relu reads X_0), and for in_features <= 4 dW_0 = dZ'_0^T x is summed
              there too (else dW_0 = dZ'_0^T x is one more cuBLAS matmul).
          W   dW_l = dZ'_l^T X_{l-1}  (width x width, K = rows): torch.mm (cuBLAS, tf32 when allowed).
(dZ' is the pre-activation gradient already multiplied by the layer's omega: dZ'_l = w_l dL/dZ_l, so
dW_l = dZ'_l^T X_{l-1}, db_l = sum dZ'_l and dX_{l-1} = dZ'_l W_l with no further scaling.)

tf32 (--precision tf32): Hopper's tf32 wgmma reads an fp32 operand's top 19 bits (it truncates), where cuBLAS
rounds to nearest, which halves the error and removes its bias. So every tf32 GEMM operand is rounded to nearest
first: the X_l and dZ'_l that the kernels store for a GEMM are rounded in the epilogue that writes them (the
cuBLAS weight gradients, which round anyway, read the same values), and the hidden weights are rounded copies
(width^2 floats a layer, made once per forward; the backward's W_l^T are transposes of them). Z_l, X_L, the sums
(db, dW_out, dW_0 in the epilogues) and the thin first and last layers stay exact fp32.

Activation buffers are padded to whole row tiles, so the GEMMs load and store without masks; the padded
rows hold finite values (computed from x = 0) and get zero gradients (dY = 0 there).

Runs on CUDA float32, and on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1) for tests.
Everything is capturable in a CUDA graph (no host syncs; buffer sizes depend on shapes only).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: The shapes the fused path handles; others take the PyTorch path.
MAX_IN, MAX_OUT, MIN_WIDTH, MAX_WIDTH = 64, 16, 16, 256
#: in_features up to this get the first layer's weight gradient summed in the backward epilogue (atomics);
#: wider inputs (positional encodings) store dZ_0 and take one more cuBLAS matmul, and get Z_0 from a dot.
CHAIN_DW0_MAX_IN = 4
ACTIVATIONS = {"sin": 0, "relu": 1}


def _patch_interpreter() -> None:
    """Triton 3.6's interpreter turns a scalar (a 1-element array) into a loop bound with int(array),
    which NumPy >= 2.4 refuses; index with the array's one element instead. Interpreter mode only."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_nfields", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._nfields = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter()


def supports(in_features: int, width: int, out_features: int, hidden_layers: int) -> bool:
    """Whether the fused kernels handle this MLP shape."""
    return (1 <= in_features <= MAX_IN and 1 <= out_features <= MAX_OUT and hidden_layers >= 0
            and MIN_WIDTH <= width <= MAX_WIDTH and width & (width - 1) == 0)


def auto_selects() -> bool:
    """Whether kernel="auto" picks the fused MLP: only with tf32 matmuls (--precision tf32). In true fp32
    the kernels' "ieee" dots run on CUDA cores and are far slower than cuBLAS; kernel="fused" still runs them."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


# ---- device code ----------------------------------------------------------------------------------------------


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        return tl.sin(z)
    else:
        return tl.maximum(z, 0.0)


@triton.jit
def _act_grad(dx, s, ACT: tl.constexpr):
    """dx act'(Z) from s = Z (sin: cos Z) or s = Z or X = relu(Z) (relu: s > 0 either way)."""
    if ACT == 0:
        return dx * tl.cos(s)
    else:
        return tl.where(s > 0.0, dx, 0.0)


@triton.jit
def _round_tf32(x):
    """x rounded to the nearest tf32 value (10 mantissa bits; ties to even), still as float32 (NaN kept).

    Hopper's tf32 tensor-core instructions ignore an fp32 operand's 13 low mantissa bits (truncation: a relative
    error up to 2^-10, biased towards zero), where cuBLAS rounds to nearest (up to 2^-11, unbiased); operands
    rounded here first are used exactly."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + (0xFFF + ((bits >> 13) & 1))) & 0xFFFFE000
    return tl.where(x == x, bits.to(tl.float32, bitcast=True), x)


@triton.jit
def _round_tf32_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, _round_tf32(tl.load(src_ptr + offs, mask=mask, other=0.0)), mask=mask)


@triton.jit
def _tile(pid, WIDTH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(first row as int64, row offsets in the tile, columns, whether it is the first column tile) of program
    `pid`; column tiles vary fastest, so the programs sharing a row tile run together (A stays in L2)."""
    tiles_n: tl.constexpr = WIDTH // BLOCK_N
    row0 = (pid // tiles_n).to(tl.int64) * BLOCK_M
    tile_n = pid % tiles_n
    return row0, tl.arange(0, BLOCK_M), tile_n * BLOCK_N + tl.arange(0, BLOCK_N), tile_n == 0


@triton.jit
def _saved_tile(s_ptr, x_ptr, w0_ptr, b0_ptr, row0, offs, cols, N, omega0, IN: tl.constexpr, WIDTH: tl.constexpr,
                RECOMPUTE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A backward tile's rows, their mask, its offsets, and what the forward saved for it (Z for sin, X for relu),
    or Z_0 recomputed from x (RECOMPUTE)."""
    rows = row0 + offs
    row_mask = rows < N
    tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
    if RECOMPUTE:
        s = _first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN, BLOCK_M, BLOCK_N)
    else:
        s = tl.load(s_ptr + tile)
    return rows, row_mask, tile, s


@triton.jit
def _first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Z_0 = x (w_0 W_0)^T + w_0 b_0 on a tile, in exact fp32 (in_features is small); rows past N get x = 0."""
    z = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in tl.static_range(IN):
        xi = tl.load(x_ptr + rows * IN + i, mask=row_mask, other=0.0)
        wi = tl.load(w0_ptr + cols * IN + i) * omega0
        z += xi[:, None] * wi[None, :]
    return z + (tl.load(b0_ptr + cols) * omega0)[None, :]


@triton.jit
def _add_output(xact, y_ptr, wo_ptr, bo_ptr, rows, row_mask, cols, is_first_col,
                WIDTH: tl.constexpr, OUT: tl.constexpr):
    """y[rows] += xact W_out[:, cols]^T (+ b_out from the first column tile), atomically."""
    for o in tl.static_range(OUT):
        wo = tl.load(wo_ptr + o * WIDTH + cols)
        part = tl.sum(xact * wo[None, :], axis=1) + tl.where(is_first_col, tl.load(bo_ptr + o), 0.0)
        tl.atomic_add(y_ptr + rows * OUT + o, part, mask=row_mask, sem="relaxed")


@triton.jit
def _store_grad(dz, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols,
                IN: tl.constexpr, STORE_DZ: tl.constexpr, CHAIN_DW0: tl.constexpr, ROUND: tl.constexpr):
    """Store dZ' (if asked; rounded to tf32 with ROUND: it is the next tf32 GEMM's A operand), add its column
    sums (of the unrounded fp32 values) to db and (first layer, tiny in_features) dZ'^T x to dW_0."""
    if STORE_DZ:
        if ROUND:
            tl.store(dz_ptr + tile, _round_tf32(dz))
        else:
            tl.store(dz_ptr + tile, dz)
    tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), sem="relaxed")
    if CHAIN_DW0:
        for i in tl.static_range(IN):
            xi = tl.load(x_ptr + rows * IN + i, mask=row_mask, other=0.0)
            tl.atomic_add(dw0_ptr + cols * IN + i, tl.sum(dz * xi[:, None], axis=0), sem="relaxed")


@triton.jit(do_not_specialize=["N"])
def _first_forward_kernel(x_ptr, w0_ptr, b0_ptr, xo_ptr, y_ptr, wo_ptr, bo_ptr, N, omega0,
                          IN: tl.constexpr, IN_DOT: tl.constexpr, IN_PAD: tl.constexpr, WIDTH: tl.constexpr,
                          OUT: tl.constexpr, ACT: tl.constexpr, STORE_X: tl.constexpr, LAST: tl.constexpr,
                          ROUND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """F0: X_0 = act(Z_0) on a tile (stored for the first GEMM, rounded to tf32 with ROUND); with no hidden
    layers, y's share instead."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    rows = row0 + offs
    row_mask = rows < N
    if not IN_DOT:
        z = _first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN, BLOCK_M, BLOCK_N)
    else:  # wider inputs (positional encodings): one exact-fp32 dot over 2-D tiles of x and W_0
        ins = tl.arange(0, IN_PAD)
        xt = tl.load(x_ptr + rows[:, None] * IN + ins[None, :], mask=row_mask[:, None] & (ins < IN)[None, :],
                     other=0.0)
        wt = tl.load(w0_ptr + cols[:, None] * IN + ins[None, :], mask=(ins < IN)[None, :], other=0.0) * omega0
        z = tl.dot(xt, tl.trans(wt), input_precision="ieee") + (tl.load(b0_ptr + cols) * omega0)[None, :]
    xact = _act(z, ACT)
    if STORE_X:
        tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
        if ROUND:
            tl.store(xo_ptr + tile, _round_tf32(xact))
        else:
            tl.store(xo_ptr + tile, xact)
    if LAST:
        _add_output(xact, y_ptr, wo_ptr, bo_ptr, rows, row_mask, cols, first_col, WIDTH, OUT)


@triton.jit
def _gemm(a_ptr, bt_ptr, row0, offs, cols, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """A[row0 + offs, :] @ Bt[cols, :]^T for row-major A (rows x K) and Bt (n x K): both K-major, as
    Hopper's tf32 wgmma wants them. No masks: A is padded to whole row tiles, K and n are multiples of
    the tile sizes."""
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + row0 * K + (offs[:, None] * K + ks[None, :])
    b_ptrs = bt_ptr + (cols[:, None] * K + ks[None, :])
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs)
        b = tl.load(b_ptrs)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    return acc


@triton.jit(do_not_specialize=["N"])
def _forward_gemm_kernel(a_ptr, w_ptr, b_ptr, z_ptr, xo_ptr, y_ptr, wo_ptr, bo_ptr, N, omega,
                         WIDTH: tl.constexpr, OUT: tl.constexpr, ACT: tl.constexpr, STORE_Z: tl.constexpr,
                         STORE_X: tl.constexpr, LAST: tl.constexpr, ROUND: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """Fl: Z_l = X_{l-1} W_l^T w_l + w_l b_l (W_l in nn.Linear's (out, in) layout); stores Z_l (fp32) and X_l
    (rounded to tf32 with ROUND, when it is the next GEMM's A operand; y's share takes the fp32 X_L)."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    acc = _gemm(a_ptr, w_ptr, row0, offs, cols, WIDTH, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    z = acc * omega + (tl.load(b_ptr + cols) * omega)[None, :]
    tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
    if STORE_Z:
        tl.store(z_ptr + tile, z)
    xact = _act(z, ACT)
    if STORE_X:
        if ROUND:
            tl.store(xo_ptr + tile, _round_tf32(xact))
        else:
            tl.store(xo_ptr + tile, xact)
    if LAST:
        rows = row0 + offs
        _add_output(xact, y_ptr, wo_ptr, bo_ptr, rows, rows < N, cols, first_col, WIDTH, OUT)


@triton.jit(do_not_specialize=["N"])
def _output_backward_kernel(dy_ptr, wo_ptr, s_ptr, x_ptr, w0_ptr, b0_ptr, dz_ptr, db_ptr, dwo_ptr, dbo_ptr,
                            dw0_ptr, N, omega_last, omega0,
                            IN: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, ACT: tl.constexpr,
                            FIRST: tl.constexpr, RECOMPUTE: tl.constexpr, STORE_DZ: tl.constexpr,
                            CHAIN_DW0: tl.constexpr, ROUND: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr):
    """B0: dZ'_L = w_L (dY W_out) act'(Z_L), and the sums of dW_out, db_out, db_L (dW_0 when L = 0).

    s is what the forward stored for the last hidden layer (Z_L for sin, X_L for relu); with no hidden layers
    (FIRST), Z_0 is recomputed from x (RECOMPUTE)."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    rows, row_mask, tile, s = _saved_tile(s_ptr, x_ptr, w0_ptr, b0_ptr, row0, offs, cols, N, omega0, IN, WIDTH,
                                          RECOMPUTE, BLOCK_M, BLOCK_N)
    xact = _act(s, ACT)  # sin Z_L, or relu(X_L) = X_L
    dx = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for o in tl.static_range(OUT):
        dyo = tl.load(dy_ptr + rows * OUT + o, mask=row_mask, other=0.0)
        dx += dyo[:, None] * tl.load(wo_ptr + o * WIDTH + cols)[None, :]
        tl.atomic_add(dwo_ptr + o * WIDTH + cols, tl.sum(dyo[:, None] * xact, axis=0), sem="relaxed")
        if first_col:
            tl.atomic_add(dbo_ptr + o, tl.sum(dyo, axis=0), sem="relaxed")
    if FIRST:
        dz = _act_grad(dx, s, ACT) * omega0
    else:
        dz = _act_grad(dx, s, ACT) * omega_last
    _store_grad(dz, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols, IN, STORE_DZ, CHAIN_DW0, ROUND)


@triton.jit(do_not_specialize=["N"])
def _backward_gemm_kernel(a_ptr, wt_ptr, s_ptr, x_ptr, w0_ptr, b0_ptr, dz_ptr, db_ptr, dw0_ptr, N, omega_prev,
                          omega0, IN: tl.constexpr, WIDTH: tl.constexpr, ACT: tl.constexpr,
                          FIRST: tl.constexpr, RECOMPUTE: tl.constexpr, STORE_DZ: tl.constexpr,
                          CHAIN_DW0: tl.constexpr, ROUND: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """Bl: dX_{l-1} = dZ'_l W_l (wt = W_l^T contiguous), dZ'_{l-1} = w_{l-1} dX_{l-1} act'(Z_{l-1}).

    s holds Z_{l-1} (sin) or X_{l-1} (relu); for l = 1 (FIRST) and sin, Z_0 is recomputed from x (RECOMPUTE)
    instead (relu reads X_0: relu'(Z_0) is X_0 > 0)."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    dx = _gemm(a_ptr, wt_ptr, row0, offs, cols, WIDTH, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    rows, row_mask, tile, s = _saved_tile(s_ptr, x_ptr, w0_ptr, b0_ptr, row0, offs, cols, N, omega0, IN, WIDTH,
                                          RECOMPUTE, BLOCK_M, BLOCK_N)
    if FIRST:
        dz = _act_grad(dx, s, ACT) * omega0
    else:
        dz = _act_grad(dx, s, ACT) * omega_prev
    _store_grad(dz, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols, IN, STORE_DZ, CHAIN_DW0, ROUND)


# ---- host code ------------------------------------------------------------------------------------------------


def _config(width: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps) for every kernel at this width. The environment
    variable NFIELDS_FUSED_TILES="128,128,32,3,8" overrides it (for tuning; BLOCK_N and BLOCK_K are capped
    at the width)."""
    override = os.environ.get("NFIELDS_FUSED_TILES")
    if override:
        block_m, block_n, block_k, stages, warps = (int(v) for v in override.split(","))
        return block_m, min(block_n, width), min(block_k, width), stages, warps
    # H100 sweep, width 256, graphed step at 256^2 / 512^2 (ms): this 1.16 / 3.57; 64,64,32,4,4 1.06 / 3.45;
    # 128,64,32,3,4 1.09 / 3.34; 128,128,32,3,8 1.16 / 3.67; BLOCK_K 64 or BLOCK_N 256 were 7-115 % slower.
    if width >= 128:  # about 170 registers a thread and 72 KiB of shared memory: 3 programs per H100 SM
        return 64, 128, 32, 3, 4
    if width == 64:
        return 128, 64, 32, 3, 4
    return 128, width, min(32, width), 3, 4


def _row_config(block_m: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps) of the elementwise first- and last-layer kernels: short row tiles, as Triton lays
    their tiles out one column per thread (every thread holds BLOCK_M rows)."""
    return min(block_m, 32), 4


def _precision() -> str:
    """tl.dot's input precision: tf32 when PyTorch's matmuls are (--precision tf32), else true fp32."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """A float32 copy of `t` rounded to the nearest tf32 value (ties to even), by _round_tf32."""
    src = t.detach().float().contiguous()
    out = torch.empty_like(src)
    if src.numel():
        block = 1024
        _round_tf32_kernel[(triton.cdiv(src.numel(), block),)](src, out, src.numel(), BLOCK=block)
    return out


def _gemm_weights(ws, precision: str) -> list[torch.Tensor]:
    """The hidden weights as the GEMMs' B operands: in tf32, copies rounded to nearest (width^2 floats each),
    which the tensor cores then use exactly (they would truncate fp32 values); in true fp32, the weights."""
    return [round_tf32(w) for w in ws] if precision == "tf32" else list(ws)


def _forward(x, act, omega0, omega, w0, b0, wo, bo, ws, bs, save, precision):
    """(y, Z stack or None, X stack, padded rows). Z: Z_1..Z_L (sin, when saving); X: X_0..X_{L-1}, and X_L
    for relu when saving (backward's act' and dW_out read it). ws: the GEMM weights (_gemm_weights).

    In tf32 (precision), the X_l that feed a GEMM are stored rounded to tf32; Z_l and X_L stay fp32."""
    count = len(ws)
    width, in_f = w0.shape
    out_f = wo.shape[0]
    n = x.shape[0]
    block_m, block_n, block_k, stages, warps = _config(width)
    padded = triton.cdiv(n, block_m) * block_m
    sine = act == ACTIVATIONS["sin"]
    y = torch.zeros(n, out_f, device=x.device, dtype=torch.float32)
    z = (torch.empty(count, padded, width, device=x.device, dtype=torch.float32)
         if sine and save and count else None)
    xs = torch.empty(count + (1 if not sine and save and count else 0), padded, width, device=x.device,
                     dtype=torch.float32)
    if n == 0:
        return y, z, xs, padded
    grid = (padded // block_m * (width // block_n),)
    common = dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    row_m, row_warps = _row_config(block_m)
    tf32 = precision == "tf32"
    _first_forward_kernel[(padded // row_m * (width // block_n),)](
        x, w0, b0, xs[0] if count else y, y, wo, bo, n, omega0, IN=in_f, IN_DOT=in_f > CHAIN_DW0_MAX_IN,
        IN_PAD=max(16, triton.next_power_of_2(in_f)), WIDTH=width, OUT=out_f, ACT=act, STORE_X=count > 0,
        LAST=count == 0, ROUND=tf32, BLOCK_M=row_m, BLOCK_N=block_n, num_warps=row_warps)
    for layer in range(1, count + 1):
        last = layer == count
        store_x = not last or (not sine and save)
        _forward_gemm_kernel[grid](
            xs[layer - 1], ws[layer - 1], bs[layer - 1], z[layer - 1] if z is not None else y,
            xs[layer] if store_x else y, y, wo, bo, n, omega, WIDTH=width, OUT=out_f, ACT=act,
            STORE_Z=z is not None, STORE_X=store_x, LAST=last, ROUND=tf32 and not last, BLOCK_K=block_k,
            PRECISION=precision,
            num_stages=stages, **common)
    return y, z, xs, padded


class FusedMLPFunction(torch.autograd.Function):
    """apply(x, activation, omega0, omega, w0, b0, w_out, b_out, *hidden_weights, *hidden_biases) -> (N, out).

    x: (N, in) float32 (no gradient is returned for it); weights in nn.Linear's (out, in) layout.
    """

    @staticmethod
    def forward(ctx, x, activation, omega0, omega, w0, b0, wo, bo, *hidden):
        count = len(hidden) // 2
        act = ACTIVATIONS[activation]
        x = x.contiguous()
        params = [t.contiguous() for t in (w0, b0, wo, bo) + hidden]
        w0, b0, wo, bo = params[:4]
        precision = _precision()
        ws = _gemm_weights(params[4:4 + count], precision)  # backward takes its W_l^T from these
        bs = params[4 + count:]
        y, z, xs, padded = _forward(x, act, float(omega0), float(omega), w0, b0, wo, bo, ws, bs, save=True,
                                    precision=precision)
        ctx.save_for_backward(x, w0, b0, wo, z, xs, *ws)
        ctx.meta = (act, float(omega0), float(omega), count, padded, precision)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w0, b0, wo, z, xs, *ws = ctx.saved_tensors
        act, omega0, omega, count, padded, precision = ctx.meta
        width, in_f = w0.shape
        out_f = wo.shape[0]
        n = x.shape[0]
        sine = act == ACTIVATIONS["sin"]
        device = x.device
        dy = dy.float().contiguous()
        # The atomically summed gradients, zeroed by one memset: db_0..db_L, dW_out, db_out and
        # dW_0 (summed in the epilogue for tiny in_features; else dZ'_0 is stored for a cuBLAS matmul).
        sizes = [(count + 1) * width, out_f * width, out_f, width * in_f]
        db, dwo, dbo, dw0 = torch.zeros(sum(sizes), device=device, dtype=torch.float32).split(sizes)
        db, dwo, dw0 = db.view(count + 1, width), dwo.view(out_f, width), dw0.view(width, in_f)
        chain = in_f <= CHAIN_DW0_MAX_IN
        lowest = 1 if chain else 0  # the lowest layer whose dZ' is stored
        dz = torch.empty(count + 1 - lowest, padded, width, device=device, dtype=torch.float32)
        if n == 0:
            return tuple([None, None, None, None, dw0, db[0], dwo, dbo] + [torch.zeros_like(w) for w in ws]
                         + [db[i + 1] for i in range(count)])
        block_m, block_n, block_k, stages, warps = _config(width)
        grid = (padded // block_m * (width // block_n),)
        common = dict(IN=in_f, WIDTH=width, ACT=act, BLOCK_N=block_n)
        row_m, row_warps = _row_config(block_m)
        tf32 = precision == "tf32"  # the stored dZ' (the GEMMs' A operands) are rounded to tf32
        unused = db  # a placeholder for pointers a launch does not touch

        def saved(layer):  # what the forward stored for act'(Z_layer): Z_layer (sin, layer >= 1) or X_layer
            return z[layer - 1] if sine else xs[layer]

        def dz_at(layer):
            return dz[layer - lowest] if layer >= lowest else unused

        _output_backward_kernel[(padded // row_m * (width // block_n),)](
            dy, wo, saved(count) if count else unused, x, w0, b0, dz_at(count), db[count], dwo, dbo, dw0, n,
            omega, omega0, OUT=out_f, FIRST=count == 0, RECOMPUTE=count == 0, STORE_DZ=count >= lowest,
            CHAIN_DW0=chain and count == 0, ROUND=tf32, BLOCK_M=row_m, num_warps=row_warps, **common)
        for layer in range(count, 0, -1):
            wt = ws[layer - 1].t().contiguous()  # W_l^T (tf32-rounded in tf32): the K-major B operand of dZ'_l W_l
            recompute = layer == 1 and sine  # cos Z_0 from x; relu reads X_0 (relu'(Z_0) = X_0 > 0)
            _backward_gemm_kernel[grid](
                dz_at(layer), wt, unused if recompute else saved(layer - 1), x, w0, b0, dz_at(layer - 1),
                db[layer - 1], dw0, n, omega, omega0, FIRST=layer == 1, RECOMPUTE=recompute,
                STORE_DZ=layer - 1 >= lowest, CHAIN_DW0=chain and layer == 1, ROUND=tf32, BLOCK_M=block_m,
                BLOCK_K=block_k, PRECISION=precision, num_stages=stages, num_warps=warps, **common)
        # Weight gradients of the width x width layers, dW_l = dZ'_l^T X_{l-1}: cuBLAS (tf32 when allowed).
        dwh = [torch.mm(dz_at(layer)[:n].t(), xs[layer - 1][:n]) for layer in range(1, count + 1)]
        if not chain:
            dw0 = torch.mm(dz[0][:n].t(), x)
        grads = [None, None, None, None, dw0, db[0], dwo, dbo]
        grads += dwh + [db[i + 1] for i in range(count)]
        return tuple(grads)


def fused_mlp(x: torch.Tensor, activation: str, omega0: float, omega: float, first: torch.nn.Linear,
              hidden: list[torch.nn.Linear], last: torch.nn.Linear) -> torch.Tensor:
    """The fused MLP on x (..., in_features) -> (..., out_features)."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1]).float().contiguous()
    params = [first.weight, first.bias, last.weight, last.bias] + [h.weight for h in hidden]
    params += [h.bias for h in hidden]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        y = FusedMLPFunction.apply(flat, activation, omega0, omega, *params)
    else:  # inference: nothing saved for a backward pass
        with torch.no_grad():
            p = [t.detach().contiguous() for t in params]
            count = len(hidden)
            precision = _precision()
            y = _forward(flat, ACTIVATIONS[activation], float(omega0), float(omega), *p[:4],
                         _gemm_weights(p[4:4 + count], precision), p[4 + count:], save=False,
                         precision=precision)[0]
    return y.reshape(*lead, y.shape[-1])
