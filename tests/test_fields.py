"""The field zoo: shapes, fitting quality, SIREN's initialisation, the hash encoding's gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import nfields
from nfields.encodings import HashGridEncoding
from nfields.fields import field_from_spec, parameter_count
from nfields.nn import SineLinear

ALL_FIELDS = ["fourier", "gauss", "hashgrid", "relu", "relu-pe", "siren"]


def test_registry_lists_every_field():
    assert nfields.FIELDS.names() == ALL_FIELDS


def test_unknown_field_is_a_user_error():
    with pytest.raises(nfields.NfieldsError, match="did you mean 'siren'"):
        nfields.make_field("sirne", 2, 1)
    with pytest.raises(nfields.NfieldsError, match="no option 'widht'"):
        nfields.make_field("siren", 2, 1, widht=3)
    with pytest.raises(nfields.NfieldsError, match="must be a int"):
        nfields.make_field("siren", 2, 1, width="wide")


# -- shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FIELDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_field_output_shapes(name, channels):
    """Default configuration: (B, N, 2) -> (B, N, C) and (N, 2) -> (N, C), finite float32."""
    torch.manual_seed(0)
    field = nfields.make_field(name, 2, channels)
    assert isinstance(field, nfields.Field)
    batched = torch.rand(3, 5, 2) * 2 - 1
    flat = batched.reshape(15, 2)
    with torch.no_grad():
        out_batched = field(batched)
        out_flat = field(flat)
    assert out_batched.shape == (3, 5, channels)
    assert out_flat.shape == (15, channels)
    assert out_flat.dtype == torch.float32
    assert torch.isfinite(out_flat).all()
    # The leading dimensions are only a batch: the same points give the same values either way.
    torch.testing.assert_close(out_batched.reshape(15, channels), out_flat, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_FIELDS)
def test_field_rebuilds_from_spec(name):
    torch.manual_seed(0)
    options = {"log2_table_size": 10, "levels": 4} if name == "hashgrid" else {"width": 16}
    field = nfields.make_field(name, 2, 3, **options)
    copy = field_from_spec(field.spec())
    copy.load_state_dict(field.state_dict())
    coords = torch.rand(50, 2) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(copy(coords), field(coords))
    assert parameter_count(copy) == parameter_count(field) > 0


def test_hashgrid_field_takes_3d_coordinates():
    field = nfields.make_field("hashgrid", 3, 4, levels=4, log2_table_size=10)
    with torch.no_grad():
        assert field(torch.rand(2, 7, 3) * 2 - 1).shape == (2, 7, 4)


# -- fitting quality -----------------------------------------------------------------------------

# Narrow fields, 300 full-batch steps on the 32x32 gray test image (about 1 s each on 2 cores).
# Measured with seeds 0-4 (dB): relu 22-24.5, relu-pe 40-42.5, fourier 69-92, siren 46-47.5,
# gauss 45-47.5, hashgrid > 140. Bars sit a few dB (or more, for the unstable ones) below.
FIT_STEPS = 300
FIT_SETUP = {
    "relu": (dict(width=64, hidden_layers=2), 18.0),
    "relu-pe": (dict(width=64, hidden_layers=2, frequencies=6), 35.0),
    "fourier": (dict(width=64, hidden_layers=2, features=64), 50.0),
    "siren": (dict(width=64, hidden_layers=2), 40.0),
    "gauss": (dict(width=64, hidden_layers=2), 40.0),
    "hashgrid": (dict(levels=8, log2_table_size=12, base_resolution=4, width=32), 80.0),
}


@pytest.fixture(scope="module")
def fit_results(image_array):
    """name -> FittedImage, fitted once per module and shared."""
    signal = nfields.ImageSignal(image_array(32, 32, 1), "test")
    cache = {}

    def get(name):
        if name not in cache:
            options, _ = FIT_SETUP[name]
            torch.manual_seed(0)
            field = nfields.make_field(name, 2, 1, **options)
            fitted, trainer = nfields.fit_image(signal, field, steps=FIT_STEPS, device="cpu", progress=False)
            assert trainer.step == FIT_STEPS
            cache[name] = fitted
        return cache[name]

    return get


def test_fit_setup_covers_every_field():
    assert sorted(FIT_SETUP) == ALL_FIELDS


@pytest.mark.parametrize("name", ALL_FIELDS)
def test_field_fits_small_image(fit_results, name):
    fitted = fit_results(name)
    _, bar = FIT_SETUP[name]
    assert fitted.metrics["psnr"] > bar, f"{name}: {fitted.metrics['psnr']:.2f} dB <= {bar} dB"
    assert 0.0 < fitted.metrics["ssim"] <= 1.0 + 1e-5  # float32 SSIM of a perfect fit can read 1.0000008
    image = fitted.render()
    assert image.shape == (32, 32, 1) and image.min() >= 0 and image.max() <= 1


def test_relu_shows_spectral_bias(fit_results):
    """A plain ReLU MLP on raw coordinates cannot fit the edges; SIREN (same width, depth and
    steps) can: the gap is the point of every other field."""
    relu, siren = fit_results("relu").metrics["psnr"], fit_results("siren").metrics["psnr"]
    assert relu < 28.0
    assert siren > relu + 12.0
    for name in ("relu-pe", "fourier", "gauss", "hashgrid"):
        assert fit_results(name).metrics["psnr"] > relu + 10.0, name


def test_fit_without_run_dir_writes_nothing(tmp_path, monkeypatch, image_array):
    monkeypatch.chdir(tmp_path)
    signal = nfields.ImageSignal(image_array(16, 16, 1), "tiny")
    field = nfields.make_field("siren", 2, 1, width=16, hidden_layers=1)
    nfields.fit_image(signal, field, steps=5, device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- SIREN's initialisation (Sitzmann et al. 2020, Sec. 3.2 and supplement) ----------------------

def arcsine_cdf(x: np.ndarray) -> np.ndarray:
    """CDF of sin(U) for U uniform over a period: the arcsine distribution on [-1, 1]."""
    return (2 / math.pi) * np.arcsin(np.sqrt((np.clip(x, -1, 1) + 1) / 2))


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def ks_distance(samples: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov statistic sup |F_n - F|."""
    x = np.sort(samples)
    n = len(x)
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(0, n) / n)))


