"""What a generalizable-INR run gives back: metrics and pictures after training, evaluation with
test-time optimisation, latents of new inputs, renders at any resolution, interpolations, and the
locality picture (paper Fig. 5: zero one latent token, show where the output changes)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import viz
from ..errors import NfieldsError
from ..fields import parameter_count
from ..ginr import GeneralizableINR, TokenINR, ginr_from_spec
from ..io import atomic_path, write_json_atomic
from ..train.manifest import is_run_of
from ..train.run import load_run_config, load_trained
from .train_ginr import (InstanceData, TrainGINRConfig, batch_psnr, eval_batch, evaluate_instances,
                         instances_per_second, load_instances, support_and_target_views, to_device)

SHOWN = 8  # instances in reconstruction grids
LOCALITY_TOKENS = 5  # tokens zeroed in the locality picture (a fixed seeded choice, as the paper's Fig. 12)
TOP_FRACTION = 0.1  # locality score: the share of a token's effect that falls on its top 10% of pixels


# -- after training ------------------------------------------------------------------------------------

def write_run_outputs(out: Path, model: GeneralizableINR, config: TrainGINRConfig, trainer, train: InstanceData,
                      test: InstanceData, device: torch.device, trained_steps: int) -> dict[str, Any]:
    """metrics.json, curve.png, the reconstruction grid and (token methods) locality.png."""
    model.eval()
    final = trainer.history.evals[-1] if trainer.history.evals else trainer.objective.evaluate()
    metrics: dict[str, Any] = {
        "method": config.field, "dataset": config.source,
        "psnr": final["psnr"], **{k: v for k, v in final.items() if k.startswith("psnr_")},
        **{k: final[k] for k in ("accuracy", "iou") if k in final},
        "steps": trainer.step, "epochs": trainer.step * config.batch / len(train), "seconds": trainer.seconds,
        "instances_per_second": instances_per_second(trainer, config.batch),
        "params": parameter_count(model), "train_instances": len(train), "test_instances": len(test),
        "batch": config.batch, "device": str(device),
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    if hasattr(model, "inference_parameters"):  # mNIF: the one mixed SIREN a sample is rendered with
        metrics["inference_params"] = model.inference_parameters()
    if test.images is not None:
        scores = evaluate_instances(model, train, limit=min(len(train), 1000))
        metrics.update({f"train_{name}": float(values.mean()) for name, values in scores.items()})
        save_reconstructions(model, test, out / "reconstructions.png", f"{config.field} on {config.source}: test")
    else:
        save_view_predictions(model, test, config.support_views, out / "views.png", f"{config.field}: novel views")
    if isinstance(model, TokenINR):
        metrics.update(save_locality(model, test, out / "locality.png",
                                     f"{config.field}: change after zeroing one latent token"))
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png",
                   f"{config.field} on {config.source}")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def save_reconstructions(model: GeneralizableINR, data: InstanceData, path: Path, title: str,
                         count: int = SHOWN, optimized: torch.Tensor | None = None, optimized_title: str = "") -> None:
    """Truth and reconstruction of the first `count` instances (voxel grids as pictures of their shapes); with
    `optimized`, the latents of those instances after test-time optimisation, a third row decoded from them."""
    count = min(count, len(data))
    batch = eval_batch(model, count)
    images = data.float_images(torch.arange(count, device=data.images.device))
    rows, titles, captions = [pictures(images)], ["truth"], [None]
    encoded = []
    for start in range(0, count, batch):
        with torch.no_grad():
            encoded.append(model.encode(images[start:start + batch]))
    for name, latents in (("reconstruction" if optimized is None else "one pass", encoded),
                          (optimized_title, None if optimized is None else list(optimized[:count].split(batch)))):
        if latents is None:
            continue
        with torch.no_grad():
            prediction = torch.cat([model.render(z, shape=images.shape[1:-1]) for z in latents]).clamp(0, 1)
        rows.append(pictures(prediction))
        titles.append(name)
        captions.append([f"{s:.1f} dB" for s in batch_psnr(prediction, images).tolist()])
    viz.save_grid(rows, titles, path, title, captions=captions)


def pictures(values: torch.Tensor) -> np.ndarray:
    """(B, H, W, C) images as they are; (B, R, R, R, 1) occupancy as shaded pictures of the shape at level 0.5
    (`nfields.data.voxels.render_voxels`, 2 pixels per voxel side, at least 128); numpy in [0, 1]."""
    values = values.clamp(0, 1)
    if values.dim() != 5:
        return values.cpu().numpy()
    from ..data.voxels import render_voxels

    size = max(128, 2 * values.shape[1])
    return np.stack([render_voxels(grid[..., 0], size) for grid in values.cpu()])


def save_view_predictions(model: GeneralizableINR, data: InstanceData, max_support: int, path: Path, title: str,
                          count: int = 6) -> None:
    """Rows: the first support view, the prediction with 1..max_support support views, the true view."""
    views = data.views
    count = min(count, len(views))
    support, target = support_and_target_views(len(views), views.views, max_support)
    objects = torch.arange(count, device=views.images.device)
    rows, names, captions = [], [], []
    h, w = views.height, views.width
    with torch.no_grad():
        for s in range(1, max_support + 1):
            inputs, rays, rgb = views.target_view(objects, support[:count, :s].to(objects.device),
                                                  target[:count].to(objects.device))
            prediction = model(inputs, rays).clamp(0, 1)
            if s == 1:
                rows.append(inputs[:, 0, ..., :3].cpu().numpy())
                names.append("support view 1")
                captions.append(None)
            rows.append(prediction.reshape(count, h, w, 3).cpu().numpy())
            names.append(f"{s} support view{'s' if s > 1 else ''}")
            captions.append([f"{p:.1f} dB" for p in batch_psnr(prediction, rgb).tolist()])
    rows.append(rgb.reshape(count, h, w, 3).cpu().numpy())
    names.append("unseen view (truth)")
    captions.append(None)
    viz.save_grid(rows, names, path, title, captions=captions)


# -- locality --------------------------------------------------------------------------------------------

def instance_inputs(model: GeneralizableINR, data: InstanceData, count: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Inputs, query coordinates and the (H, W) of what is shown for the first `count` test instances."""
    count = min(count, len(data))
    if data.images is not None:
        index = torch.arange(count, device=data.images.device)
        return data.float_images(index), model.coords(count), model.data.image_size
    views = data.views
    support, target = support_and_target_views(len(views), views.views, 1)
    objects = torch.arange(count, device=views.images.device)
    inputs, rays, _ = views.target_view(objects, support[:count].to(objects.device), target[:count].to(objects.device))
    return inputs, rays, (views.height, views.width)


