"""One front over every generative run: `nfields generate`, interpolation between samples and
`nfields eval --fid`.

A generative run is a diffusion prior over a stage-1 run's latents (`nfields train diffusion`; the
stage-1 field decodes the sampled latents into images or voxel grids) or an INR-GAN
(`nfields train inr-gan`). Either way a sample is a field, so it renders at any `scale`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import viz
from ..errors import NfieldsError
from ..io import atomic_path, write_json_atomic
from ..metrics.cost import gflops, parameter_count
from ..train.device import resolve_device

#: Samples drawn per call while generating (bounded memory; the result does not depend on it except for
#: the diffusion sampler, whose seed covers the whole call).
GENERATE_BATCH = 256
GRID_SAMPLES = 64  # the sample grid picture shows at most this many
MESH_SAMPLES = 16  # voxel runs: meshes written for the first this many samples
SHAPE_POINTS = 2048  # voxel runs: surface points per shape for coverage / MMD (ours)
SPEED_SIZE = 64  # samples/s and GFLOPs are measured at 64^2, as in mNIF's efficiency columns


@dataclass
class GenerativeRun:
    kind: str  # "diffusion" or "inr-gan"
    folder: Path
    run: Any  # DiffusionRun or InrGanRun

    @property
    def voxels(self) -> bool:
        return self.kind == "diffusion" and len(self.run.stage1.model.data.image_size) == 3

    @property
    def frame(self) -> tuple[int, ...]:
        """The grid the generator was trained on: (H, W) or (D, H, W)."""
        if self.kind == "diffusion":
            return tuple(self.run.stage1.model.data.image_size)
        return tuple(self.run.frame)

    @property
    def device(self) -> torch.device:
        if self.kind == "diffusion":
            return self.run.device
        return next(self.run.generator.parameters()).device


def load_generative_run(run_dir: str | Path, device: str = "auto") -> GenerativeRun:
    from .ginr_outputs import is_ginr_run
    from .train_diffusion import is_diffusion_run, load_diffusion_run
    from .train_inr_gan import is_inr_gan_run, load_inr_gan_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NfieldsError(f"run folder '{run_dir}' does not exist; give the --out folder of 'nfields train "
                           f"diffusion' or 'nfields train inr-gan'.")
    if is_diffusion_run(run_dir):
        return GenerativeRun("diffusion", run_dir, load_diffusion_run(run_dir, device))
    if is_inr_gan_run(run_dir):
        return GenerativeRun("inr-gan", run_dir, load_inr_gan_run(run_dir, resolve_device(device)))
    if is_ginr_run(run_dir):
        raise NfieldsError(f"'{run_dir}' is a stage-1 run, which has no prior to sample from; train one on its "
                           f"latents first: nfields train diffusion --latents {run_dir}")
    raise NfieldsError(f"'{run_dir}' is not a generative run; give the --out folder of 'nfields train diffusion' "
                       f"or 'nfields train inr-gan'.")


# -- sampling --------------------------------------------------------------------------------------------

def _check_count(n: int) -> None:
    if n < 1:
        raise NfieldsError(f"--n must be at least 1 sample, not {n}.")


def sample(gen: GenerativeRun, n: int, seed: int = 0, scale: float = 1.0, guidance: float | None = None,
           classes=None) -> np.ndarray:
    """n samples as float32 (n, *grid, C) in [0, 1], rendered on the training grid scaled by `scale`."""
    return render_latents(gen, sample_latents(gen, n, seed, guidance, classes), scale)


def sample_latents(gen: GenerativeRun, n: int, seed: int = 0, guidance: float | None = None,
                   classes=None) -> torch.Tensor:
    """What identifies each sample: stage-1 latents (diffusion) or styles w (INR-GAN), seeds seed, seed+1, ..."""
    _check_count(n)
    if gen.kind == "diffusion":
        from .train_diffusion import sample_latents as prior_samples

        return prior_samples(gen.run, n, seed, guidance, classes)
    if guidance is not None or classes is not None:
        raise NfieldsError("--guidance and --class need a class-conditional diffusion prior; an INR-GAN has none.")
    from .train_inr_gan import latents

    z = latents(gen.run, range(seed, seed + n)).to(gen.device)
    with torch.no_grad():
        return gen.run.generator.mapping(z)


def render_latents(gen: GenerativeRun, latents: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    if not scale > 0:
        raise NfieldsError(f"--scale must be positive, not {scale}.")
    if gen.kind == "diffusion":
        from .train_diffusion import decode_latents

        return decode_latents(gen.run, latents, scale).numpy()
    from .train_inr_gan import render_styles

    h, w = (max(1, round(s * scale)) for s in gen.frame)
    return np.concatenate([render_styles(gen.run, part, h, w) for part in latents.split(GENERATE_BATCH)])


def generate(run_dir: str | Path, n: int, out: str | Path, seed: int = 0, scale: float = 1.0,
             guidance: float | None = None, classes=None, device: str = "auto") -> dict[str, Any]:
    """Write n samples to folder `out`: `samples.png` (a grid of the first 64) and `samples.npz` (all, uint8);
    voxel runs also write `sample_NNN.ply` meshes (marching cubes) for the first 16."""
    _check_count(n)
    gen = load_generative_run(run_dir, device)
    out = Path(out)
    if out.suffix:
        raise NfieldsError(f"--out is a folder for the samples, not a file: '{out}'.")
    parts = []
    for start in range(0, n, GENERATE_BATCH):
        count = min(GENERATE_BATCH, n - start)
        part_classes = _slice_classes(classes, start, count, n)
        parts.append(sample(gen, count, seed + start, scale, guidance, part_classes))
    samples = np.concatenate(parts)
    out.mkdir(parents=True, exist_ok=True)
    quantised = np.clip(np.round(samples * 255), 0, 255).astype(np.uint8)
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, samples=quantised)
    title = f"{n} samples of {gen.folder.name} (seed {seed}, scale {scale:g})"
    if gen.voxels:
        from ..data.voxels import occupancy_to_mesh, save_mesh, save_voxel_grid

        grids = samples[..., 0]
        save_voxel_grid(grids[:GRID_SAMPLES], out / "samples.png", title)
        for i, grid in enumerate(grids[:MESH_SAMPLES]):
            try:
                save_mesh(out / f"sample_{i:03d}.ply", *occupancy_to_mesh(grid))
            except (ValueError, RuntimeError, NfieldsError):
                pass  # an empty (or full) sample has no surface
    else:
        save_sample_grid(samples[:GRID_SAMPLES], out / "samples.png", title)
    return {"samples": n, "shape": list(samples.shape[1:]), "out": str(out)}


def _slice_classes(classes, start: int, count: int, n: int):
    if classes is None:
        return None
    labels = torch.as_tensor(classes).flatten()
    if labels.numel() == 1:
        return labels
    if labels.numel() != n:
        raise NfieldsError(f"give one class or one per sample ({n}), not {labels.numel()}.")
    return labels[start:start + count]


def save_sample_grid(images: np.ndarray, path: Path, title: str) -> None:
    columns = min(8, len(images))
    rows = [list(images[i:i + columns]) for i in range(0, len(images), columns)]
    viz.save_grid(rows, [""] * len(rows), path, title)


def interpolate_samples(run_dir: str | Path, seed_a: int, seed_b: int, out: str | Path, steps: int = 8,
                        scale: float = 1.0, device: str = "auto") -> Path:
    """A strip from the sample of seed A to the sample of seed B (each what `generate --n 1 --seed S` gives),
    along the straight line between their latents (mNIF's interpolation of contexts; INR-GAN: in w)."""
    if steps < 2:
        raise NfieldsError(f"--steps must be at least 2, not {steps}.")
    gen = load_generative_run(run_dir, device)
    ends = torch.cat([sample_latents(gen, 1, seed_a), sample_latents(gen, 1, seed_b)])
    t = torch.linspace(0, 1, steps, device=ends.device).view(-1, *[1] * (ends.dim() - 1))
    frames = render_latents(gen, ends[0] + t * (ends[1] - ends[0]), scale)
    if gen.voxels:
        from ..data.voxels import render_voxels

        frames = np.stack([render_voxels(grid[..., 0]) for grid in frames])
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise NfieldsError(f"--out must be an image file (.png), not '{out}'.")
    viz.save_grid([list(frames)], [""], out, f"seed {seed_a} -> seed {seed_b}",
                  column_titles=[f"t={float(x):.2f}" for x in t.flatten()])
    return out


# -- evaluation --------------------------------------------------------------------------------------------

def reference_set(gen: GenerativeRun, limit: int, seed: int = 0) -> np.ndarray:
    """The training set the generator learnt, uint8 (N, *grid, C), at most `limit` instances drawn at random
    (seeded) when it is larger."""
    if gen.kind == "diffusion":
        data = gen.run.stage1.instances("train")
        values = data.images.cpu()
    else:
        from .train_inr_gan import TrainInrGanConfig, load_images

        config = TrainInrGanConfig(**{k: v for k, v in gen.run.config.items()
                                      if k in TrainInrGanConfig.__dataclass_fields__})
        values = load_images(config, "train")
    values = torch.as_tensor(values)
    if limit and len(values) > limit:
        values = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(seed))[:limit]]
    return values.numpy()


