"""The fused Triton MLP kernels (nfields.kernels.fused_mlp) against a float64 PyTorch reference.

On CPU they run through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 when there is no
CUDA); the `gpu` tests compile them for real at training sizes and check training quality.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("triton")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import nfields  # noqa: E402
from nfields.fields import make_field  # noqa: E402
from nfields.kernels import fused_mlp as fused_module  # noqa: E402
from nfields.kernels.fused_mlp import FusedMLPFunction, supports  # noqa: E402
from nfields.train.graph import GraphedStep  # noqa: E402

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def make_params(in_f, width, out_f, hidden, activation, omega0, omega, device="cpu", seed=0):
    """[w0, b0, w_out, b_out, *hidden_w, *hidden_b] with SIREN-like (sin) or PyTorch-like (relu) scales."""
    g = torch.Generator().manual_seed(seed)

    def u(shape, bound):
        return ((torch.rand(shape, generator=g) * 2 - 1) * bound).to(device)

    if activation == "sin":
        first, inner = 1.0 / in_f, (6.0 / width) ** 0.5 / omega
    else:
        first, inner = in_f ** -0.5, width ** -0.5
    params = [u((width, in_f), first), u(width, 0.5), u((out_f, width), inner), u(out_f, 0.5)]
    params += [u((width, width), inner) for _ in range(hidden)] + [u(width, 0.5) for _ in range(hidden)]
    return params


def reference(x, activation, omega0, omega, params):
    """The PyTorch path (SineLinear / Linear+ReLU layers) in whatever dtype `params` have."""
    w0, b0, wo, bo, *rest = params
    hidden = len(rest) // 2

    def act(z):
        return torch.sin(z) if activation == "sin" else torch.relu(z)

    h = act(F.linear(x, omega0 * w0, omega0 * b0))
    for w, b in zip(rest[:hidden], rest[hidden:]):
        h = act(F.linear(h, omega * w, omega * b))
    return F.linear(h, wo, bo)


def outputs_and_grads(fn, x, params, dy):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    y = fn(x, leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    return [y.detach()] + [g.detach() for g in grads]


def fused(activation, omega0, omega):
    return lambda x, p: FusedMLPFunction.apply(x, activation, omega0, omega, *p)


def torch_path(activation, omega0, omega):
    return lambda x, p: reference(x, activation, omega0, omega, p)


def relative_errors(got, want):
    """max |got - want| / max |want| for the output and every gradient."""
    return [((g.double() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() if w.numel() else 0.0
            for g, w in zip(got, want)]


def compare(n, in_f, width, out_f, hidden, activation, device="cpu", seed=0):
    omega0, omega = (45.0, 20.0) if activation == "sin" else (1.0, 1.0)
    params = make_params(in_f, width, out_f, hidden, activation, omega0, omega, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(n, in_f, generator=g) * 2 - 1).to(device)
    dy = torch.randn(n, out_f, generator=g).to(device)
    want = outputs_and_grads(torch_path(activation, omega0, omega), x.double(), [p.double() for p in params],
                             dy.double())
    got = outputs_and_grads(fused(activation, omega0, omega), x, params, dy)
    for g_, w in zip(got, want):
        assert g_.shape == w.shape and g_.dtype == torch.float32
    return got, want, (x, dy, params, omega0, omega)


# ---- CPU, through Triton's interpreter --------------------------------------------------------------------------

CASES = [  # (rows, in, width, out, hidden layers, activation)
    (1, 2, 16, 1, 1, "sin"),
    (37, 2, 32, 1, 3, "sin"),
    (200, 2, 64, 3, 1, "sin"),
    (130, 3, 32, 2, 0, "sin"),
    (37, 42, 32, 3, 1, "relu"),
    (200, 42, 64, 1, 3, "relu"),
    (70, 2, 16, 3, 2, "relu"),
    (130, 42, 32, 2, 0, "relu"),  # dZ_0 stored for the cuBLAS dW_0, no hidden layer
    (70, 3, 16, 1, 0, "relu"),
    (150, 2, 256, 1, 3, "sin"),  # two column tiles
]

#: Tiles far smaller than the defaults: several column tiles per row (atomic output sums), partial row tiles.
SMALL_TILES = "32,16,16,2,4"
SMALL_CASES = [  # (rows, in, width, out, hidden layers, activation)
    (45, 2, 64, 3, 2, "sin"),
    (33, 3, 32, 1, 0, "sin"),
    (45, 42, 64, 2, 1, "relu"),
    (1, 2, 16, 1, 3, "relu"),
]


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
@pytest.mark.parametrize("n,in_f,width,out_f,hidden,activation", CASES)
def test_fused_matches_float64_reference_in_interpreter(n, in_f, width, out_f, hidden, activation):
    got, want, _ = compare(n, in_f, width, out_f, hidden, activation)
    errors = relative_errors(got, want)
    assert max(errors) < 2e-5, errors  # the interpreter computes in true fp32


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
@pytest.mark.parametrize("n,in_f,width,out_f,hidden,activation", SMALL_CASES)
def test_fused_with_small_tiles_in_interpreter(monkeypatch, n, in_f, width, out_f, hidden, activation):
    monkeypatch.setenv("NFIELDS_FUSED_TILES", SMALL_TILES)
    assert fused_module._config(width)[:3] == fused_module._config(width, backward=True)[:3] == (32, 16, 16)
    assert fused_module._row_config(width, backward=True) == (32, 16, 4)
    got, want, _ = compare(n, in_f, width, out_f, hidden, activation)
    errors = relative_errors(got, want)
    assert max(errors) < 2e-5, errors


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
@pytest.mark.parametrize("activation,hidden", [("sin", 2), ("relu", 1), ("sin", 0)])
def test_fused_inference_saves_nothing_and_matches(activation, hidden):
    """Without autograd (rendering), fused_mlp runs the forward kernels alone and gives the same values."""
    omega0, omega = (45.0, 20.0) if activation == "sin" else (1.0, 1.0)
    params = make_params(3, 32, 2, hidden, activation, omega0, omega)
    first, last = torch.nn.Linear(3, 32), torch.nn.Linear(32, 2)
    layers = [torch.nn.Linear(32, 32) for _ in range(hidden)]
    with torch.no_grad():
        for module, w, b in zip([first, last] + layers, params[0:4:2] + params[4:4 + hidden],
                                params[1:4:2] + params[4 + hidden:]):
            module.weight.copy_(w)
            module.bias.copy_(b)
    x = torch.rand(2, 50, 3) * 2 - 1
    with torch.no_grad():
        y = fused_module.fused_mlp(x, activation, omega0, omega, first, layers, last)
    want = reference(x.reshape(-1, 3).double(), activation, omega0, omega, [p.double() for p in params])
    assert y.shape == (2, 50, 2) and not y.requires_grad
    assert (y.reshape(-1, 2).double() - want).abs().max() < 2e-5 * want.abs().max()


def test_auto_takes_the_fused_mlp_only_with_tf32(monkeypatch):
    """kernel="auto" runs the fused MLP with tf32 matmuls only (its true-fp32 dots are slow); "fused" always."""
    import nfields.fields.mlp as mlp_module
    import nfields.fields.siren as siren_module

    for module in (mlp_module, siren_module):
        monkeypatch.setattr(module, "fused_applies", lambda kernel, x: kernel != "torch")
    calls = []

    def spy(x, activation, *args):
        calls.append(activation)
        return torch.zeros(*x.shape[:-1], 1)

    monkeypatch.setattr(fused_module, "fused_mlp", spy)
    fields = [make_field("siren", 2, 1, width=16, hidden_layers=1), make_field("relu", 2, 1, width=16)]
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32, kernel, expected in [(False, "auto", []), (False, "fused", ["sin", "relu"]),
                                       (True, "auto", ["sin", "relu"]), (True, "torch", [])]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            calls.clear()
            for field in fields:
                field.kernel = kernel
                field(torch.rand(5, 2))
            assert calls == expected, (tf32, kernel, calls)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
def test_fused_handles_no_rows():
    params = make_params(2, 16, 1, 1, "sin", 30.0, 30.0)
    got = outputs_and_grads(fused("sin", 30.0, 30.0), torch.zeros(0, 2), params, torch.zeros(0, 1))
    assert got[0].shape == (0, 1)
    assert all(g.shape == p.shape and not g.any() for g, p in zip(got[1:], params))


@triton.jit
def _sincos_kernel(z_ptr, sin_ptr, cos_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    sin, cos = fused_module._sincos(tl.load(z_ptr + offs, mask=mask, other=0.0))
    tl.store(sin_ptr + offs, sin, mask=mask)
    tl.store(cos_ptr + offs, cos, mask=mask)


def test_sincos_is_accurate_over_siren_pre_activations():
    """The epilogues' sin and cos agree with float64 to a few fp32 ulps for |z| up to 8192 (exact multiples of
    pi/2 neighbourhoods, negative arguments and each quadrant included)."""
    device = "cuda" if CUDA else "cpu"
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.uniform(-8192, 8192, 20000), rng.uniform(-60, 60, 20000),
                        np.arange(-40, 41) * np.pi / 2, [0.0, 1e-30, -1e-30]]).astype(np.float32)
    zt = torch.from_numpy(z).to(device)
    sin, cos = torch.empty_like(zt), torch.empty_like(zt)
    _sincos_kernel[(triton.cdiv(z.size, 1024),)](zt, sin, cos, z.size, BLOCK=1024)
    exact = z.astype(np.float64)
    assert np.abs(sin.cpu().numpy() - np.sin(exact)).max() < 4e-7
    assert np.abs(cos.cpu().numpy() - np.cos(exact)).max() < 4e-7


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
def test_gradient_scale_is_an_exact_power_of_two():
    """(scale, 1/scale) put max |dY| in [8, 16) (GRAD_TOP = 4) by exponent arithmetic, for any normal max;
    zero or non-finite dY leave the gradients unscaled."""
    for largest in [1e-30, 3e-9, 0.37, 1.0, 8.0, 15.99, 2.5e6, 1e30, 3.4e38, 0.0, float("inf"), 1e-40]:
        dy = torch.tensor([[0.5 * largest], [-largest], [0.0]], dtype=torch.float32)
        grad_max, scales = torch.zeros(1), torch.zeros(2)
        fused_module._grad_max_kernel[(1,)](dy, grad_max, dy.numel(), BLOCK=4)
        fused_module._grad_scale_kernel[(1,)](grad_max, scales)
        scale, inverse = scales.tolist()
        assert grad_max.item() == dy.abs().max().item()
        assert scale * inverse == 1.0 and np.frexp(scale)[0] == 0.5, (largest, scale)
        m = dy.abs().max().item()
        if 1e-38 < m < float("inf"):
            assert 8 <= m * scale < 16 or (scale == 2.0 ** 126 and m * scale < 16), (largest, scale)
        else:
            assert scale == 1.0, largest


def float16_reference(x, activation, omega0, omega, params, dy, chain, dtype=torch.float64):
    """The fused path's arithmetic with float16 storage: X_l, the scaled dZ'_l and the hidden weights rounded to
    float16 (from float32, as the kernels round), C_l = cos Z_l to steps of 1/32767, the rest in `dtype`; sums
    unscaled.
    Returns [y, dW_0, db_0, dW_out, db_out, *dW_l, *db_l]."""
    def h(t):
        return t.float().half().to(dtype)

    def act(z):
        return torch.sin(z) if activation == "sin" else torch.relu(z)

    def act_grad(z):
        return torch.cos(z) if activation == "sin" else (z > 0).to(z.dtype)

    scale = 2.0 ** (fused_module.GRAD_TOP.value - np.frexp(dy.abs().max().item())[1])
    x, dy = x.to(dtype), dy.to(dtype)
    w0, b0, wo, bo, *rest = [p.to(dtype) for p in params]
    count = len(rest) // 2
    ws, bs = rest[:count], rest[count:]
    zs = [omega0 * (x @ w0.T + b0)]
    for w, b in zip(ws, bs):
        zs.append(omega * (h(act(zs[-1])) @ h(w).T + b))
    xl = act(zs[-1])
    y = xl @ wo.T + bo
    true = [None] * (count + 1)  # the unscaled dZ' before rounding (the sums' operands)
    true[count] = (omega if count else omega0) * (dy @ wo) * act_grad(zs[count])
    for layer in range(count, 0, -1):
        deriv = act_grad(zs[layer - 1])
        if activation == "sin" and layer > 1:  # C_{l-1} stored in int16 fixed point; cos Z_0 is recomputed
            deriv = torch.floor(deriv.float() * 32767 + 0.5).to(dtype) / 32767
        true[layer - 1] = ((omega if layer > 1 else omega0) * (h(true[layer] * scale) @ h(ws[layer - 1])) * deriv
                           / scale)
    dw0 = true[0].T @ x if chain else h(true[0] * scale).T @ h(x) / scale
    dwh = [h(true[layer] * scale).T @ h(act(zs[layer - 1])) / scale for layer in range(1, count + 1)]
    return [y, dw0, true[0].sum(0), dy.T @ xl, dy.sum(0)] + dwh + [true[layer].sum(0) for layer in range(1, count + 1)]


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
@pytest.mark.parametrize("n,in_f,width,out_f,hidden,activation", [
    (200, 2, 64, 3, 2, "sin"), (70, 2, 32, 1, 0, "sin"), (150, 42, 32, 2, 2, "relu"), (90, 3, 16, 1, 1, "relu")])
def test_fused_tf32_stores_float16_in_interpreter(monkeypatch, n, in_f, width, out_f, hidden, activation):
    """In tf32 mode the kernels keep what they pass through memory in float16 (the cuBLAS weight gradients read
    float16 dZ'_l and X_{l-1}; in fp32 mode float32). The results match a float64 emulation of that arithmetic
    far better than exact float64; not exactly, as values within float32's error of a rounding tie may round the
    other way (often for sin, whose pre-activations omega z carry omega times larger absolute errors)."""
    omega0, omega = (45.0, 20.0) if activation == "sin" else (1.0, 1.0)
    params = make_params(in_f, width, out_f, hidden, activation, omega0, omega, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(n, in_f, generator=g) * 2 - 1
    dy = torch.randn(n, out_f, generator=g) * 1e-6  # a mean loss's small gradients: the scale brings them up
    chain = in_f <= fused_module.CHAIN_DW0_MAX_IN
    mm_dtypes = []
    original_mm = fused_module._matmul_f32

    def spy(a, b):
        mm_dtypes.append((a.dtype, b.dtype))
        return original_mm(a, b)

    monkeypatch.setattr(fused_module, "_matmul_f32", spy)
    previous = torch.backends.cuda.matmul.allow_tf32
    results = {}
    try:
        for tf32 in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            mm_dtypes.clear()
            results[tf32] = outputs_and_grads(fused(activation, omega0, omega), x, params, dy)
            # dW_l = dZ'_l^T X_{l-1} for l = 1..L, then (wide inputs) dW_0 = dZ'_0^T x
            stored = torch.float16 if tf32 else torch.float32
            assert mm_dtypes == [(stored, stored)] * (hidden + (0 if chain else 1)), (tf32, mm_dtypes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    got = results[True]
    exact = outputs_and_grads(torch_path(activation, omega0, omega), x.double(), [p.double() for p in params],
                              dy.double())
    to_exact = relative_errors(got, exact)
    if not hidden:  # no GEMM: tf32 mode changes nothing
        assert max(to_exact) < 2e-5 and all(torch.equal(a, b) for a, b in zip(got, results[False])), to_exact
        return
    assert 1e-4 < max(to_exact) < 5e-3, to_exact  # float16's (and tf32's) precision, not float32's
    emulated = float16_reference(x, activation, omega0, omega, params, dy, chain)
    to_emulated = relative_errors(got, emulated)
    assert max(to_emulated) < (0.4 if activation == "sin" else 0.1) * max(to_exact), (to_emulated, to_exact)


@pytest.mark.skipif(CUDA, reason="the interpreter runs when there is no CUDA")
@pytest.mark.parametrize("name,options", [("siren", {"width": 32, "hidden_layers": 2, "first_omega0": 60.0}),
                                          ("relu", {"width": 32, "hidden_layers": 1}),
                                          ("relu-pe", {"width": 16, "hidden_layers": 2, "frequencies": 4})])
def test_fields_take_the_fused_path(monkeypatch, name, options):
    """The fields' forward on the fused path (forced on CPU) gives the PyTorch path's values and gradients."""
    import nfields.fields.mlp as mlp_module
    import nfields.fields.siren as siren_module

    torch.manual_seed(0)
    field = make_field(name, 2, 3, **options)
    assert field.kernel == "auto" and "kernel" not in field.spec()["config"]
    assert not any("kernel" in key for key in field.state_dict())
    coords = torch.rand(2, 45, 2) * 2 - 1  # leading dims are flattened and restored
    calls = []

    def applies(kernel, x):
        calls.append(kernel)
        return kernel != "torch"

    for module in (mlp_module, siren_module):
        monkeypatch.setattr(module, "fused_applies", applies)
    results = {}
    for kernel in ("torch", "fused"):
        field.kernel = kernel
        field.zero_grad(set_to_none=True)
        y = field(coords)
        (y.square().mean()).backward()
        results[kernel] = [y.detach()] + [p.grad.clone() for p in field.parameters()]
    assert calls == ["torch", "fused"]
    assert results["fused"][0].shape == (2, 45, 3)
    for got, want in zip(results["fused"], results["torch"]):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


def test_only_mlps_the_kernels_handle_have_the_switch():
    for name in ("fourier", "gauss", "hashgrid"):
        assert not hasattr(make_field(name, 2, 1, width=16), "kernel"), name
    assert hasattr(make_field("relu-pe", 2, 1, width=16), "kernel")
    assert not hasattr(make_field("relu", 2, 1, width=48), "kernel")  # not a power of two
    assert supports(2, 256, 3, 3) and not supports(2, 512, 1, 3) and not supports(100, 64, 1, 3)


def test_kernel_fused_on_cpu_is_refused(cli):
    result = cli("fit", "image", "camera", "--size", "32", "--steps", "5", "--kernel", "fused", "--device", "cpu")
    assert result.code == 2
    message = result.err.strip()
    assert "CUDA" in message and message.count("\n") == 0, message


# ---- GPU: compiled kernels at training sizes -------------------------------------------------------------------


def tf32_check(n, in_f, width, out_f, hidden, activation):
    """Fused errors against float64 within 3x PyTorch's own errors at the same precision, in tf32 and in fp32.

    Errors are relative to each tensor's largest value (relative_errors); the floors (a few ulps of that value:
    about 20 tf32 ulps, 30 fp32 ulps) only matter where PyTorch's own error happens to be tiny (the output bias
    gradient, a plain sum)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        got, want, (x, dy, params, omega0, omega) = compare(n, in_f, width, out_f, hidden, activation, "cuda")
        plain = outputs_and_grads(torch_path(activation, omega0, omega), x, params, dy)
        torch.backends.cuda.matmul.allow_tf32 = False
        got_fp32 = outputs_and_grads(fused(activation, omega0, omega), x, params, dy)
        plain_fp32 = outputs_and_grads(torch_path(activation, omega0, omega), x, params, dy)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    for fused_got, torch_got, floor in [(got, plain, 1e-5), (got_fp32, plain_fp32, 2e-6)]:
        fused_err, plain_err = relative_errors(fused_got, want), relative_errors(torch_got, want)
        assert all(f <= 3 * p + floor for f, p in zip(fused_err, plain_err)), (floor, fused_err, plain_err)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("width", [64, 128, 256])