@torch.no_grad()
def token_effects(model: TokenINR, inputs: torch.Tensor, coords: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """(B, K, N): squared change of the output at every coordinate when token k is replaced by zeros."""
    latents = model.encode(inputs)
    base = model.decode(latents, coords)
    effects = []
    for k in tokens:
        zeroed = latents.clone()
        zeroed[:, k] = 0.0
        effects.append((model.decode(zeroed, coords) - base).pow(2).sum(-1))
    return torch.stack(effects, 1)


def locality_score(effects: torch.Tensor, fraction: float = TOP_FRACTION) -> float:
    """Mean share of each token's effect on its top `fraction` of coordinates: `fraction` when the change is
    spread evenly, 1 when it is confined to that many coordinates."""
    flat = effects.flatten(0, 1)
    top = flat.sort(dim=1, descending=True).values[:, :max(1, round(flat.shape[1] * fraction))]
    return float((top.sum(1) / flat.sum(1).clamp_min(1e-30)).mean())


def token_similarity(effects: torch.Tensor) -> float:
    """Mean cosine similarity between different tokens' effect maps of one instance: near 1 when every token
    changes the same pixels (global tokens, or tokens not yet told apart), lower when tokens own regions."""
    maps = torch.nn.functional.normalize(effects.flatten(2), dim=-1)  # (B, K, N)
    gram = maps @ maps.transpose(1, 2)
    k = gram.shape[-1]
    return float((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)).mean() / max(1, k * (k - 1)))