def cost_numbers(gen: GenerativeRun) -> dict[str, float]:
    """mNIF's columns: learnable parameters, parameters of one generated field, GFLOPs to render one sample
    at 64^2 (matmuls only), and samples rendered per second at 64^2 (batches of 256, from given latents)."""
    device = gen.device
    if gen.kind == "diffusion":
        stage1 = gen.run.stage1.model
        learnable = parameter_count(stage1) + parameter_count(gen.run.prior.denoiser)
        inference = getattr(stage1, "inference_parameters", None)
        latents = sample_latents(gen, 2, seed=0)
        inference = inference() if inference else parameter_count(stage1) - _encoder_parameters(stage1)
        per_sample = math.prod(latents.shape[1:])
    else:
        learnable = parameter_count(gen.run.generator)
        inference = gen.run.generator.inr_parameters()
        latents = sample_latents(gen, 2, seed=0)
        per_sample = 0
    scale = SPEED_SIZE / gen.frame[-1]
    batch = latents[:1].expand(GENERATE_BATCH, *latents.shape[1:]).contiguous()
    with torch.no_grad():
        flops = gflops(lambda: render_latents(gen, latents[:1], scale))
    seconds = _median_seconds(lambda: render_latents(gen, batch, scale), device)
    return {"learnable_parameters": learnable, "inference_parameters": inference + per_sample,
            "gflops_per_sample": flops, "samples_per_second": GENERATE_BATCH / seconds,
            "speed_size": SPEED_SIZE, "speed_device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu"}