@pytest.mark.parametrize("n", [65536, 65536 + 37, 1000])
def test_fused_siren_on_gpu(n, width):
    tf32_check(n, 2, width, 1, 3, "sin")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("n,in_f,out_f,hidden", [(65536 + 37, 42, 3, 3), (1000, 3, 1, 1)])
def test_fused_relu_on_gpu(n, in_f, width, out_f, hidden):
    tf32_check(n, in_f, width, out_f, hidden, "relu")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name,options", [("siren", {"width": 256, "hidden_layers": 3}),
                                          ("relu-pe", {"width": 256, "hidden_layers": 3, "frequencies": 10})])
def test_fused_training_step_captures_in_a_cuda_graph(name, options):
    """Fused training steps replayed from one CUDA graph, captured as the trainer does (GraphedStep: forward,
    backward, optimizer step), give the eager fused steps' parameters (up to atomics' order). Plain SGD, so a
    last-bits difference in a gradient stays that small in the parameters (Adam's first steps turn the sign of a
    near-zero gradient component into a whole lr-sized step: 1.8 lr apart on the H100 after 8 steps)."""
    steps = 8
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        g = torch.Generator().manual_seed(0)
        coords = (torch.rand(5000, 2, generator=g) * 2 - 1).cuda()  # every random input made before capture
        target = (torch.rand(5000, 3, generator=g) * 2 - 1).cuda()
        params = {}
        for graphed in (False, True):
            torch.manual_seed(0)
            field = make_field(name, 2, 3, **options).cuda()
            field.kernel = "fused"
            initial = [p.detach().clone() for p in field.parameters()]
            optimizer = torch.optim.SGD(field.parameters(), lr=1e-3)

            def train_step(zero_grad, field=field, optimizer=optimizer):  # as Trainer._train_step
                loss = ((field(coords) - target) ** 2).mean()
                if zero_grad:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                return loss.detach(), {}

            step = GraphedStep(train_step, optimizer) if graphed else (lambda: train_step(True))
            for _ in range(steps):  # GraphedStep: 3 eager warm-up steps, then the capture and its replays
                step()
            torch.cuda.synchronize()
            assert not graphed or step.graph is not None
            params[graphed] = [p.detach().clone() for p in field.parameters()]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert any(not torch.equal(a, b) for a, b in zip(initial, params[True]))  # the replays did train
    for got, want in zip(params[True], params[False]):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


