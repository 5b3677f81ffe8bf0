"""Train a generalizable INR over a dataset: images (Fashion-MNIST, emoji, a folder), 64^3 occupancy grids
of the pybullet objects (`voxels`) or few-shot light fields of many objects (`scenes:DIR`), on the one
Trainer, on one device or many (torchrun + DDP)."""

from __future__ import annotations

import dataclasses
import math
from functools import reduce
from contextlib import nullcontext
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import NfieldsError
from ..ginr import GINR_METHODS, DataSpec, GeneralizableINR, LatentVectorINR, TokenINR, make_ginr
from ..metrics.image import mse_to_psnr
from ..train import Trainer
from ..train import distributed
from ..train.run import open_run_dir
from .common import FitConfig, prepare, run_trainer, start_run, write_run_config

SCENES_PREFIX = "scenes:"
VOXELS = "voxels"  # 64^3 occupancy of pybullet's objects (nfields.data.voxels; every 10th object is test)
VOXEL_RESOLUTION = 64
#: Voxels decoded per object per step by default (ours: functa and mNIF sample points of a shape; 4096 is 1/64
#: of a 64^3 grid, drawn uniformly). `--pixel-fraction` overrides it.
VOXEL_POINTS = 4096
#: Grid cells decoded at once in evaluation (sets the evaluation batch: 64 images, or 4 64^3 grids).
EVAL_CELLS = 1 << 20
OCCUPIED = 0.5  # occupancy threshold of the voxel metrics (the official code's 0 on the [-1, 1] scale)
PAPER_SIZE = 178  # Appendix A's bandwidths are for 178 x 178 images; we scale them to the image size


@dataclass
class TrainGINRConfig(FitConfig):
    """Everything that defines a generalizable-INR run (written resolved to `config.json`).

    `source` is the dataset (a built-in name, an image folder, `voxels`, or `scenes:DIR` made by
    `nfields make-scene --objects`); `field` is the method (GINR_METHODS); `field_options` its options.
    """

    field_registry: ClassVar = GINR_METHODS
    kinds: ClassVar[tuple[str, ...]] = ("train-ginr", "train-mnif")

    source: str = "fashion-mnist"
    field: str = "locality"
    steps: int = 10000
    epochs: float = 0.0  # > 0: train for this many passes over the training set instead of `steps`
    batch: int = 16  # instances per step, over all processes (Appendix A: 16 images, 32 for light fields)
    size: int | None = None  # resize instances to size x size (default: the dataset's own; voxels: 64^3)
    limit: int = 0  # use the first N training instances (0: all)
    eval_limit: int = 0  # evaluate on the first N test instances (0: all)
    # Coordinates decoded per instance per step (Appendix A: 0.1 at FFHQ 256+); None: every pixel of an image,
    # VOXEL_POINTS of a voxel grid (resolved when the run starts).
    pixel_fraction: float | None = None
    support_views: int = 3  # light fields: each step uses 1..support_views support views (ours: drawn at random)
    query_rays: int = 1024  # light fields: rays of other views predicted per object per step
    seconds: float = 0.0  # stop after this much training time (0: no limit)
    eval_at_seconds: list[float] = default(default_factory=list)

    def run_kind(self) -> str:
        return "train-mnif" if self.field == "mnif" else "train-ginr"

    @property
    def light_field(self) -> bool:
        return self.source.startswith(SCENES_PREFIX)

    @property
    def voxels(self) -> bool:
        return self.source == VOXELS

    @property
    def radiance(self) -> bool:
        """mNIF on many objects: a radiance field per object (nfields.generative.radiance), not a light field."""
        return self.light_field and self.field == "mnif"

    def field_config(self):
        if self.radiance:
            from ..generative.radiance import radiance_options

            return radiance_options(self.field_options)
        return super().field_config()

    def validate(self) -> None:
        if self.light_field and not self.radiance and not issubclass(GINR_METHODS.lookup(self.field)[0], TokenINR):
            raise NfieldsError(f"method '{self.field}' works on single images; light fields (scenes:) need one of "
                               f"the token methods (transinr, ipc, locality) or mnif (radiance fields).")
        if self.voxels and not issubclass(GINR_METHODS.lookup(self.field)[0], LatentVectorINR):
            raise NfieldsError(f"method '{self.field}' encodes image patches; voxels need a latent-vector method: "
                               f"mnif, functa or autodecoder.")
        super().validate()
        if self.batch <= 0 or self.batch % distributed.world_size():
            raise NfieldsError(f"--batch must be a positive multiple of the {distributed.world_size()} processes, "
                               f"not {self.batch}.")
        if self.epochs < 0 or self.seconds < 0:
            raise NfieldsError("--epochs and --seconds must not be negative.")
        if self.size is not None and self.size <= 0:
            raise NfieldsError(f"--size must be positive, not {self.size}.")
        if self.limit < 0 or self.eval_limit < 0:
            raise NfieldsError("--limit and --eval-limit must not be negative.")
        if self.pixel_fraction is not None and not 0.0 < self.pixel_fraction <= 1.0:
            raise NfieldsError(f"--pixel-fraction must be in (0, 1], not {self.pixel_fraction}.")
        if self.support_views < 1 or self.query_rays < 1:
            raise NfieldsError("--support-views and --query-rays must be at least 1.")

    def time_budget(self) -> dict[str, Any]:
        return {"max_seconds": self.seconds, "eval_at_seconds": tuple(self.eval_at_seconds)}