def _encoder_parameters(model) -> int:
    encoder = getattr(model, "encoder", None)
    return parameter_count(encoder) if encoder is not None else 0


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate_generation(run_dir: str | Path, n: int = 10000, seed: int = 0, reference_limit: int = 10000,
                        device: str = "auto", progress: bool = True, samples_file: str | Path | None = None,
                        ) -> dict[str, Any]:
    """FID and precision/recall (k = 3) of n samples against the training set in the FID Inception's feature
    space (images); coverage and MMD with Chamfer distance against the test shapes (voxels); plus the cost
    numbers. Written to `eval_generation.json` in the run folder. `samples_file`: score the samples of a
    `generate` call (its samples.npz) instead of drawing new ones."""
    from ..metrics.generative import check_fid_samples, fid, inception_features, precision_recall

    gen = load_generative_run(run_dir, device)
    if samples_file is not None:
        with np.load(samples_file) as data:
            samples = data["samples"]
        n = len(samples)
    else:
        _check_count(n)
    metrics: dict[str, Any] = {"samples": n, "seed": seed}
    if gen.voxels:
        metrics.update(_shape_metrics(gen, n, seed, samples if samples_file else None))
    else:
        check_fid_samples(n)
        if samples_file is None:
            samples = np.concatenate([sample(gen, min(GENERATE_BATCH, n - s), seed + s)
                                      for s in range(0, n, GENERATE_BATCH)])
        reference = reference_set(gen, reference_limit, seed)
        check_fid_samples(len(reference), "training images")
        feature_device = gen.device
        fake = inception_features(samples, device=feature_device, progress=progress)
        real = inception_features(reference, device=feature_device, progress=progress)
        pr = precision_recall(real, fake, k=3, device=feature_device)
        metrics.update(fid=fid(real, fake), precision=pr.precision, recall=pr.recall, f1=pr.f1,
                       reference_images=len(reference))
    metrics.update(cost_numbers(gen))
    if gen.kind == "diffusion":
        stage1_metrics = gen.run.stage1.folder / "metrics.json"
        if stage1_metrics.exists():
            metrics["stage1"] = json.loads(stage1_metrics.read_text())
    write_json_atomic(gen.folder / "eval_generation.json", metrics)
    return metrics


def _shape_metrics(gen: GenerativeRun, n: int, seed: int, samples: np.ndarray | None) -> dict[str, float]:
    from ..data.voxels import surface_points
    from ..metrics.generative import coverage_mmd

    if samples is None:
        samples = np.concatenate([sample(gen, min(GENERATE_BATCH, n - s), seed + s)
                                  for s in range(0, n, GENERATE_BATCH)])
    test = gen.run.stage1.instances("test").images.cpu().numpy()
    generated = _clouds(samples[..., 0], seed, surface_points)
    reference = _clouds(test[..., 0], seed, surface_points)
    result = coverage_mmd(generated, reference, device=gen.device)
    return {"coverage": result.coverage, "mmd": result.mmd, "reference_shapes": len(reference),
            "shape_points": SHAPE_POINTS, "empty_samples": n - len(generated)}


def _clouds(grids: np.ndarray, seed: int, surface_points) -> np.ndarray:
    """Surface points of each grid with a surface; empty (or full) grids have none and are left out."""
    clouds = []
    for i, grid in enumerate(grids):
        grid = grid.astype(np.float32) / (255.0 if grid.dtype == np.uint8 else 1.0)
        try:
            clouds.append(surface_points(grid, SHAPE_POINTS, seed + i))
        except (ValueError, RuntimeError, NfieldsError):
            continue
    if not clouds:
        raise NfieldsError("no sample has a surface (every grid is empty or full); the prior has not learnt shapes.")
    return np.stack(clouds)