@pytest.fixture(scope="module")
def siren_activations():
    """Pre-activations omega0 (W x + b) and outputs sin(.) of every sine layer of a deep SIREN
    (6 hidden layers of 512) on uniform coordinates in [-1, 1]."""
    torch.manual_seed(0)
    field = nfields.make_field("siren", 2, 1, width=512, hidden_layers=6)
    pre, post = [], []

    def hook(module, inputs, output):
        x = inputs[0]
        pre.append((module.omega0 * F.linear(x, module.linear.weight, module.linear.bias)).flatten().numpy())
        post.append(output.flatten().numpy())

    layers = [m for m in field.modules() if isinstance(m, SineLinear)]
    assert len(layers) == 7  # the first layer + 6 hidden
    for layer in layers:
        layer.register_forward_hook(hook)
    with torch.no_grad():
        field(torch.rand(2048, 2) * 2 - 1)
    return pre, post


def test_siren_hidden_preactivations_are_standard_normal_at_every_depth(siren_activations):
    pre, _ = siren_activations
    hidden = pre[1:]  # the first layer sees raw coordinates, not arcsine-distributed inputs
    stds = [float(p.std()) for p in hidden]
    for depth, p in enumerate(hidden, start=1):
        assert 0.7 < p.std() < 1.4, f"layer {depth}: std {p.std():.3f}"
        assert abs(p.mean()) < 0.15, f"layer {depth}: mean {p.mean():.3f}"
        # Roughly Gaussian in shape too (the pooled, standardised pre-activations).
        assert ks_distance(p / p.std(), normal_cdf) < 0.06, f"layer {depth}"
    # Stable across depth: neither growing nor shrinking.
    assert max(stds) / min(stds) < 1.15, stds
    # The first layer spreads the input over many periods of the sine (omega0 = 30).
    assert pre[0].std() > 5