def paper_options(method: str, height: int, width: int, light_field: bool) -> dict[str, Any]:
    """Appendix A's settings scaled to our instances (ours: bandwidths scale with the image side,
    s = H / 178, so they keep their place relative to the Nyquist frequency; the patch size gives
    at most 16 x 16 patches per image, as Appendix A's 256 tokens for 256^2 images)."""
    options: dict[str, Any] = {}
    if method not in ("transinr", "ipc", "locality"):
        return options
    options["patch_size"] = patch_size_for(height, width)
    s = height / PAPER_SIZE
    if method == "locality":
        # Light fields: (sigma_1, sigma_2, sigma_q) = (8, 4, 2) (Appendix A); images: (128, 32, 16) x s.
        sigmas, query = ((8.0, 4.0), 2.0) if light_field else ((round(128 * s, 1), round(32 * s, 1)), round(16 * s, 1))
        options.update(sigmas=",".join(f"{x:g}" for x in sigmas), query_sigma=query)
    else:
        options["fourier_sigma"] = 8.0 if light_field else round(64 * s, 1)  # DESIGN: sigma 64 at 178^2
    return options


def patch_size_for(height: int, width: int) -> int:
    """The smallest patch that divides both sides and gives at most 16 patches per side."""
    side = math.gcd(height, width)
    fits = [p for p in range(1, side + 1) if side % p == 0 and max(height, width) // p <= 16]
    return fits[0] if fits else side


# -- data --------------------------------------------------------------------------------------------

@dataclass
class InstanceData:
    """A training or test set on the training device: uint8 images (N, H, W, C) or voxel grids (N, D, H, W, 1)
    of 0/1 occupancy, or object views."""

    images: torch.Tensor | None = None
    views: Any = None  # nfields.data.object_views.ObjectViews for light fields
    labels: torch.Tensor | None = None
    names: list[str] = default(default_factory=list)
    value_scale: float = 255.0  # stored value of 1.0: 255 for 8-bit images, 1 for occupancy

    def __len__(self) -> int:
        return len(self.views) if self.views is not None else self.images.shape[0]

    @property
    def voxels(self) -> bool:
        return self.images is not None and self.images.dim() == 5

    def float_images(self, index: torch.Tensor) -> torch.Tensor:
        """Instances `index` as floats in [0, 1]: (B, H, W, C) images or (B, D, H, W, 1) occupancy."""
        return self.images[index].float().div_(self.value_scale)


def load_instances(config: TrainGINRConfig, split: str, limit: int = 0) -> tuple[InstanceData, DataSpec]:
    """The dataset's `split` (on the CPU) and the DataSpec a model for it needs."""
    if config.light_field:
        from ..data.object_views import load_object_views

        folder = config.source[len(SCENES_PREFIX):]
        views = load_object_views(folder, split, size=config.size, limit=limit or None)
        spec = DataSpec((views.height, views.width), channels=9, out_features=3, in_features=6)
        return InstanceData(views=views, names=list(views.names)), spec
    if config.voxels:
        return load_voxel_instances(split, config.size or VOXEL_RESOLUTION, limit)
    from ..data.datasets import load_dataset

    data = load_dataset(config.source, split, size=config.size, limit=limit or None)
    if len(data) == 0:
        raise NfieldsError(f"the {split} split of '{config.source}' is empty; give more images.")
    spec = DataSpec((data.height, data.width), data.channels)
    return InstanceData(images=data.images, labels=data.labels, names=list(data.names)), spec


def load_voxel_instances(split: str, resolution: int, limit: int = 0) -> tuple[InstanceData, DataSpec]:
    """The pybullet objects' occupancy grids (nfields.data.voxels) as (N, R, R, R, 1) instances on 3-D
    coordinates (voxel centres in [-1, 1]^3)."""
    from ..data.voxels import load_voxels

    voxels = load_voxels(split, resolution=resolution, limit=limit)
    occupancy = torch.as_tensor(voxels.occupancy, dtype=torch.uint8)
    if occupancy.dim() != 4 or occupancy.shape[0] == 0:
        raise NfieldsError(f"the {split} split of '{VOXELS}' at {resolution}^3 has no objects; make more objects "
                           f"or lower --limit.")
    spec = DataSpec(tuple(occupancy.shape[1:]), channels=1, in_features=3)
    return InstanceData(images=occupancy.unsqueeze(-1), names=list(voxels.names), value_scale=1.0), spec


def query_fraction(config: TrainGINRConfig, spec: DataSpec) -> float:
    """--pixel-fraction, or the dataset's default: every pixel of an image, VOXEL_POINTS of a voxel grid."""
    if config.pixel_fraction is not None:
        return config.pixel_fraction
    if len(spec.image_size) == 3:
        return min(1.0, VOXEL_POINTS / cells(spec.image_size))
    return 1.0


def cells(shape: tuple[int, ...]) -> int:
    return reduce(lambda a, b: a * b, shape, 1)


def to_device(data: InstanceData, device: torch.device) -> InstanceData:
    if data.views is not None:
        return dataclasses.replace(data, views=data.views.to(device))
    return dataclasses.replace(data, images=data.images.to(device))


# -- objectives ----------------------------------------------------------------------------------------

def batch_psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR per instance on [0, 1], predictions clamped."""
    mse = (prediction.clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    return mse_to_psnr(mse)


def epoch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    """The training set's order in `epoch`, seeded: a resumed run, and the reference code beside ours in
    benchmarks/ginr_reference.py, see the same batches."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class InstanceObjective:
    """Shared by images and light fields: global batches from a seeded permutation per epoch (so a resumed
    run sees the same batches), this process's slice of each batch, MSE on [0, 1] values."""

    def __init__(self, model: GeneralizableINR, train: InstanceData, test: InstanceData, config: TrainGINRConfig):
        self.model, self.net = model, distributed.wrap(model)
        self.train_data, self.test_data, self.config = train, test, config
        self.device = model.device
        self.steps_per_epoch = max(1, len(train) // config.batch)
        self.items_per_step = (config.batch, "instances")
        self._epoch, self._order = -1, None

    def batch_index(self, step: int) -> torch.Tensor:
        """This process's dataset indices at `step` (the global batch split evenly over processes)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.config.seed, epoch, len(self.train_data))
        b = self.config.batch
        index = self._order[position * b:(position + 1) * b]
        share = b // distributed.world_size()
        return index[distributed.rank() * share:(distributed.rank() + 1) * share].to(self.device)

    def step_generator(self, step: int) -> torch.Generator:
        """Randomness of one step, the same on every process and after a resume."""
        generator = torch.Generator(device=self.device)
        return generator.manual_seed((self.config.seed * 1_000_003 + step) * 1024 + distributed.rank())


class ImageSetObjective(InstanceObjective):
    """Instances on a grid of any dimension: images (B, H, W, C) on 2-D coordinates, voxel grids (B, D, H, W, 1)
    on 3-D ones. Each step decodes a random `pixel_fraction` of each instance's cells (all by default)."""

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = self.batch_index(step)
        images = self.train_data.float_images(index)
        b, c = images.shape[0], images.shape[-1]
        coords, target = self.model.coords(b), images.reshape(b, -1, c)
        fraction = self.config.pixel_fraction if self.config.pixel_fraction is not None else 1.0
        if fraction < 1.0:
            n = max(1, round(coords.shape[1] * fraction))
            pick = torch.rand(b, coords.shape[1], device=self.device,
                              generator=self.step_generator(step)).argsort(1)[:, :n]
            coords = coords.gather(1, pick[..., None].expand(-1, -1, coords.shape[-1]))
            target = target.gather(1, pick[..., None].expand(-1, -1, c))
        mse = (self.net(images, coords, index, targets=target) - target).pow(2).mean()
        return mse, {"psnr": mse_to_psnr(mse.detach())}

    def evaluate(self) -> dict[str, float]:
        scores = evaluate_instances(self.model, self.test_data, self.config.eval_limit)
        return {name: float(values.mean()) for name, values in scores.items()}


class LightFieldObjective(InstanceObjective):
    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = self.batch_index(step)
        generator = self.step_generator(step)
        shared = torch.Generator().manual_seed(self.config.seed * 7_919 + step)  # the same on every process
        support = int(torch.randint(1, self.config.support_views + 1, (1,), generator=shared))
        inputs, rays, rgb = self.train_data.views.sample_batch(index, support, self.config.query_rays, generator)
        mse = (self.net(inputs, rays) - rgb).pow(2).mean()
        return mse, {"psnr": mse_to_psnr(mse.detach())}

    def evaluate(self) -> dict[str, float]:
        psnr = evaluate_views(self.model, self.test_data, self.config.support_views, self.config.eval_limit)
        return {"psnr": float(torch.stack(list(psnr.values())).mean()),
                **{f"psnr_{s}_views": float(v) for s, v in psnr.items()}}


def occupancy_scores(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B,) accuracy and IoU of occupancy at OCCUPIED (IoU 1 when both grids are empty)."""
    predicted, occupied = prediction.flatten(1) >= OCCUPIED, target.flatten(1) >= OCCUPIED
    union = (predicted | occupied).sum(1)
    iou = torch.where(union > 0, (predicted & occupied).sum(1) / union.clamp_min(1), torch.ones_like(union).float())
    return {"accuracy": (predicted == occupied).float().mean(1), "iou": iou}


def eval_batch(model: GeneralizableINR, batch: int) -> int:
    """At most `batch` instances, and at most EVAL_CELLS grid cells, per evaluation batch."""
    return max(1, min(batch, EVAL_CELLS // cells(model.data.image_size)))


@torch.no_grad()
def evaluate_instances(model: GeneralizableINR, data: InstanceData, limit: int = 0,
                       batch: int = 64) -> dict[str, torch.Tensor]:
    """Per instance (N,): "psnr" (clamped), and for voxel grids the occupancy "accuracy" and "iou" at
    OCCUPIED; each instance is encoded as the method does at test time (`encode`)."""
    was_training = model.training
    model.eval()
    count = min(len(data), limit) if limit else len(data)
    batch = eval_batch(model, batch)
    scores: dict[str, list[torch.Tensor]] = {}
    for start in range(0, count, batch):
        index = torch.arange(start, min(count, start + batch), device=data.images.device)
        images = data.float_images(index)
        prediction = model.reconstruct(images, shape=images.shape[1:-1])
        batch_scores = {"psnr": batch_psnr(prediction, images)}
        if data.voxels:
            batch_scores.update(occupancy_scores(prediction, images))
        for name, values in batch_scores.items():
            scores.setdefault(name, []).append(values)
    model.train(was_training)
    return {name: torch.cat(values) for name, values in scores.items()}


def evaluate_images(model: GeneralizableINR, data: InstanceData, limit: int = 0, batch: int = 64) -> torch.Tensor:
    """(N,) test PSNR per instance (clamped), encoding each one in one pass (`encode`)."""
    return evaluate_instances(model, data, limit, batch)["psnr"]


def support_and_target_views(count: int, views: int, support: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed support and target views per test object (seeded): (count, support) and (count,)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(count, views, generator=generator).argsort(1)
    return order[:, 1:1 + support], order[:, 0]


@torch.no_grad()
def evaluate_views(model: GeneralizableINR, data: InstanceData, max_support: int, limit: int = 0,
                   batch: int = 16) -> dict[int, torch.Tensor]:
    """Mean novel-view PSNR for 1..max_support support views: each test object predicts one unseen view."""
    was_training = model.training
    model.eval()
    views = data.views
    count = min(len(views), limit) if limit else len(views)
    support_views, targets = support_and_target_views(count, views.views, max_support)
    result = {}
    for support in range(1, max_support + 1):
        scores = []
        for start in range(0, count, batch):
            objects = torch.arange(start, min(count, start + batch))
            inputs, rays, rgb = views.target_view(objects.to(views.images.device),
                                                  support_views[objects, :support].to(views.images.device),
                                                  targets[objects].to(views.images.device))
            scores.append(batch_psnr(model(inputs, rays), rgb))
        result[support] = torch.cat(scores).mean()
    model.train(was_training)
    return result


# -- the run -------------------------------------------------------------------------------------------

def run_train_ginr(config: TrainGINRConfig, out: Path, resume: bool = False, overwrite: bool = False,
                   explicit: set[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run in `out`; returns metrics.json's content. Under torchrun every process
    calls this; rank 0 alone writes the run folder."""
    device = distributed.setup(prepare(config))
    main = distributed.is_main()
    config = start_run(config, out, resume, overwrite, explicit or set(), check=main)
    torch.manual_seed(config.seed)
    train, spec = load_instances(config, "train", config.limit)
    test, _ = load_instances(config, "test", config.eval_limit)
    spec.instances = len(train)
    if len(train) < config.batch:
        raise NfieldsError(f"the training set has {len(train)} instances, fewer than one --batch of {config.batch}; "
                           f"lower --batch.")
    if config.radiance:
        from ..generative.radiance import radiance_model_from_options
        from .radiance_objective import scene_bounds

        model = radiance_model_from_options(config.field_options, len(train),
                                            scene_bounds(config.source[len(SCENES_PREFIX):])).to(device)
    else:
        # The scaled paper settings under the user's options; config.json keeps the user's in field_options and
        # every resolved option in field_spec, so a resume recomputes the same ones from the same data.
        options = {**paper_options(config.field, *spec.image_size[:2], config.light_field), **config.field_options}
        model = make_ginr(config.field, spec, **options).to(device)
    if config.epochs:
        config = dataclasses.replace(config, steps=max(1, round(config.epochs * (len(train) // config.batch))))
    if not config.light_field:
        config = dataclasses.replace(config, pixel_fraction=query_fraction(config, spec))
    train, test = to_device(train, device), to_device(test, device)
    if config.radiance:
        from .radiance_objective import RadianceFieldObjective as objective_cls
    else:
        objective_cls = LightFieldObjective if config.light_field else ImageSetObjective
    objective = objective_cls(model, train, test, config)
    optimizer = torch.optim.Adam(model.parameter_groups(config.lr or model.default_lr))
    with open_run_dir(out, resume, overwrite) if main else nullcontext(out) as run_dir:
        if main:
            write_run_config(run_dir, config, device, model, ginr={
                "dataset": config.source, "method": config.field, "train_instances": len(train),
                "test_instances": len(test), "processes": distributed.world_size()})
        distributed.barrier()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer = run_trainer(objective, optimizer, config, run_dir, resume, progress, f"train {config.field}",
                        f"lower --batch (now {config.batch}) or --pixel-fraction")
    metrics: dict[str, Any] = {}
    if main and config.radiance:
        from .radiance_objective import write_radiance_outputs

        metrics = write_radiance_outputs(out, objective, config, trainer, device)
    elif main:
        from .ginr_outputs import write_run_outputs

        metrics = write_run_outputs(out, model, config, trainer, train, test, device,
                                    trained_steps=trainer.trained_steps)
    distributed.barrier()
    return metrics


def instances_per_second(trainer: Trainer, batch: int) -> float:
    """Training throughput over the run's training time (all processes together; the clock stops for
    evaluations and checkpoints)."""
    return trainer.step * batch / trainer.seconds if trainer.seconds > 0 else 0.0
