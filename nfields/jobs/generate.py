"""One front over every generative run: `nfields generate`, interpolation between samples and
`nfields eval --fid`.

A generative run is a diffusion prior over a stage-1 run's latents (`nfields train diffusion`; the
stage-1 field decodes the sampled latents into images or voxel grids, or renders radiance fields) or an
INR-GAN (`nfields train inr-gan`). Either way a sample is a field, so it renders at any `scale`.

Radiance fields (mNIF on `scenes:DIR`) are rendered from fixed views: the object set's test circle
(make-scene's `orbit_poses(test_views)`, 30 degrees up, radius 4), the same cameras for every object and
held out of stage 1 (`radiance_objective.fixed_cameras`). A sample is then (V, H, W, 3) renders, and FID
compares all renders of the samples with the training objects' own images from those cameras.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import viz
from ..errors import NfieldsError
from ..io import atomic_path, write_json_atomic
from ..metrics.cost import gflops, parameter_count, samples_per_second
from ..train.device import resolve_device

#: Samples drawn per call while generating (bounded memory; the result does not depend on it except for
#: the diffusion sampler, whose seed covers the whole call).
GENERATE_BATCH = 256
GRID_SAMPLES = 64  # the sample grid picture shows at most this many
MESH_SAMPLES = 16  # voxel runs: meshes written for the first this many samples
SHAPE_POINTS = 2048  # voxel runs: surface points per shape for coverage / MMD (ours)
SPEED_SIZE = 64  # samples/s and GFLOPs are measured at 64^2, as in mNIF's efficiency columns
GRID_VIEWS = 8  # radiance runs: the sample grid shows at most this many of the fixed views per sample
VIDEO_SAMPLES = 4  # radiance runs: orbit videos written for the first this many samples
VIDEO_FRAMES = 48  # frames of one orbit video (2 s at 24 fps)
VIDEO_FPS = 24
#: Radiance runs: views rendered per timed call (ours: 32 views of 64^2 rays x 64 samples are 8M points, four
#: full calls of MixtureRadianceField.render_latents, enough to fill a GPU; 256 would take minutes on a CPU).
RADIANCE_SPEED_BATCH = 32


@dataclass
class GenerativeRun:
    kind: str  # "diffusion" or "inr-gan"
    folder: Path
    run: Any  # DiffusionRun or InrGanRun

    @property
    def radiance(self) -> bool:
        """Samples are radiance fields (a prior over a radiance mNIF's latents), rendered from fixed views."""
        return self.kind == "diffusion" and self.run.stage1.radiance

    @property
    def voxels(self) -> bool:
        return self.kind == "diffusion" and not self.radiance and len(self.run.stage1.model.data.image_size) == 3

    @property
    def frame(self) -> tuple[int, ...]:
        """The grid the generator was trained on: (H, W) or (D, H, W); radiance: the fixed views' (H, W)."""
        if self.radiance:
            cameras = self.run.stage1.cameras
            return cameras.height, cameras.width
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
    """n samples as float32 (n, *grid, C) in [0, 1], rendered on the training grid scaled by `scale`; radiance
    fields as (n, V, H, W, 3) renders from the fixed views."""
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


def render_latents(gen: GenerativeRun, latents: torch.Tensor, scale: float = 1.0,
                   views: list[int] | None = None) -> np.ndarray:
    """Samples' latents -> float32 renders in [0, 1] (see `sample`); `views` picks some of a radiance run's
    fixed views (None: all)."""
    if not (math.isfinite(scale) and scale > 0):
        raise NfieldsError(f"--scale must be positive, not {scale}.")
    if gen.radiance:
        cameras = gen.run.stage1.cameras.scaled(scale)
        poses = cameras.poses if views is None else cameras.poses[views]
        return gen.run.stage1.model.render_latents(latents, poses, cameras.height, cameras.width,
                                                   cameras.focal).cpu().numpy()
    if gen.kind == "diffusion":
        from .train_diffusion import decode_latents

        return decode_latents(gen.run, latents, scale).numpy()
    from .train_inr_gan import render_styles

    h, w = (max(1, round(s * scale)) for s in gen.frame)
    return np.concatenate([render_styles(gen.run, part, h, w) for part in latents.split(GENERATE_BATCH)])


def generate(run_dir: str | Path, n: int, out: str | Path, seed: int = 0, scale: float = 1.0,
             guidance: float | None = None, classes=None, device: str = "auto") -> dict[str, Any]:
    """Write n samples to folder `out`: `samples.png` (a grid of the first 64) and `samples.npz` (all, uint8);
    voxel runs also write `sample_NNN.ply` meshes (marching cubes) for the first 16; radiance runs write
    their renders from the V fixed views, (n, V, H, W, 3), a grid of the first 8 samples by up to 8 views, and
    `sample_NNN.mp4` orbit videos of the first 4 (skipped, with a note in the report, without PyAV)."""
    _check_count(n)
    gen = load_generative_run(run_dir, device)
    out = Path(out)
    if out.suffix:
        raise NfieldsError(f"--out is a folder for the samples, not a file: '{out}'.")
    parts, first = [], None
    for start in range(0, n, GENERATE_BATCH):
        count = min(GENERATE_BATCH, n - start)
        part_classes = _slice_classes(classes, start, count, n)
        latents = sample_latents(gen, count, seed + start, guidance, part_classes)  # what `sample` renders
        first = latents if first is None else first
        parts.append(render_latents(gen, latents, scale))
    samples = np.concatenate(parts)
    out.mkdir(parents=True, exist_ok=True)
    quantised = np.clip(np.round(samples * 255), 0, 255).astype(np.uint8)
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, samples=quantised)
    title = f"{n} samples of {gen.folder.name} (seed {seed}, scale {scale:g})"
    report: dict[str, Any] = {"samples": n, "shape": list(samples.shape[1:]), "out": str(out)}
    if gen.radiance:
        shown = samples[:GRID_SAMPLES // GRID_VIEWS, :GRID_VIEWS]
        viz.save_grid([list(views) for views in shown], [f"sample {i}" for i in range(len(shown))],
                      out / "samples.png", title, column_titles=[f"view {v}" for v in range(shown.shape[1])])
        report.update(save_orbit_videos(gen, first[:VIDEO_SAMPLES], out, scale))
    elif gen.voxels:
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
    return report


def save_orbit_videos(gen: GenerativeRun, latents: torch.Tensor, out: Path, scale: float) -> dict[str, Any]:
    """`sample_NNN.mp4`: each latent's field seen from VIDEO_FRAMES cameras around the fixed views' circle
    (30 degrees up, radius 4; `MixtureRadianceField.render_orbit`), at the fixed views' size times `scale`.
    Returns {"videos": [...]} and, without PyAV, {"video_note": why there are none}."""
    import importlib.util

    from ..data.video import write_video

    if importlib.util.find_spec("av") is None:  # write_video imports PyAV only when called
        return {"videos": [], "video_note": "PyAV is not installed, so no orbit videos were written "
                                            "(pip install av)."}
    cameras = gen.run.stage1.cameras.scaled(scale)
    model, videos = gen.run.stage1.model, []
    for i, latent in enumerate(latents):
        frames = model.render_orbit(latent, VIDEO_FRAMES, cameras.height, cameras.width, cameras.focal)
        path = out / f"sample_{i:03d}.mp4"
        write_video((viz.to_uint8(frame) for frame in frames), path, VIDEO_FPS)
        videos.append(str(path))
    return {"videos": videos}


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
    frames = render_latents(gen, ends[0] + t * (ends[1] - ends[0]), scale, views=[0] if gen.radiance else None)
    if gen.radiance:  # one view per step: the first fixed camera
        frames = frames[:, 0]
    elif gen.voxels:
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
    (seeded) when it is larger. Radiance runs: the training objects' images from the fixed views (their own
    held-out test views, the same cameras for every object), flattened to (objects * V, H, W, 3)."""
    if gen.radiance:
        from .radiance_objective import reference_views

        stage1 = gen.run.stage1
        values = reference_views(stage1.instances("train", stage1.config.limit).views, stage1.cameras).flatten(0, 1)
    elif gen.kind == "diffusion":
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
    at 64^2 (matmuls only), and samples rendered per second at 64^2 (batches of 256, from given latents).
    Radiance runs: learnable = field + latent table + denoiser, one field = one mixed SIREN + its latent, and
    a sample is one rendered 64^2 view (the first fixed camera), so GFLOPs per view and views per second
    (batches of RADIANCE_SPEED_BATCH views)."""
    device = gen.device
    latents = sample_latents(gen, 2, seed=0)
    views = [0] if gen.radiance else None
    if gen.kind == "diffusion":
        stage1 = gen.run.stage1.model
        learnable = parameter_count(stage1) + parameter_count(gen.run.prior.denoiser)  # latent tables included
        if gen.radiance:
            inference = stage1.field.inference_parameters()
        elif hasattr(stage1, "inference_parameters"):
            inference = stage1.inference_parameters()
        else:  # the decoder a coordinate query runs through
            inference = parameter_count(stage1) - _encoder_parameters(stage1)
        inference += math.prod(latents.shape[1:])  # a field is its decoder and its latent
    else:
        learnable = parameter_count(gen.run.generator)
        inference = gen.run.generator.inr_parameters()
    scale = SPEED_SIZE / gen.frame[-1]
    timed = RADIANCE_SPEED_BATCH if gen.radiance else GENERATE_BATCH
    batch = latents[:1].expand(timed, *latents.shape[1:]).contiguous()
    with torch.no_grad():
        flops = gflops(lambda: render_latents(gen, latents[:1], scale, views))
    speed = samples_per_second(lambda: render_latents(gen, batch, scale, views), timed, warmup=1, repeats=5,
                               device=device)
    return {"learnable_parameters": learnable, "inference_parameters": inference,
            "gflops_per_sample": flops, "samples_per_second": speed,
            "speed_size": SPEED_SIZE, "speed_unit": "views" if gen.radiance else "samples",
            "speed_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def _encoder_parameters(model) -> int:
    encoder = getattr(model, "encoder", None)
    return parameter_count(encoder) if encoder is not None else 0


def evaluate_generation(run_dir: str | Path, n: int = 10000, seed: int = 0, reference_limit: int = 10000,
                        device: str = "auto", progress: bool = True, samples_file: str | Path | None = None,
                        ) -> dict[str, Any]:
    """FID and precision/recall (k = 3) of n samples against the training set in the FID Inception's feature
    space (images); coverage and MMD with Chamfer distance against the test shapes (voxels); plus the cost
    numbers. Radiance runs: n sampled fields, each rendered from the V fixed views, against the training
    objects' images from those views (`reference_set`); FID counts renders. Written to `eval_generation.json` in the run folder. `samples_file`: score the samples of a
    `generate` call (its samples.npz) instead of drawing new ones."""
    from ..metrics.generative import check_fid_samples, fid, inception_features, precision_recall

    samples = read_samples(samples_file) if samples_file is not None else None
    gen = load_generative_run(run_dir, device)
    if samples is not None:
        n = len(samples)
    else:
        _check_count(n)
    metrics: dict[str, Any] = {"samples": n, "seed": seed}
    if gen.voxels:
        metrics.update(_shape_metrics(gen, n, seed, samples if samples_file else None))
    else:
        views = gen.run.stage1.cameras.poses.shape[0] if gen.radiance else 1
        check_fid_samples(n * views, "renders (samples x fixed views)" if gen.radiance else "samples")
        if samples_file is None:
            samples = np.concatenate([sample(gen, min(GENERATE_BATCH, n - s), seed + s)
                                      for s in range(0, n, GENERATE_BATCH)])
        if gen.radiance:
            if samples.ndim != 5 or samples.shape[1] != views:
                raise NfieldsError(f"the samples file holds {tuple(samples.shape)} values, not renders from the run's "
                                   f"{views} fixed views; write it with 'nfields generate' on this run.")
            samples = samples.reshape(-1, *samples.shape[2:])
            metrics["renders"] = len(samples)
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


def read_samples(path: str | Path) -> np.ndarray:
    """The `samples` array of a samples.npz that `generate` wrote: numbers, never pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise NfieldsError(f"samples file '{path}' does not exist; give the samples.npz of a 'nfields generate' call.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "samples" not in data.files:
                raise NfieldsError(f"'{path}' holds no 'samples' array; give the samples.npz of a 'nfields "
                                   f"generate' call.")
            samples = data["samples"]
    except NfieldsError:
        raise
    except (OSError, ValueError, EOFError) as error:  # not an npz, damaged, or an array of objects
        raise NfieldsError(f"cannot read samples file '{path}' ({str(error).splitlines()[0]}); give the "
                           f"samples.npz of a 'nfields generate' call.") from None
    if samples.dtype.kind not in "uif" or samples.ndim < 2 or len(samples) == 0:
        raise NfieldsError(f"'{path}' holds {samples.dtype} values of shape {samples.shape}, not samples; give the "
                           f"samples.npz of a 'nfields generate' call.")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise NfieldsError(f"'{path}' holds NaN or infinite samples; generate them again.")
    return samples


def _shape_metrics(gen: GenerativeRun, n: int, seed: int, samples: np.ndarray | None) -> dict[str, float]:
    from ..data.voxels import surface_points
    from ..metrics.generative import coverage_mmd

    if samples is None:
        samples = np.concatenate([sample(gen, min(GENERATE_BATCH, n - s), seed + s)
                                  for s in range(0, n, GENERATE_BATCH)])
    test = gen.run.stage1.instances("test")
    generated = _clouds(_unit(samples[..., 0]), seed, surface_points)
    reference = _clouds(_unit(test.images[..., 0].cpu().numpy(), test.value_scale), seed, surface_points)
    result = coverage_mmd(generated, reference, device=gen.device)
    return {"coverage": result.coverage, "mmd": result.mmd, "reference_shapes": len(reference),
            "shape_points": SHAPE_POINTS, "empty_samples": n - len(generated)}


def _unit(grids: np.ndarray, stored_one: float = 255.0) -> np.ndarray:
    """Occupancy in [0, 1] from stored values (samples.npz: 8-bit; the voxel dataset: 0/1)."""
    return grids.astype(np.float32) / (stored_one if grids.dtype == np.uint8 else 1.0)


def _clouds(grids: np.ndarray, seed: int, surface_points) -> np.ndarray:
    """Surface points of each grid with a surface; empty (or full) grids have none and are left out."""
    clouds = []
    for i, grid in enumerate(grids):
        try:
            clouds.append(surface_points(grid, SHAPE_POINTS, seed + i))
        except (ValueError, RuntimeError, NfieldsError):
            continue
    if not clouds:
        raise NfieldsError("no sample has a surface (every grid is empty or full); the prior has not learnt shapes.")
    return np.stack(clouds)