def test_siren_activations_follow_the_arcsine_distribution(siren_activations):
    _, post = siren_activations
    bins = np.linspace(-1, 1, 21)
    expected = np.diff(arcsine_cdf(bins))
    for depth, a in enumerate(post):
        assert 0.45 < a.var() < 0.55, f"layer {depth}: variance {a.var():.3f} (arcsine: 0.5)"
        assert ks_distance(a, arcsine_cdf) < 0.06, f"layer {depth}"
        # U-shaped: the histogram matches the arcsine's bin masses, heavy at +-1, light at 0.
        observed = np.histogram(a, bins)[0] / a.size
        assert np.abs(observed - expected).max() < 0.03, f"layer {depth}"
        assert observed[0] > 2 * observed[10] and observed[-1] > 2 * observed[10]


def test_siren_weight_init_bounds():
    torch.manual_seed(0)
    width = 128
    field = nfields.make_field("siren", 2, 3, width=width, hidden_layers=2)
    linears = [m for m in field.modules() if isinstance(m, torch.nn.Linear)]
    first, hidden, last = linears[0], linears[1:-1], linears[-1]
    assert first.weight.abs().max() <= 1 / 2
    for layer in hidden + [last]:
        bound = math.sqrt(6 / width) / 30
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # uniform over the whole range


# -- hash encoding -------------------------------------------------------------------------------

def tiny_encoding(dims: int) -> HashGridEncoding:
    """3 levels, 64-entry tables: level 0 dense, the finer ones hashed (collisions included)."""
    base = 4 if dims == 2 else 2  # 2D: (5^2=25 dense, 81, 289 hashed); 3D: (27 dense, 125, 729 hashed)
    enc = HashGridEncoding(dims, levels=3, log2_table_size=6, features_per_level=2, base_resolution=base,
                           growth_factor=2.0).double()
    with torch.no_grad():
        enc.table.uniform_(-1, 1)  # large features so that every term of the gradient matters
    return enc


def points_inside_cells(enc: HashGridEncoding, n: int, dims: int, margin: float = 0.1, seed: int = 0):
    """n points whose position within its cell is in [margin, 1 - margin] at every level and
    along every axis, so finite differences never cross a cell boundary."""
    generator = torch.Generator().manual_seed(seed)
    kept = []
    while sum(len(k) for k in kept) < n:
        x = torch.rand(4096, dims, generator=generator, dtype=torch.float64) * 1.9 - 0.95
        u = (x + 1) * 0.5 * enc.resolutions.double()[:, None, None]
        frac = u - torch.floor(u)
        ok = ((frac > margin) & (frac < 1 - margin)).all(-1).all(0)
        kept.append(x[ok])
    return torch.cat(kept)[:n]


def test_tiny_encoding_has_dense_and_hashed_levels():
    for dims in (2, 3):
        enc = tiny_encoding(dims)
        assert enc.dense.tolist() == [True, False, False]
        assert enc.out_features == 6