def window_median(evals: dict[int, float], milestone: int, fraction: float = 0.1) -> float:
    """The median PSNR of the evaluations in the last `fraction` of the steps up to `milestone` (included):
    single evaluations near convergence swing by tenths of a dB from step to step (Adam's oscillation)."""
    window = [p for s, p in evals.items() if milestone * (1 - fraction) <= s <= milestone]
    return statistics.median(window)


@pytest.mark.gpu
@pytest.mark.slow
@gpu
def test_fused_siren_fits_camera_as_well_as_fp32_pytorch():
    """Fused tf32 SIREN fits camera (256^2) as well as PyTorch in fp32: the medians of the evaluations (every 25
    steps) over the last 10% before steps 500 and 2000, averaged over three seeds, agree within 0.3 dB. (One run
    is not enough: the fused backward sums with atomics, so its runs differ, and near convergence Adam's
    oscillation turns that into a few tenths of a dB either way.)"""
    image = nfields.load_image("camera", size=(256,))
    milestones, every, seeds = [500, 2000], 25, (0, 1, 2)
    medians = {}
    for label, kernel, precision in [("torch-fp32", "torch", "fp32"), ("fused-tf32", "fused", "tf32")]:
        per_seed = []
        for seed in seeds:
            torch.manual_seed(seed)
            field = nfields.make_field("siren", 2, image.channels)
            _, trainer = nfields.fit_image(image, field, steps=max(milestones), device="cuda", progress=False,
                                           coords="endpoints", eval_every=every, log_every=max(milestones),
                                           checkpoint_every=10**9, kernel=kernel, precision=precision)
            evals = {e["step"]: e["psnr"] for e in trainer.history.evals}
            per_seed.append({m: window_median(evals, m) for m in milestones})
        torch.backends.cuda.matmul.allow_tf32 = False
        medians[label] = {m: round(statistics.mean(run[m] for run in per_seed), 3) for m in milestones}
    for step in milestones:
        assert abs(medians["fused-tf32"][step] - medians["torch-fp32"][step]) <= 0.3, medians