def save_locality(model: TokenINR, data: InstanceData, path: Path, title: str, count: int = 4,
                  seed: int = 0) -> dict[str, float]:
    """Paper Fig. 5/12: rows are instances, columns the same randomly chosen tokens; each map is the change
    rescaled to a maximum of 1. Returns the locality score and the token similarity over every token of
    those instances."""
    model.eval()
    inputs, coords, (h, w) = instance_inputs(model, data, count)
    num_tokens = model.encoder.tokens
    chosen = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(seed))[:LOCALITY_TOKENS].tolist()
    effects = token_effects(model, inputs, coords, chosen)
    maps = effects / effects.flatten(2).amax(-1)[..., None].clamp_min(1e-30)
    with torch.no_grad():
        shown = model.decode(model.encode(inputs), coords).clamp(0, 1).reshape(len(inputs), h, w, -1)
    maps = maps.reshape(len(inputs), len(chosen), h, w, 1).cpu().numpy()
    rows = [[image, *instance_maps] for image, instance_maps in zip(shown.cpu().numpy(), maps)]
    viz.save_grid(rows, [f"instance {i}" for i in range(len(inputs))], path, title,
                  column_titles=["output"] + [f"token {k} zeroed" for k in chosen], colormap_from=1)
    every = token_effects(model, inputs, coords, list(range(num_tokens)))
    return {"locality_top10": locality_score(every), "token_similarity": token_similarity(every)}


# -- loading a run -----------------------------------------------------------------------------------------

@dataclass
class GINRRun:
    model: GeneralizableINR
    config: TrainGINRConfig
    folder: Path

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def radiance(self) -> bool:
        """An mNIF of radiance fields (a MixtureRadianceField with a latent per training object)."""
        return self.config.radiance

    @cached_property
    def cameras(self):
        """Radiance runs: the fixed views samples are rendered from (radiance_objective.fixed_cameras)."""
        from .radiance_objective import fixed_cameras
        from .train_ginr import SCENES_PREFIX

        return fixed_cameras(self.config.source[len(SCENES_PREFIX):], self.config.size)

    def instances(self, split: str = "test", limit: int = 0, source: str | None = None) -> InstanceData:
        """A split of the run's dataset (or of another `source` with the same kind of images), on the model's
        device, resized to the size the model was trained at."""
        config = self.config
        if source is not None:
            config = TrainGINRConfig(**{**config.__dict__, "source": source})
        if self.radiance:
            data, _ = load_instances(config, split, limit)
            return to_device(data, self.device)
        if config.voxels != (len(self.model.data.image_size) == 3):
            raise NfieldsError(f"'{config.source}' and the run's '{self.config.source}' are not both voxel grids; "
                               f"give instances like the training set.")
        if not config.light_field and not config.voxels:
            from ..data.datasets import load_dataset

            data = load_dataset(config.source, split, size=self.model.data.image_size, limit=limit or None)
            if data.channels != self.model.data.channels:
                raise NfieldsError(f"'{config.source}' has {data.channels}-channel images but the run was trained on "
                                   f"{self.model.data.channels}-channel ones; give images like the training set.")
            return to_device(InstanceData(images=data.images, labels=data.labels, names=list(data.names)),
                             self.device)
        data, _ = load_instances(config, split, limit)
        return to_device(data, self.device)


def is_ginr_run(run_dir: Path) -> bool:
    return is_run_of(run_dir, "train-ginr", "train-mnif")