@pytest.mark.parametrize("dims", [2, 3])
def test_hash_encoding_gradcheck(dims):
    enc = tiny_encoding(dims)
    x = points_inside_cells(enc, 6, dims).requires_grad_(True)
    table = enc.table.detach().clone().requires_grad_(True)

    def f(x, table):
        return torch.func.functional_call(enc, {"table": table}, (x,))

    assert torch.autograd.gradcheck(f, (x, table), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(f, (x, table), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_hash_encoding_input_gradient_is_differentiable(dims):
    """What an Eikonal loss needs: d/dtable of a loss on d(out)/dx, checked numerically."""
    enc = tiny_encoding(dims)
    x = points_inside_cells(enc, 4, dims, seed=1)
    table = enc.table.detach().clone().requires_grad_(True)

    def grad_norm(table):
        xi = x.clone().requires_grad_(True)
        out = torch.func.functional_call(enc, {"table": table}, (xi,))
        (g,) = torch.autograd.grad(out.sum(), xi, create_graph=True)
        return (g**2).sum(-1)

    assert torch.autograd.gradcheck(grad_norm, (table,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_dense_level_has_no_collisions(dims):
    """Every vertex of a dense level reads its own table entry, and the level fills its block."""
    enc = tiny_encoding(dims)
    resolution = int(enc.resolutions[0])
    size = (resolution + 1) ** dims
    with torch.no_grad():
        enc.table.zero_()
        enc.table[:, 0] = torch.arange(len(enc.table), dtype=torch.float64)  # entry id in feature 0
    axes = [torch.arange(resolution + 1, dtype=torch.float64)] * dims
    vertices = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dims)
    x = 2 * vertices / resolution - 1  # exactly on the grid's vertices
    with torch.no_grad():
        ids = enc(x)[:, 0]  # level 0, feature 0
    rounded = torch.round(ids)
    assert torch.allclose(ids, rounded, atol=1e-9)  # on a vertex, one entry has all the weight
    ids = rounded.long()
    assert len(torch.unique(ids)) == len(vertices) == size
    assert sorted(ids.tolist()) == list(range(int(enc.offsets[0]), int(enc.offsets[0]) + size))


def test_hashed_levels_do_collide_but_stay_in_their_block():
    """Sanity of the test set-up: level 1 has more vertices than entries."""
    enc = tiny_encoding(2)
    resolution = int(enc.resolutions[1])
    assert (resolution + 1) ** 2 > enc.table_size
    with torch.no_grad():
        enc.table.zero_()
        enc.table[:, 0] = torch.arange(len(enc.table), dtype=torch.float64)
    axes = [torch.arange(resolution + 1, dtype=torch.float64)] * 2
    vertices = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        ids = torch.round(enc(2 * vertices / resolution - 1)[:, 2]).long()  # level 1, feature 0
    start = int(enc.offsets[1])
    assert ids.min() >= start and ids.max() < start + enc.table_size
    assert len(torch.unique(ids)) <= enc.table_size < len(vertices)


@pytest.mark.parametrize("dims", [2, 3])
def test_hash_encoding_is_continuous_across_cell_boundaries(dims):
    enc = tiny_encoding(dims)
    generator = torch.Generator().manual_seed(3)
    base = torch.rand(20, dims, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    eps = 1e-9
    # Coordinate 0 of each point placed on a boundary shared by every level (x = 0 and x = -0.5
    # are vertices of the 4-, 8- and 16-cell grids; x = 0 of the 2-, 4-, 8-cell ones in 3D).
    for boundary in (0.0, -0.5):
        on = base.clone()
        on[:, 0] = boundary
        left, right = on.clone(), on.clone()
        left[:, 0] -= eps
        right[:, 0] += eps
        with torch.no_grad():
            jump = (enc(right) - enc(left)).abs().max()
            value_scale = enc(on).abs().max()
        assert value_scale > 0.1
        assert jump < 1e-6, f"boundary x={boundary}: jump {jump:.3g}"
    # Points exactly on a vertex along every axis match their neighbours too.
    with torch.no_grad():
        corner = torch.zeros(1, dims, dtype=torch.float64)
        assert (enc(corner + eps) - enc(corner - eps)).abs().max() < 1e-6


def test_hash_encoding_shapes_and_dtype():
    enc = HashGridEncoding(2, levels=4, log2_table_size=8, features_per_level=2, base_resolution=4)
    out = enc(torch.rand(3, 5, 2) * 2 - 1)
    assert out.shape == (3, 5, 8) and out.dtype == torch.float32
