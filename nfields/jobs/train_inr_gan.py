"""Train INR-GAN on an image dataset on the one Trainer, and sample, super-resolve, extrapolate and
interpolate from a finished run (the function API behind `nfields generate`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..errors import NfieldsError
from ..generative.inr_gan import InrGan, InrGanConfig, gan_losses, to_unit
from ..io import write_bytes_atomic, write_json_atomic
from ..registry import Registry
from ..viz import save_image
from ..train import Trainer
from ..train.manifest import is_run_of
from ..train.run import load_trained, open_run_dir
from .common import FitConfig, prepare, run_trainer, start_run, write_run_config

#: The GAN's options (`-o KEY=VALUE`) are InrGanConfig's fields.
INR_GAN_MODELS: Registry = Registry("GAN")
INR_GAN_MODELS.register("inr-gan", InrGanConfig)(InrGan)


@dataclass
class TrainInrGanConfig(FitConfig):
    """Everything that defines an INR-GAN run (written resolved to `config.json`); `source` is the dataset,
    `field_options` the GAN's sizes (InrGanConfig)."""

    kinds: ClassVar[tuple[str, ...]] = ("train-inr-gan",)

    field_registry: ClassVar = INR_GAN_MODELS

    source: str = "emoji"
    field: str = "inr-gan"
    steps: int = 20000
    lr: float | None = None  # None: 0.0025 (StyleGAN2-ADA at low resolution), both networks
    batch: int = 32
    size: int | None = None  # resize to size x size (default: the dataset's own, 64 emoji, 28 fashion-mnist)
    limit: int = 0  # the first N training images (0: all)
    seconds: float = 0.0  # also stop after this much training time (0: no limit)
    #: R1 weight; None: StyleGAN2-ADA's heuristic 0.0002 * H * W / batch (0.0256 at 64^2, batch 32). INR-GAN's
    #: configs use 10 at 256^2.
    r1_gamma: float | None = None
    r1_every: int = 16  # lazy R1: every 16 steps, its loss scaled by 16 (StyleGAN2)
    ema_kimg: float | None = None  # G_ema half-life in thousands of images; None: batch * 10 / 32 (StyleGAN2-ADA)
    ema_rampup: float = 0.05  # half-life at most this share of the images seen so far (StyleGAN2-ADA)
    mirror: bool = True  # random horizontal flips of the reals (StyleGAN's --mirror)
    eval_samples: int = 256  # samples and test images for the end-of-run statistics

    DEFAULT_LR: ClassVar[float] = 0.0025

    def validate(self) -> None:
        super().validate()
        if self.batch <= 0:
            raise NfieldsError(f"--batch must be a positive number of images, not {self.batch}.")
        if self.size is not None and self.size <= 0:
            raise NfieldsError(f"--size must be positive, not {self.size}.")
        if self.limit < 0 or self.seconds < 0:
            raise NfieldsError("--limit and --seconds must not be negative.")
        if self.r1_gamma is not None and self.r1_gamma < 0:
            raise NfieldsError(f"--r1-gamma must not be negative, not {self.r1_gamma}.")
        if self.r1_every <= 0 or self.eval_samples <= 0:
            raise NfieldsError("r1_every and eval_samples must be positive.")
        if self.ema_kimg is not None and not self.ema_kimg > 0:
            raise NfieldsError(f"ema_kimg must be positive, not {self.ema_kimg}.")
        INR_GAN_MODELS.config(self.field, self.field_options).validate()

    def time_budget(self) -> dict[str, Any]:
        return {"max_seconds": self.seconds}

    def gamma(self, height: int, width: int) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * height * width / self.batch


