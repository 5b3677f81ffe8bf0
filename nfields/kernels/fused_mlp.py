"""Fused Triton training kernels for coordinate MLPs with sine (SIREN) or ReLU activations.

The network is  x -> [in -> width] -> act -> ([width -> width] -> act) x L -> [width -> out],
layer j computing Z_j = X_{j-1} (w_j W_j)^T + w_j b_j and X_j = act(Z_j), with act = sin on the
omega-scaled pre-activation (exactly SineLinear's formula, w_0 = first_omega0, w_j = omega after it, so the
parameters and their gradients are those of the PyTorch path) or act = relu (every w_j = 1).

Every width x width layer is a standard, pipelined tiled GEMM (tl.dot on tensor cores) over (row tiles x column
tiles), with the elementwise work fused into its epilogue; the thin first and last layers (in_features <= 64,
out_features <= 16) are fused into elementwise row kernels and epilogues:

forward   F0  X_0 = act(x (w_0 W_0)^T + w_0 b_0)    row kernel (exact-fp32 broadcast FMAs); for in > 4 a dot
              (tf32 in tf32 mode, as PyTorch's first matmul there) on the forward GEMM's tiles
          Fl  Z_l = X_{l-1} (W_l)^T w_l + w_l b_l, l = 1..L      GEMM; the epilogue stores X_l = act(Z_l) (the
              next GEMM's A operand and the weight gradient's) and C_l = cos Z_l (sin: backward's act'); the
              last one stores Z_L itself (sin) or X_L (relu) in fp32 and adds its share of y = X_L W_out^T + b_out
              atomically (one atomic per row and output per column tile: with <= 2 column tiles the sum is still
              deterministic).
backward  G   the gradient scale (below) from max |dY|
          B0  dX_L = dY W_out; dZ'_L = w_L dX_L act'(Z_L)            row kernel, plus atomically summed
              dW_out = dY^T X_L, db_out = sum dY and db_L = sum dZ'_L
          Bl  dX_{l-1} = dZ'_l W_l, l = L..1; dZ'_{l-1} = w_{l-1} dX_{l-1} act'(Z_{l-1})   GEMM with W_l as its
              (N-major) B operand; the epilogue stores dZ'_{l-1} and adds db_{l-1} = sum dZ'_{l-1} atomically
              (one BLOCK_N vector per program); for l = 1, cos Z_0 is recomputed from x (sin; relu reads X_0),
              and for in_features <= 4 dW_0 = dZ'_0^T x is summed there too (else dW_0 = dZ'_0^T x is one more
              cuBLAS matmul).
          W   dW_l = dZ'_l^T X_{l-1}  (width x width, K = rows): cuBLAS, fp32 output.
(dZ' is the pre-activation gradient already multiplied by the layer's omega: dZ'_l = w_l dL/dZ_l, so
dW_l = dZ'_l^T X_{l-1}, db_l = sum dZ'_l and dX_{l-1} = dZ'_l W_l with no further scaling.)

Storage (--precision tf32): the tensors that pass between kernels through memory (X_l, dZ'_l) and the hidden
weights' GEMM copies are float16 (C_l: int16 fixed point, finer than float16 in [-1, 1]), and the GEMMs run on
fp16 tensor cores with fp32 accumulation. float16 has tf32's 10 explicit mantissa bits and rounds to nearest as
cuBLAS's tf32 does, so every GEMM operand carries tf32's precision, at half the bytes and twice the tensor-core
rate; what float16 lacks is range. |X_l| <= 1 and the weights do not need it; the gradients get it from a
power-of-two scale: dZ'_L is multiplied by 2^(4-e), where 2^(e-1) <= max |dY| < 2^e, before it is stored, and
every sum (db, dW) is unscaled in fp32. [Our choice: the step is memory-bound, and halving its bytes is what
brings it near the hardware's limits.]
In true fp32 (--precision fp32) the same kernels store float32 and use exact-fp32 ("ieee") dots.
Exact fp32 in both: Z_L (X_L for relu), the thin (in <= 4) first and the last layers, y, and every gradient
sum.

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
#: The gradient scale puts max |dY| in [2^(GRAD_TOP - 1), 2^GRAD_TOP): SIREN's dZ'_l then stay well inside
#: float16's normal range (6e-5 .. 65504) for residuals from the largest down to 1e-4 of it.
GRAD_TOP = tl.constexpr(4)


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
def _sincos(z):
    """(sin z, cos z) in fp32: a three-part Cody-Waite reduction by pi/2 and Cephes' sinf/cosf polynomials on
    [-pi/4, pi/4] (about 1 ulp while |z| < 8192; SIREN's pre-activations are far smaller). In a GEMM epilogue
    this is several times cheaper than libdevice's sin and cos, whose large-argument path costs registers."""
    k = tl.floor(z * 0.6366197723675814 + 0.5)  # the nearest multiple of pi/2
    r = z - k * 1.5703125
    r = r - k * 4.837512969970703e-4
    r = r - k * 7.549789954891882e-8
    r2 = r * r
    s = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4))
    c = 1.0 - 0.5 * r2 + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5))
    quadrant = k.to(tl.int32) & 3
    sin = tl.where(quadrant == 0, s, tl.where(quadrant == 1, c, tl.where(quadrant == 2, -s, -c)))
    cos = tl.where(quadrant == 0, c, tl.where(quadrant == 1, -s, tl.where(quadrant == 2, -c, s)))
    return sin, cos