def load_ginr_run(run_dir: str | Path, device: str = "auto") -> GINRRun:
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists() and not is_ginr_run(run_dir):
        raise NfieldsError(f"'{run_dir}' is not a 'nfields train ginr' run; give the --out folder of one.")
    model, _ = load_trained(run_dir, _model_from_spec, device)
    return GINRRun(model, load_run_config(run_dir, TrainGINRConfig), run_dir)


def _model_from_spec(data: dict):
    spec = data["field_spec"]
    if spec.get("kind") == "radiance":  # `train mnif --dataset scenes:DIR`: MixtureRadianceField.spec()
        from ..generative.radiance import radiance_field_from_spec

        return radiance_field_from_spec(spec)
    return ginr_from_spec(spec)


def _check_index(index: int, data: InstanceData, split: str) -> None:
    if not 0 <= index < len(data):
        raise NfieldsError(f"index {index} is outside the {split} split's {len(data)} instances (0 to {len(data) - 1}).")


# -- test-time optimisation ---------------------------------------------------------------------------------

def optimize_latents(model: GeneralizableINR, images: torch.Tensor, latents: torch.Tensor, steps: int,
                     lr: float = 1e-3, record: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Test-time optimisation (paper §4.5): Adam on the latents only, MSE on every pixel, decoder frozen.
    Returns the latents and, for each step in `record`, the mean PSNR and the seconds spent so far."""
    latents = latents.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=lr)
    b, c = images.shape[0], images.shape[-1]
    coords, target = model.coords(b), images.reshape(b, -1, c)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    curve, seconds = [], 0.0
    try:
        for step in range(steps + 1):
            if step in record:
                with torch.no_grad():
                    curve.append({"step": step, "seconds": seconds,
                                  "psnr": float(batch_psnr(model.decode(latents, coords), target).mean())})
            if step == steps:
                break
            _sync(images.device)
            started = time.perf_counter()
            loss = (model.decode(latents, coords) - target).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(images.device)
            seconds += time.perf_counter() - started
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return latents.detach(), curve


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tto_record_steps(steps: int) -> tuple[int, ...]:
    """0, then about 20 log-spaced steps up to `steps`."""
    if steps <= 0:
        return (0,)
    return tuple(sorted({0, steps, *np.unique(np.geomspace(1, steps, 20).round().astype(int)).tolist()}))


def evaluate_run(run_dir: str | Path, split: str = "test", tto_steps: int = 0, tto_lr: float = 1e-3,
                 limit: int = 0, device: str = "auto", batch: int = 64) -> dict[str, Any]:
    """Test PSNR per instance (clamped, averaged), a reconstruction grid, and with `tto_steps` the PSNR
    curve of test-time optimisation; writes eval_<split>.json and pictures into the run folder."""
    if tto_steps < 0:
        raise NfieldsError(f"--tto-steps must be 0 or more, not {tto_steps}.")
    run = load_ginr_run(run_dir, device)
    if run.radiance:
        return evaluate_radiance_run(run, split, tto_steps, limit)
    data = run.instances(split, limit)
    tag = f"eval_{split}" + (f"_tto{tto_steps}" if tto_steps else "")
    report: dict[str, Any] = {"split": split, "instances": len(data), "method": run.config.field,
                              "dataset": run.config.source}
    if data.views is not None:
        if tto_steps:
            raise NfieldsError("--tto-steps is for image runs; a light-field run is evaluated on its support views.")
        from .train_ginr import evaluate_views

        psnr = evaluate_views(run.model, data, run.config.support_views)
        report.update(psnr=float(torch.stack(list(psnr.values())).mean()),
                      **{f"psnr_{s}_views": float(v) for s, v in psnr.items()})
        save_view_predictions(run.model, data, run.config.support_views, run.folder / f"{tag}_views.png",
                              f"{run.config.field}: novel views ({split})")
    else:
        scores = evaluate_instances(run.model, data, batch=batch)
        report.update({name: float(values.mean()) for name, values in scores.items()})
        batch = eval_batch(run.model, batch)
        optimized = []  # the latents after test-time optimisation of the instances the picture shows
        if tto_steps:
            record = tto_record_steps(tto_steps)
            curves = []
            for start in range(0, len(data), batch):
                index = torch.arange(start, min(len(data), start + batch), device=run.device)
                images = data.float_images(index)
                with torch.no_grad():
                    latents = run.model.encode(images)
                latents, curve = optimize_latents(run.model, images, latents, tto_steps, tto_lr, record)
                if start < SHOWN:
                    optimized.append(latents)
                curves.append([(p["psnr"] * len(index), p["seconds"]) for p in curve])
            report["tto"] = [{"step": s, "psnr": sum(c[i][0] for c in curves) / len(data),
                              "seconds": sum(c[i][1] for c in curves)} for i, s in enumerate(record)]
            report["psnr_tto"] = report["tto"][-1]["psnr"]
            report["tto_lr"] = tto_lr
            viz.save_curve([], [{"step": p["step"], "seconds": p["seconds"], "psnr": p["psnr"]} for p in report["tto"]],
                           run.folder / f"{tag}_curve.png", f"test-time optimisation of the latents ({split})")
        save_reconstructions(run.model, data, run.folder / f"{tag}_reconstructions.png",
                             f"{run.config.field} on {run.config.source}: {split}",
                             optimized=torch.cat(optimized) if optimized else None,
                             optimized_title=f"after {tto_steps} TTO steps")
    write_json_atomic(run.folder / f"{tag}.json", report)
    return report


def evaluate_radiance_run(run: GINRRun, split: str, tto_steps: int, limit: int) -> dict[str, Any]:
    """A radiance mNIF run, measured as in training (RadianceFieldObjective.evaluate): held-out and training
    views of the training objects' latents, and test objects with fitted latents; `split` is fixed by that."""
    from .radiance_objective import RadianceFieldObjective

    if tto_steps:
        raise NfieldsError("--tto-steps is for image runs; a radiance mNIF fits test objects' latents itself "
                           "(its fit_steps option).")
    if split != "test":
        raise NfieldsError(f"a radiance mNIF run is evaluated on its training objects' held-out views and its test "
                           f"objects together; leave out --split {split}.")
    config = dataclasses.replace(run.config, eval_limit=limit or run.config.eval_limit)
    train, test = run.instances("train", run.config.limit), run.instances("test", config.eval_limit)
    objective = RadianceFieldObjective(run.model, train, test, config)
    metrics = objective.evaluate()
    objective.save_views_picture(run.folder / "eval_test_views.png")
    report = {"split": split, "instances": len(train), "method": run.config.field, "dataset": run.config.source,
              **metrics}
    write_json_atomic(run.folder / "eval_test.json", report)
    return report


# -- encode, render, interpolate -------------------------------------------------------------------------

def encode_to_file(run_dir: str | Path, inputs: str, out: str | Path, split: str = "test", limit: int = 0,
                   device: str = "auto", batch: int = 64) -> dict[str, Any]:
    """Latents of every instance of `inputs` (a dataset name or image folder) -> one safetensors file with
    `latents` (N, ...) and `labels` when the dataset has them; names and provenance in its metadata."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise NfieldsError(f"--out must name a .safetensors file, not '{out}'.")
    if not out.parent.exists():
        raise NfieldsError(f"folder '{out.parent}' does not exist; create it or choose another --out.")
    run = load_ginr_run(run_dir, device)
    if run.config.light_field:
        raise NfieldsError("encode takes images; a light-field run's latents come from its support views.")
    data = run.instances(split, limit, source=inputs)
    batch = eval_batch(run.model, batch)
    parts = []
    for start in range(0, len(data), batch):
        index = torch.arange(start, min(len(data), start + batch), device=run.device)
        with torch.no_grad():
            parts.append(run.model.encode(data.float_images(index)).detach().cpu())
    tensors = {"latents": torch.cat(parts).contiguous()}
    if data.labels is not None:
        tensors["labels"] = data.labels.cpu().contiguous()
    metadata = {"run": str(Path(run_dir).resolve()), "method": run.config.field, "inputs": str(inputs),
                "split": split, "names": json.dumps(data.names)}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return {"file": str(out), "count": len(data), "shape": list(tensors["latents"].shape[1:])}


def render_instance(run_dir: str | Path, index: int, out: str | Path, scale: float = 1.0, split: str = "test",
                    device: str = "auto") -> dict[str, Any]:
    """Test instance `index` encoded and rendered at `scale` x the training resolution (super-resolution);
    a voxel grid is shown as a picture of its shape at that resolution (`pictures`)."""
    if not scale > 0:
        raise NfieldsError(f"--scale must be positive, not {scale}.")
    run = load_ginr_run(run_dir, device)
    if run.config.light_field:
        raise NfieldsError("--index renders image runs; evaluate a light-field run with 'nfields eval'.")
    data = run.instances(split)
    _check_index(index, data, split)
    shape = _scaled(run, scale)
    with torch.no_grad():
        latents = run.model.encode(data.float_images(torch.tensor([index], device=run.device)))
        image = pictures(run.model.render(latents, shape=shape))[0]
    _save(image, out)
    return {"file": str(out), "height": image.shape[0], "width": image.shape[1], "shape": list(shape)}


def _scaled(run: GINRRun, scale: float, count: int = 1) -> tuple[int, ...]:
    """The training resolution times `scale`, refused if `count` renders of it cannot fit in memory."""
    from ..memory import check_memory
    from .runs import PICTURE_BYTES_PER_VALUE

    if not (math.isfinite(scale) and scale > 0):
        raise NfieldsError(f"--scale must be positive (and finite), not {scale}.")
    shape = tuple(max(1, round(s * scale)) for s in run.model.data.image_size)
    check_memory(count * math.prod(shape) * 4 * PICTURE_BYTES_PER_VALUE,
                 f"rendering at {'x'.join(map(str, shape))}", "choose a smaller --scale")
    return shape


def interpolate(run_dir: str | Path, first: int, second: int, out: str | Path, steps: int = 8, scale: float = 1.0,
                split: str = "test", device: str = "auto") -> dict[str, Any]:
    """A strip of `steps` renders along the straight line between two test instances' latents."""
    if steps < 2:
        raise NfieldsError(f"--steps must be at least 2, not {steps}.")
    run = load_ginr_run(run_dir, device)
    if run.config.light_field:
        raise NfieldsError("interpolate works on image runs.")
    data = run.instances(split)
    for i in (first, second):
        _check_index(i, data, split)
    shape = _scaled(run, scale, steps)
    with torch.no_grad():
        latents = run.model.encode(data.float_images(torch.tensor([first, second], device=run.device)))
        t = torch.linspace(0, 1, steps, device=run.device).view(-1, *[1] * (latents.dim() - 1))
        mixed = (1 - t) * latents[:1] + t * latents[1:]
        images = [pictures(run.model.render(part, shape=shape))
                  for part in mixed.split(eval_batch(run.model, steps))]
    strip = np.concatenate([image for part in images for image in part], axis=1)
    _save(strip, out)
    return {"file": str(out), "steps": steps, "height": strip.shape[0], "width": strip.shape[1]}


def _save(image: np.ndarray, out: str | Path) -> None:
    out = Path(out)
    if not out.parent.exists():
        raise NfieldsError(f"folder '{out.parent}' does not exist; create it or choose another --out.")
    try:
        viz.save_image(image, out)
    except (KeyError, ValueError, OSError) as error:
        raise NfieldsError(f"cannot write '{out}' ({error}); use a .png, .jpg or .tif name.") from None