class InrGanObjective:
    """One simultaneous step of D and G per call (see gan_losses), lazy R1, and G_ema after each step."""

    def __init__(self, model: InrGan, train: torch.Tensor, test: torch.Tensor, config: TrainInrGanConfig):
        self.model, self.config = model, config
        self.train_images, self.test_images = train, test  # uint8 (N, H, W, C) on the device
        self.device = train.device
        self.gamma = config.gamma(*model.frame)
        self.items_per_step = (config.batch, "images")
        self._step = 0
        self._r1 = torch.zeros((), device=self.device)

    def reals(self, index: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images -> (B, C, H, W) in [-1, 1], optionally mirrored where `flip`."""
        images = self.train_images[index].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return images if flip is None else torch.where(flip[:, None, None, None], images.flip(3), images)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Randomness of a step depends on (seed, step) alone, so a resumed run sees the same batches.
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + step)
        b = self.config.batch
        index = torch.randint(self.train_images.shape[0], (b,), generator=generator, device=self.device)
        flip = torch.rand(b, generator=generator, device=self.device) < 0.5 if self.config.mirror else None
        z = torch.randn(b, self.model.config.latent, generator=generator, device=self.device)
        lazy = step % self.config.r1_every == 0
        terms = gan_losses(self.model, self.reals(index, flip), z,
                           r1_weight=self.gamma / 2 * self.config.r1_every if lazy and self.gamma > 0 else 0.0)
        if lazy and self.gamma > 0:
            self._r1 = terms["r1"].detach()
        self._step = step
        return terms["total"], {"d_loss": terms["d_loss"].detach(), "g_loss": terms["g_loss"].detach(),
                                "r1": self._r1, "real_logit": terms["real_logit"], "fake_logit": terms["fake_logit"]}

    def after_step(self) -> None:
        cfg = self.config
        seen = (self._step + 1) * cfg.batch
        half_life = (cfg.ema_kimg if cfg.ema_kimg is not None else cfg.batch * 10 / 32) * 1000
        half_life = min(half_life, seen * cfg.ema_rampup) if cfg.ema_rampup else half_life
        self.model.update_ema(0.5 ** (cfg.batch / max(half_life, 1e-8)))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Cheap statistics of G_ema (FID lives in `nfields eval`): D's logits on test reals and on samples, and
        the samples' per-pixel std over samples beside the test images' (a collapse shows as a low ratio)."""
        model, n = self.model, min(self.config.eval_samples, self.test_images.shape[0])
        generator = torch.Generator(device=self.device).manual_seed(12345)
        z = torch.randn(n, model.config.latent, generator=generator, device=self.device)
        fakes = torch.cat([model.generator_ema(part).permute(0, 3, 1, 2) for part in z.split(64)])
        reals = self.test_images[:n].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        d_real = torch.cat([model.discriminator(part) for part in reals.split(64)])
        d_fake = torch.cat([model.discriminator(part) for part in fakes.clamp(-1, 1).split(64)])
        return {"d_real_test": float(d_real.mean()), "d_fake_ema": float(d_fake.mean()),
                "diversity": float(fakes.clamp(-1, 1).std(0).mean() / reals.std(0).mean().clamp_min(1e-8))}


def make_optimizer(model: InrGan, lr: float, r1_every: int) -> torch.optim.Adam:
    """One Adam, two groups (StyleGAN2): betas (0, 0.99); D's lr and beta2 adjusted for lazy R1 by
    c = k / (k + 1) as StyleGAN2 does for its lazily regularised network."""
    c = r1_every / (r1_every + 1)
    return torch.optim.Adam([
        {"params": list(model.generator.parameters()), "lr": lr, "betas": (0.0, 0.99)},
        {"params": list(model.discriminator.parameters()), "lr": lr * c, "betas": (0.0, 0.99 ** c)},
    ], eps=1e-8)


def load_images(config: TrainInrGanConfig, split: str, limit: int = 0) -> torch.Tensor:
    from ..data.datasets import load_dataset

    data = load_dataset(config.source, split, size=config.size, limit=limit or None)
    if len(data) == 0:
        raise NfieldsError(f"the {split} split of '{config.source}' is empty; give more images.")
    return data.images


# -- the run -------------------------------------------------------------------------------------------------

def run_train_inr_gan(config: TrainInrGanConfig, out: Path, resume: bool = False, overwrite: bool = False,
                      explicit: set[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run in `out`; returns metrics.json's content."""
    device = prepare(config)
    config = start_run(config, out, resume, overwrite, explicit or set())
    torch.manual_seed(config.seed)
    train = load_images(config, "train", config.limit)
    test = load_images(config, "test", config.eval_samples)
    if train.shape[0] < config.batch:
        raise NfieldsError(f"the training set has {train.shape[0]} images, fewer than one --batch of "
                           f"{config.batch}; lower --batch.")
    frame, channels = (train.shape[1], train.shape[2]), train.shape[3]
    options = INR_GAN_MODELS.config(config.field, config.field_options)
    model = InrGan(options, frame, channels).to(device)
    objective = InrGanObjective(model, train.to(device), test.to(device), config)
    optimizer = make_optimizer(model, config.lr or config.DEFAULT_LR, config.r1_every)
    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model, inr_gan={
            "dataset": config.source, "height": frame[0], "width": frame[1], "channels": channels,
            "train_images": int(train.shape[0]), "r1_gamma": objective.gamma})
        trainer = run_trainer(objective, optimizer, config, run_dir, resume, progress, "train inr-gan",
                        f"lower --batch (now {config.batch})")
    return write_outputs(out, model, config, trainer, objective, device, trained_steps=trainer.trained_steps)


def write_outputs(out: Path, model: InrGan, config: TrainInrGanConfig, trainer: Trainer, objective: InrGanObjective,
                  device: torch.device, trained_steps: int) -> dict[str, Any]:
    """metrics.json and the pictures: samples, super-resolution, extrapolation, interpolation, curves."""
    model.eval()
    run = InrGanRun(model.generator_ema, model.frame, model.channels, {})
    h, w = model.frame
    final = trainer.history.evals[-1] if trainer.history.evals else objective.evaluate()
    last = trainer.history.train[-1] if trainer.history.train else {}
    generator = model.generator
    metrics: dict[str, Any] = {
        "method": "inr-gan", "dataset": config.source, "device": str(device), "height": h, "width": w,
        "channels": model.channels, "steps": trainer.step, "trained_steps": trained_steps,
        "seconds": trainer.seconds, "images_per_second": trainer.step * config.batch / trainer.seconds
        if trainer.seconds > 0 else 0.0, "train_images": int(objective.train_images.shape[0]),
        "r1_gamma": objective.gamma,
        "generator_params": sum(p.numel() for p in generator.parameters()),
        "discriminator_params": sum(p.numel() for p in model.discriminator.parameters()),
        "inr_params_per_sample": generator.inr_parameters(),
        "gflops_per_sample": generator.flops_per_sample(h, w) / 1e9,
        "samples_per_second": samples_per_second(model.generator_ema, device),
        **{k: v for k, v in final.items() if k not in ("step", "seconds")},
        **{f"final_{k}": v for k, v in last.items() if k not in ("step", "seconds")},
    }
    metrics["params"] = metrics["generator_params"] + metrics["discriminator_params"]
    write_json_atomic(out / "metrics.json", metrics)

    # Pictures as plain tiled PNGs (each tile nearest-upsampled to a common size): cheap, and pixel-exact.
    save_image(montage([list(sample_images(run, 8, seed=8 * r)) for r in range(4)]), out / "samples.png")
    save_image(montage([[sample_images(run, 1, s)[0], sample_images(run, 1, s, 2 * h, 2 * w)[0],
                         sample_images(run, 1, s, 4 * h, 4 * w)[0],
                         sample_images(run, 1, s, 4 * h, 4 * w, region=(w / 4, h / 4, 3 * w / 4, 3 * h / 4))[0]]
                        for s in range(4)]), out / "superres.png")  # 1x, 2x, 4x, the centre half at 8x
    save_image(montage([[sample_images(run, 1, s, 2 * h, 2 * w, region=(-w / 2, -h / 2, 1.5 * w, 1.5 * h))[0]]
                        for s in range(4)]), out / "extrapolation.png")  # the frame plus half of it on each side
    save_image(montage([list(interpolate(run, 2 * i, 2 * i + 1, steps=8)) for i in range(4)]),
               out / "interpolation.png")
    save_loss_curve(trainer.history.train, out / "curve.png", f"INR-GAN on {config.source}")
    return metrics


def montage(rows: list[list[np.ndarray]], gutter: int = 2) -> np.ndarray:
    """Tiles (H_i, W_i, C) in [0, 1] on a white grid, each nearest-upsampled to the largest tile's size."""
    tile_h = max(t.shape[0] for row in rows for t in row)
    tile_w = max(t.shape[1] for row in rows for t in row)
    cols, channels = max(len(row) for row in rows), rows[0][0].shape[-1]
    sheet = np.ones((len(rows) * (tile_h + gutter) + gutter, cols * (tile_w + gutter) + gutter, channels), np.float32)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            tile = tile.repeat(tile_h // tile.shape[0], 0).repeat(tile_w // tile.shape[1], 1)
            y, x = gutter + r * (tile_h + gutter), gutter + c * (tile_w + gutter)
            sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return sheet


@torch.no_grad()
def samples_per_second(generator, device: torch.device, batch: int = 64, repeats: int = 5) -> float:
    """G_ema throughput at its frame size (mapping + hypernetwork + INR), after a warm-up."""
    z = torch.randn(batch, generator.config.latent, device=device)
    generator(z)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        generator(z)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * repeats / (time.perf_counter() - started)


def save_loss_curve(train: list[dict], path: Path, title: str) -> None:
    """The losses and R1 against step and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import figure_bytes

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, x in zip(axes, ("step", "seconds")):
        for key, label in (("d_loss", "D loss"), ("g_loss", "G loss"), ("r1", "R1 (|grad D|^2)")):
            if train and key in train[0]:
                ax.plot([p[x] for p in train], [p[key] for p in train], label=label, lw=1)
        ax.set_xlabel(x if x == "step" else "training time (s)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right")
    fig.suptitle(title)
    write_bytes_atomic(path, figure_bytes(fig))


# -- a finished run: the API behind `nfields generate` ---------------------------------------------------------

@dataclass
class InrGanRun:
    """A trained run's G_ema (eval mode) and what it was trained on."""

    generator: Any  # InrGanGenerator
    frame: tuple[int, int]
    channels: int
    config: dict


def is_inr_gan_run(run_dir: Path) -> bool:
    return is_run_of(run_dir, "train-inr-gan")


def load_inr_gan_run(run_dir: Path, device: str | torch.device = "auto") -> InrGanRun:
    """The run's G_ema from its newest checkpoint."""
    if Path(run_dir).is_dir() and not is_inr_gan_run(run_dir):
        raise NfieldsError(f"'{run_dir}' is not a 'train inr-gan' run; give the --out folder of one.")

    def build(data: dict) -> InrGan:
        spec = data["field_spec"]
        return InrGan(InrGanConfig(**spec["config"]), tuple(spec["frame"]), spec["channels"])

    model, data = load_trained(Path(run_dir), build, str(device), cls=TrainInrGanConfig)
    return InrGanRun(model.generator_ema, model.frame, model.channels, data)


def latents(run: InrGanRun, seeds: Sequence[int]) -> torch.Tensor:
    """z of each seed (drawn on the CPU, so a seed gives the same sample on any device and in any batch)."""
    return torch.stack([torch.randn(run.generator.config.latent, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


@torch.no_grad()
def render_styles(run: InrGanRun, w: torch.Tensor, height: int | None = None, width: int | None = None,
                  region: Sequence[float] | None = None, chunk: int = 1 << 18) -> np.ndarray:
    """(n, H, W, C) float32 in [0, 1] for styles w, `chunk` points per call (rows of the output at a time:
    the coarse levels are piecewise constant per cell, so chunking changes no value)."""
    from ..generative.inr_gan import grid_points

    generator = run.generator
    device = next(generator.parameters()).device
    height, width = height or run.frame[0], width or run.frame[1]
    if height <= 0 or width <= 0:
        raise NfieldsError(f"the output size must be positive, not {height}x{width}.")
    points = grid_points(height, width, run.frame, region, device)
    out = np.empty((w.shape[0], height, width, run.channels), np.float32)
    rows = max(1, chunk // (width * max(1, w.shape[0])))
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        values = generator.render(w.to(device), points[start * width:stop * width])
        out[:, start:stop] = to_unit(values).view(w.shape[0], stop - start, width, -1).cpu().numpy()
    return out


@torch.no_grad()
def sample_images(run: InrGanRun, n: int, seed: int = 0, height: int | None = None, width: int | None = None,
                  region: Sequence[float] | None = None, truncation: float = 1.0, batch: int = 64) -> np.ndarray:
    """n samples (seeds seed, seed + 1, ...) as float32 (n, H, W, C) in [0, 1], on a height x width grid over
    `region` = (x0, y0, x1, y1) in pixels of the training frame (default: the frame at its own size; a larger
    grid is super-resolution, a region past the frame extrapolation)."""
    if n <= 0:
        raise NfieldsError(f"the number of samples must be positive, not {n}.")
    device = next(run.generator.parameters()).device
    parts = []
    for start in range(0, n, batch):
        z = latents(run, range(seed + start, seed + min(n, start + batch))).to(device)
        parts.append(render_styles(run, run.generator.mapping(z, truncation), height, width, region))
    return np.concatenate(parts)


@torch.no_grad()
def interpolate(run: InrGanRun, seed_a: int, seed_b: int, steps: int = 8, height: int | None = None,
                width: int | None = None, truncation: float = 1.0) -> np.ndarray:
    """(steps, H, W, C) in [0, 1]: samples along the straight line in w between two seeds' samples (StyleGAN's
    choice: W is the disentangled space), ends included."""
    if steps < 2:
        raise NfieldsError(f"an interpolation needs at least 2 steps, not {steps}.")
    device = next(run.generator.parameters()).device
    w = run.generator.mapping(latents(run, [seed_a, seed_b]).to(device), truncation)
    t = torch.linspace(0, 1, steps, device=device)[:, None]
    return render_styles(run, w[0] + t * (w[1] - w[0]), height, width)