@triton.jit
def _activate(z, ACT: tl.constexpr):
    """(act(z), act'(z)): (sin z, cos z), or (relu z, 1 where z > 0). For relu, z may also be X = relu(Z)."""
    if ACT == 0:
        return _sincos(z)
    else:
        return tl.maximum(z, 0.0), tl.where(z > 0.0, 1.0, 0.0)


@triton.jit
def _grad_max_kernel(dy_ptr, max_ptr, n, BLOCK: tl.constexpr):
    """G: max |dY| into max_ptr (zeroed before), by one atomic max per program."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    values = tl.abs(tl.load(dy_ptr + offs, mask=offs < n, other=0.0))
    tl.atomic_max(max_ptr, tl.max(values, axis=0), sem="relaxed")


@triton.jit
def _grad_scale(max_ptr):
    """(scale, 1 / scale): the power of two 2^(GRAD_TOP - e) with 2^(e-1) <= max |dY| < 2^e, read from G's
    result by exponent arithmetic (exact); (1, 1) when max |dY| is 0, subnormal or not finite."""
    exponent = (tl.load(max_ptr).to(tl.int32, bitcast=True) >> 23) & 0xFF
    field = tl.where((exponent > 0) & (exponent < 255), 253 + GRAD_TOP - exponent, 127)
    field = tl.minimum(tl.maximum(field, 1), 253)
    return (field << 23).to(tl.float32, bitcast=True), ((254 - field) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _grad_scale_kernel(max_ptr, scales_ptr):
    """scales_ptr[0:2] = (scale, 1 / scale) for the host-side unscaling of the cuBLAS weight gradients."""
    scale, inverse = _grad_scale(max_ptr)
    tl.store(scales_ptr, scale)
    tl.store(scales_ptr + 1, inverse)


@triton.jit
def _tile(pid, WIDTH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(first row as int64, row offsets in the tile, columns, whether it is the first column tile) of program
    `pid`; column tiles vary fastest, so the programs sharing a row tile run together (A stays in L2)."""
    tiles_n: tl.constexpr = WIDTH // BLOCK_N
    row0 = (pid // tiles_n).to(tl.int64) * BLOCK_M
    tile_n = pid % tiles_n
    return row0, tl.arange(0, BLOCK_M), tile_n * BLOCK_N + tl.arange(0, BLOCK_N), tile_n == 0


@triton.jit
def _store(ptr, values):
    """Store fp32 `values` in the buffer's own dtype (float16 rounds to nearest)."""
    tl.store(ptr, values.to(ptr.dtype.element_ty))


@triton.jit
def _store_unit(ptr, values):
    """Store values in [-1, 1] (C_l = cos Z_l): an int16 buffer holds them in fixed point, steps of 1/32767
    (16x finer than float16 near +-1; float16 C_l cost SIREN 0.2-0.6 dB at 48 dB on camera); else the buffer's
    float dtype."""
    if ptr.dtype.element_ty == tl.int16:
        tl.store(ptr, tl.floor(values * 32767.0 + 0.5).to(tl.int16))
    else:
        tl.store(ptr, values.to(ptr.dtype.element_ty))


@triton.jit
def _load_unit(ptr):
    """What _store_unit stored, as fp32."""
    if ptr.dtype.element_ty == tl.int16:
        return tl.load(ptr).to(tl.float32) * (1.0 / 32767.0)
    else:
        return tl.load(ptr).to(tl.float32)


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
def _store_grad(dz, to_stored, to_true, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols,
                IN: tl.constexpr, STORE_DZ: tl.constexpr, CHAIN_DW0: tl.constexpr):
    """Store dZ' times `to_stored` (if asked: it is the next GEMM's A operand, and the weight gradient's), and add
    the column sums of dZ' times `to_true` (the unscaled fp32 gradient) to db and (first layer, tiny in_features)
    dZ'^T x to dW_0."""
    if STORE_DZ:
        _store(dz_ptr + tile, dz * to_stored)
    dz = dz * to_true
    tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), sem="relaxed")
    if CHAIN_DW0:
        for i in tl.static_range(IN):
            xi = tl.load(x_ptr + rows * IN + i, mask=row_mask, other=0.0)
            tl.atomic_add(dw0_ptr + cols * IN + i, tl.sum(dz * xi[:, None], axis=0), sem="relaxed")


@triton.jit(do_not_specialize=["N"])
def _first_forward_kernel(x_ptr, w0_ptr, b0_ptr, xo_ptr, y_ptr, wo_ptr, bo_ptr, N, omega0,
                          IN: tl.constexpr, IN_DOT: tl.constexpr, IN_PAD: tl.constexpr, WIDTH: tl.constexpr,
                          OUT: tl.constexpr, ACT: tl.constexpr, STORE_X: tl.constexpr, LAST: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """F0: X_0 = act(Z_0) on a tile (stored for the first GEMM); with no hidden layers, y's share instead."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    rows = row0 + offs
    row_mask = rows < N
    if not IN_DOT:
        z = _first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN, BLOCK_M, BLOCK_N)
    else:  # wider inputs (positional encodings): one dot over 2-D tiles of x and W_0, tf32 as PyTorch's in tf32 mode
        ins = tl.arange(0, IN_PAD)
        xt = tl.load(x_ptr + rows[:, None] * IN + ins[None, :], mask=row_mask[:, None] & (ins < IN)[None, :],
                     other=0.0)
        wt = tl.load(w0_ptr + cols[:, None] * IN + ins[None, :], mask=(ins < IN)[None, :], other=0.0) * omega0
        z = tl.dot(xt, tl.trans(wt), input_precision=PRECISION) + (tl.load(b0_ptr + cols) * omega0)[None, :]
    xact, _ = _activate(z, ACT)
    if STORE_X:
        _store(xo_ptr + row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :]), xact)
    if LAST:
        _add_output(xact, y_ptr, wo_ptr, bo_ptr, rows, row_mask, cols, first_col, WIDTH, OUT)


@triton.jit
def _gemm(a_ptr, b_ptr, row0, offs, cols, K: tl.constexpr, B_ROWS_ARE_N: tl.constexpr, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """A[row0 + offs, :] @ B[:, cols] for row-major A (rows x K). B is given as a row-major (n x K) matrix whose
    rows are B's columns (B_ROWS_ARE_N: the forward's W_l, K-major) or as a row-major (K x n) one (the backward's
    W_l, N-major). No masks: A is padded to whole row tiles, K and n are multiples of the tile sizes."""
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + row0 * K + (offs[:, None] * K + ks[None, :])
    if B_ROWS_ARE_N:
        b_ptrs = b_ptr + (cols[:, None] * K + ks[None, :])
        b_step = BLOCK_K
    else:
        b_ptrs = b_ptr + (ks[:, None] * K + cols[None, :])
        b_step = BLOCK_K * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if B_ROWS_ARE_N:
            acc = tl.dot(tl.load(a_ptrs), tl.trans(tl.load(b_ptrs)), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += b_step
    return acc


@triton.jit(do_not_specialize=["N"])
def _forward_gemm_kernel(a_ptr, w_ptr, b_ptr, xo_ptr, co_ptr, last_ptr, y_ptr, wo_ptr, bo_ptr, N, omega,
                         WIDTH: tl.constexpr, OUT: tl.constexpr, ACT: tl.constexpr, STORE_C: tl.constexpr,
                         LAST: tl.constexpr, SAVE_LAST: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """Fl: Z_l = X_{l-1} W_l^T w_l + w_l b_l (W_l in nn.Linear's (out, in) layout). Hidden layers store X_l and
    (STORE_C) C_l = cos Z_l; the last one adds y's share from the fp32 X_L and (SAVE_LAST) stores Z_L (sin) or
    X_L (relu) in fp32 for the backward's act' and dW_out."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    acc = _gemm(a_ptr, w_ptr, row0, offs, cols, WIDTH, True, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    z = acc * omega + (tl.load(b_ptr + cols) * omega)[None, :]
    tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
    xact, deriv = _activate(z, ACT)
    if LAST:
        if SAVE_LAST:
            tl.store(last_ptr + tile, z if ACT == 0 else xact)
        rows = row0 + offs
        _add_output(xact, y_ptr, wo_ptr, bo_ptr, rows, rows < N, cols, first_col, WIDTH, OUT)
    else:
        _store(xo_ptr + tile, xact)
        if STORE_C:
            _store_unit(co_ptr + tile, deriv)


@triton.jit(do_not_specialize=["N"])
def _output_backward_kernel(dy_ptr, wo_ptr, s_ptr, x_ptr, w0_ptr, b0_ptr, dz_ptr, db_ptr, dwo_ptr, dbo_ptr,
                            dw0_ptr, max_ptr, N, omega_last, omega0,
                            IN: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, ACT: tl.constexpr,
                            FIRST: tl.constexpr, STORE_DZ: tl.constexpr, CHAIN_DW0: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """B0: dZ'_L = w_L (dY W_out) act'(Z_L) (stored scaled), and the sums of dW_out, db_out, db_L (dW_0 when L = 0).

    s is what the forward stored for the last hidden layer (Z_L for sin, X_L for relu); with no hidden layers
    (FIRST), Z_0 is recomputed from x."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    rows = row0 + offs
    row_mask = rows < N
    tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
    if FIRST:
        s = _first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN, BLOCK_M, BLOCK_N)
    else:
        s = tl.load(s_ptr + tile)
    xact, deriv = _activate(s, ACT)
    dx = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for o in tl.static_range(OUT):
        dyo = tl.load(dy_ptr + rows * OUT + o, mask=row_mask, other=0.0)
        dx += dyo[:, None] * tl.load(wo_ptr + o * WIDTH + cols)[None, :]
        tl.atomic_add(dwo_ptr + o * WIDTH + cols, tl.sum(dyo[:, None] * xact, axis=0), sem="relaxed")
        if first_col:
            tl.atomic_add(dbo_ptr + o, tl.sum(dyo, axis=0), sem="relaxed")
    dz = dx * deriv * (omega0 if FIRST else omega_last)
    scale, _ = _grad_scale(max_ptr)
    _store_grad(dz, scale, 1.0, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols, IN, STORE_DZ,
                CHAIN_DW0)


@triton.jit(do_not_specialize=["N"])
def _backward_gemm_kernel(a_ptr, w_ptr, d_ptr, x_ptr, w0_ptr, b0_ptr, dz_ptr, db_ptr, dw0_ptr, max_ptr, N,
                          omega_prev, omega0, IN: tl.constexpr, WIDTH: tl.constexpr, ACT: tl.constexpr,
                          FIRST: tl.constexpr, RECOMPUTE: tl.constexpr, STORE_DZ: tl.constexpr,
                          CHAIN_DW0: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """Bl: dX_{l-1} = dZ'_l W_l, dZ'_{l-1} = w_{l-1} dX_{l-1} act'(Z_{l-1}) (both scaled, as stored).

    d holds C_{l-1} = cos Z_{l-1} (sin) or X_{l-1} (relu: act' is X > 0); for l = 1 and sin (RECOMPUTE), cos Z_0
    is recomputed from x instead."""
    row0, offs, cols, first_col = _tile(tl.program_id(0), WIDTH, BLOCK_M, BLOCK_N)
    dx = _gemm(a_ptr, w_ptr, row0, offs, cols, WIDTH, False, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    rows = row0 + offs
    row_mask = rows < N
    tile = row0 * WIDTH + (offs[:, None] * WIDTH + cols[None, :])
    if RECOMPUTE:
        _, deriv = _sincos(_first_z(x_ptr, w0_ptr, b0_ptr, rows, row_mask, cols, omega0, IN, BLOCK_M, BLOCK_N))
    elif ACT == 0:
        deriv = _load_unit(d_ptr + tile)
    else:
        deriv = tl.where(tl.load(d_ptr + tile).to(tl.float32) > 0.0, 1.0, 0.0)
    dz = dx * deriv * (omega0 if FIRST else omega_prev)
    _, inverse = _grad_scale(max_ptr)
    _store_grad(dz, 1.0, inverse, dz_ptr, db_ptr, dw0_ptr, x_ptr, tile, rows, row_mask, cols, IN, STORE_DZ,
                CHAIN_DW0)


# ---- host code ------------------------------------------------------------------------------------------------


def _config(width: int, backward: bool = False) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps) of the forward (or backward) GEMM kernels at this width.
    The environment variable NFIELDS_FUSED_TILES="64,128,64,3,4" overrides both (for tuning; BLOCK_N and BLOCK_K
    are capped at the width)."""
    override = os.environ.get("NFIELDS_FUSED_TILES")
    if override:
        block_m, block_n, block_k, stages, warps = (int(v) for v in override.split(","))
        return block_m, min(block_n, width), min(block_k, width), stages, warps
    # H100 sweep of the graphed step at 256^2 (ms): width 256 0.559 (64,128,64,3,4 for both: 0.644); width 128
    # 0.320 (64,128,64,3,4: 0.341); width 64 0.197 (128,64,64,3,4: 0.204). BLOCK_N 256 or 8 warps were slower.
    if width >= 256:
        return (128, 64, 64, 3, 4) if backward else (64, 64, 64, 3, 4)
    if width == 128:
        return 128, 64, 64, 3, 4
    return (128, 32, 64, 3, 4) if backward and width == 64 else (64, min(64, width), min(64, width), 3, 4)


def _row_config(width: int, backward: bool = False) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the elementwise first-layer (or, backward, output-layer) kernel. Triton
    lays their tiles out one column per thread (every thread holds BLOCK_M rows), hence the short row tiles.
    NFIELDS_FUSED_TILES sets BLOCK_N here too, with 32 rows and 4 warps."""
    block_m, block_n, _, _, _ = _config(width)
    if os.environ.get("NFIELDS_FUSED_TILES"):
        return min(block_m, 32), block_n, 4
    if width >= 256:  # H100 sweep (256^2, width 256): 20 and 51 us against 26 and 56 us at 32 rows, 4 warps
        return (64, 128, 4) if backward else (16, 128, 2)
    return 32, block_n, 4


def _first_config(width: int, in_dot: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the first-layer kernel: the elementwise row tiles for a few inputs, the
    forward GEMM's tiles where Z_0 is a dot (wide inputs)."""
    if not in_dot:
        return _row_config(width)
    if width >= 256 and not os.environ.get("NFIELDS_FUSED_TILES"):
        # H100, graphed ReLU+PE step at 256^2 / 512^2 (ms): 0.567 / 1.891; the other tiles tried (64-128 rows x
        # 64-256 columns, 4-8 warps) 0.568-0.577 / 1.910-1.933; the elementwise row tiles 0.588 / 1.972.
        return 64, 128, 4
    block_m, block_n, _, _, warps = _config(width)
    return block_m, block_n, warps


def _storage_dtype() -> torch.dtype:
    """What the kernels store between each other: float16 when PyTorch's matmuls are tf32 (--precision tf32),
    else float32."""
    return torch.float16 if torch.backends.cuda.matmul.allow_tf32 else torch.float32


def _dot_precision(storage: torch.dtype) -> str:
    """tl.dot's input precision for that storage: fp16 dots (the argument is then unused), or true fp32."""
    return "tf32" if storage == torch.float16 else "ieee"


def _matmul_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result for fp32 or fp16 operands (cuBLAS accumulates fp16 products in fp32)."""
    if a.dtype == torch.float32:
        return torch.mm(a, b)
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())  # CPU (the interpreter tests): no fp16 matmul with an fp32 output


def _padded_rows(n: int, width: int) -> int:
    """Rows of the activation buffers: n rounded up to whole row tiles of every kernel that reads or writes them."""
    tile = max(_config(width)[0], _config(width, backward=True)[0], _row_config(width)[0],
               _row_config(width, backward=True)[0], _first_config(width, True)[0])
    return triton.cdiv(n, tile) * tile


def _forward(x, act, omega0, omega, w0, b0, wo, bo, ws, bs, save, storage):
    """(y, X stack, C stack or None, Z_L / X_L or None, padded rows). X: X_0..X_{L-1}; C: C_1..C_{L-1} (sin, when
    saving); the last buffer (when saving): Z_L (sin) or X_L (relu), fp32. ws: the hidden weights in `storage`."""
    count = len(ws)
    width, in_f = w0.shape
    out_f = wo.shape[0]
    n = x.shape[0]
    block_m, block_n, block_k, stages, warps = _config(width)
    padded = _padded_rows(n, width)
    sine = act == ACTIVATIONS["sin"]
    device = x.device
    y = torch.zeros(n, out_f, device=device, dtype=torch.float32)
    xs = torch.empty(count, padded, width, device=device, dtype=storage)
    cos_dtype = torch.int16 if storage == torch.float16 else storage  # _store_unit's fixed point
    cs = torch.empty(max(count - 1, 0), padded, width, device=device, dtype=cos_dtype) if sine and save else None
    last = torch.empty(padded, width, device=device, dtype=torch.float32) if save and count else None
    if n == 0:
        return y, xs, cs, last, padded
    precision = _dot_precision(storage)
    in_dot = in_f > CHAIN_DW0_MAX_IN
    first_m, first_n, first_warps = _first_config(width, in_dot)
    _first_forward_kernel[(padded // first_m * (width // first_n),)](
        x, w0, b0, xs[0] if count else y, y, wo, bo, n, omega0, IN=in_f, IN_DOT=in_dot,
        IN_PAD=max(16, triton.next_power_of_2(in_f)), WIDTH=width, OUT=out_f, ACT=act, STORE_X=count > 0,
        LAST=count == 0, PRECISION=precision, BLOCK_M=first_m, BLOCK_N=first_n, num_warps=first_warps)
    unused = y  # a placeholder for pointers a launch does not touch
    for layer in range(1, count + 1):
        is_last = layer == count
        store_c = sine and save and not is_last
        _forward_gemm_kernel[(padded // block_m * (width // block_n),)](
            xs[layer - 1], ws[layer - 1], bs[layer - 1], unused if is_last else xs[layer],
            cs[layer - 1] if store_c else unused, last if last is not None else unused, y, wo, bo, n, omega,
            WIDTH=width, OUT=out_f, ACT=act, STORE_C=store_c, LAST=is_last, SAVE_LAST=last is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=precision, num_stages=stages,
            num_warps=warps)
    return y, xs, cs, last, padded


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
        storage = _storage_dtype()
        ws = [w.to(storage) for w in params[4:4 + count]]  # the GEMMs' copies (the weights themselves in fp32)
        bs = params[4 + count:]
        y, xs, cs, last, padded = _forward(x, act, float(omega0), float(omega), w0, b0, wo, bo, ws, bs,
                                           save=True, storage=storage)
        ctx.save_for_backward(x, w0, b0, wo, xs, cs, last, *ws)
        ctx.meta = (act, float(omega0), float(omega), count, padded, storage)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w0, b0, wo, xs, cs, last, *ws = ctx.saved_tensors
        act, omega0, omega, count, padded, storage = ctx.meta
        width, in_f = w0.shape
        out_f = wo.shape[0]
        n = x.shape[0]
        sine = act == ACTIVATIONS["sin"]
        device = x.device
        dy = dy.float().contiguous()
        # The atomically summed gradients, zeroed by one memset: db_0..db_L, dW_out, db_out, dW_0 (summed in
        # the epilogue for tiny in_features; else dZ'_0 is stored for a cuBLAS matmul), max |dY| and the scales.
        sizes = [(count + 1) * width, out_f * width, out_f, width * in_f, 1, 2]
        db, dwo, dbo, dw0, grad_max, scales = torch.zeros(sum(sizes), device=device,
                                                          dtype=torch.float32).split(sizes)
        db, dwo, dw0 = db.view(count + 1, width), dwo.view(out_f, width), dw0.view(width, in_f)
        chain = in_f <= CHAIN_DW0_MAX_IN
        lowest = 1 if chain else 0  # the lowest layer whose dZ' is stored
        dz = torch.empty(count + 1 - lowest, padded, width, device=device, dtype=storage)
        if n == 0:
            return tuple([None, None, None, None, dw0, db[0], dwo, dbo] + [torch.zeros_like(w, dtype=torch.float32)
                                                                          for w in ws]
                         + [db[i + 1] for i in range(count)])
        block_m, block_n, block_k, stages, warps = _config(width, backward=True)
        common = dict(IN=in_f, WIDTH=width, ACT=act)
        row_m, row_n, row_warps = _row_config(width, backward=True)
        precision = _dot_precision(storage)
        unused = db  # a placeholder for pointers a launch does not touch
        block = 1024
        _grad_max_kernel[(triton.cdiv(dy.numel(), block),)](dy, grad_max, dy.numel(), BLOCK=block)
        _grad_scale_kernel[(1,)](grad_max, scales)

        def dz_at(layer):
            return dz[layer - lowest] if layer >= lowest else unused

        _output_backward_kernel[(padded // row_m * (width // row_n),)](
            dy, wo, last if count else unused, x, w0, b0, dz_at(count), db[count], dwo, dbo, dw0, grad_max, n,
            omega, omega0, OUT=out_f, FIRST=count == 0, STORE_DZ=count >= lowest, CHAIN_DW0=chain and count == 0,
            BLOCK_M=row_m, BLOCK_N=row_n, num_warps=row_warps, **common)
        for layer in range(count, 0, -1):
            recompute = layer == 1 and sine  # cos Z_0 from x; relu reads X_0 (relu'(Z_0) = X_0 > 0)
            deriv = unused if recompute else (cs[layer - 2] if sine else xs[layer - 1])
            _backward_gemm_kernel[(padded // block_m * (width // block_n),)](
                dz_at(layer), ws[layer - 1], deriv, x, w0, b0, dz_at(layer - 1), db[layer - 1], dw0, grad_max, n,
                omega, omega0, FIRST=layer == 1, RECOMPUTE=recompute, STORE_DZ=layer - 1 >= lowest,
                CHAIN_DW0=chain and layer == 1, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                PRECISION=precision, num_stages=stages, num_warps=warps, **common)
        # Weight gradients of the width x width layers, dW_l = dZ'_l^T X_{l-1} (cuBLAS), unscaled in place. (One
        # batched matmul was 15 % slower on the H100: cuBLAS picks smaller tiles for it.)
        dwh = [_matmul_f32(dz_at(layer)[:n].t(), xs[layer - 1][:n]).mul_(scales[1])
               for layer in range(1, count + 1)]
        if not chain:
            dw0 = _matmul_f32(dz[0][:n].t(), x.to(storage)).mul_(scales[1])
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
            storage = _storage_dtype()
            y = _forward(flat, ACTIVATIONS[activation], float(omega0), float(omega), *p[:4],
                         [w.to(storage) for w in p[4:4 + count]], p[4 + count:], save=False, storage=storage)[0]
    return y.reshape(*lead, y.shape[-1])
