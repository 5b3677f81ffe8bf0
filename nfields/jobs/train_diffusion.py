"""Stage 2: a DDPM prior over the latents of a stage-1 run (`nfields train ginr`), on the one Trainer,
and sampling new fields from it (`load_diffusion_run`, `sample_latents`, `decode_latents`).

mNIF (seed 000, official code): cosine schedule, 1000 steps, x0-prediction, per-dimension standardised
contexts, a residual MLP, AdamW 1e-4, EMA. The locality-aware INR (seed 002, Appendix A.3): x0-prediction
over per-token standardised tokens with a 24-block Transformer, Adam 1e-4, batch 256, EMA 0.9999, 10% of
class conditions dropped for classifier-free guidance, 250 DDIM steps at guidance 2.5. Both use the
cosine schedule here (`Diffusion` has that one; A.3 names the linear one).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from .. import viz
from ..errors import NfieldsError
from ..fields import parameter_count
from ..generative.denoisers import (DENOISERS, denoiser_for_shape, denoiser_from_spec, denoiser_spec,
                                    make_denoiser)
from ..generative.prior import LatentPrior, latent_statistics
from ..io import write_bytes_atomic, write_json_atomic
from ..train import Trainer
from ..train.checkpoint import load_latest
from ..train.logging import progress_bar
from ..train.manifest import is_run_of, read_manifest
from ..train.run import load_run_config, load_trained, open_run_dir
from .common import FitConfig, prepare, run_trainer, start_run, write_run_config
from .ginr_outputs import GINRRun, is_ginr_run, load_ginr_run
from .train_ginr import eval_batch

#: Per denoiser, when --batch is not given: mNIF's stage-2 batch (main_stage2.py, 64) and A.3's (256).
PAPER_BATCH = {"mlp": 64, "transformer": 256}
#: Per denoiser, when --weight-decay is not given: mNIF's AdamW default (0.01) and A.3's (none).
PAPER_WEIGHT_DECAY = {"mlp": 0.01, "transformer": 0.0}
DEFAULT_LR = 1e-4  # both papers, constant
CLASS_CONDITIONAL = ("auto", "on", "off")
RENDER_CELLS = 1 << 22  # grid cells decoded at once when sampled latents are rendered
EVAL_SEED = 20240  # the fixed noise and steps of every evaluation, so evaluations compare


@dataclass
class TrainDiffusionConfig(FitConfig):
    """Everything that defines a prior run (written resolved to `config.json`). `source` is the stage-1 run
    folder (`--latents`), `field` the denoiser (auto, mlp or transformer), `field_options` its options."""

    kinds: ClassVar[tuple[str, ...]] = ("train-diffusion",)

    field_registry: ClassVar = DENOISERS

    source: str = ""
    field: str = "auto"  # auto: mlp for latent vectors, transformer for latent tokens
    steps: int = 10000
    epochs: float = 0.0  # > 0: train for this many passes over the training latents instead of `steps`
    seconds: float = 0.0  # stop after this much training time (0: no limit)
    eval_at_seconds: list[float] = default(default_factory=list)
    batch: int = 0  # latents per step (0: the denoiser's paper batch, PAPER_BATCH)
    weight_decay: float | None = None  # AdamW's (None: the denoiser's paper value, PAPER_WEIGHT_DECAY)
    ema_decay: float = 0.9999  # A.3's (mNIF: LitEma's default)
    class_conditional: str = "auto"  # auto: when the stage-1 dataset has labels; on; off
    cfg_dropout: float = 0.1  # share of class conditions replaced by the null class in training (A.3: 10%)
    guidance: float = 2.5  # classifier-free guidance scale w of samples (A.3: 2.5; 1: plain conditional)
    sampling_steps: int = 250  # DDIM steps (A.3: 250)
    diffusion_steps: int = 1000  # T of the forward process (both papers)
    eval_limit: int = 1000  # held-out latents evaluated (0: all)
    limit: int = 0  # train on the latents of the first N training instances (0: all the stage-1 run used)
    encode_batch: int = 64  # images encoded at once when the latents are extracted

    def validate(self) -> None:
        if self.field == "auto":  # options are checked once the latent shape has picked the denoiser
            FitConfig.validate(dataclasses.replace(self, field="mlp", field_options={}))
        else:
            super().validate()
        if self.batch < 0 or self.encode_batch <= 0:
            raise NfieldsError(f"--batch must be positive (or 0 for the paper's), not {self.batch}.")
        if self.epochs < 0 or self.seconds < 0 or self.eval_limit < 0 or self.limit < 0:
            raise NfieldsError("--epochs, --seconds, --eval-limit and --limit must not be negative.")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise NfieldsError(f"--weight-decay must not be negative, not {self.weight_decay}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise NfieldsError(f"--ema must be in [0, 1), not {self.ema_decay}.")
        if self.class_conditional not in CLASS_CONDITIONAL:
            raise NfieldsError(f"--class-conditional must be auto, on or off, not {self.class_conditional!r}.")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise NfieldsError(f"--cfg-dropout must be in [0, 1), not {self.cfg_dropout}.")
        if self.guidance < 0:
            raise NfieldsError(f"--guidance must not be negative, not {self.guidance}.")
        if self.diffusion_steps < 1 or not 1 <= self.sampling_steps <= self.diffusion_steps:
            raise NfieldsError(f"--sampling-steps must be between 1 and the {self.diffusion_steps} diffusion "
                               f"steps, not {self.sampling_steps}.")

    def normalized(self):
        if self.field != "auto":
            return super().normalized()
        self.validate()
        source = str(Path(self.source).resolve()) if Path(self.source).exists() else self.source
        return dataclasses.replace(self, source=source)

    def time_budget(self) -> dict[str, Any]:
        return {"max_seconds": self.seconds, "eval_at_seconds": tuple(self.eval_at_seconds)}


# -- the stage-1 run and its latents ------------------------------------------------------------------------

def load_stage1(path: str | Path, device: str | torch.device = "auto") -> GINRRun:
    """The stage-1 run whose latents the prior models, checked to be one."""
    path = Path(path)
    if not path.is_dir():
        raise NfieldsError(f"stage-1 run '{path}' does not exist; give --latents the --out folder of a "
                           f"'nfields train ginr' run.")
    if not is_ginr_run(path):
        raise NfieldsError(f"'{path}' is not a stage-1 run (no 'nfields train ginr' config.json there); give "
                           f"--latents the --out folder of one.")
    run = load_ginr_run(path, str(device))
    if run.config.light_field and not run.radiance:
        raise NfieldsError(f"'{path}' is a light-field run; the prior models the latents of image, voxel and "
                           f"radiance-field (mnif on scenes:) runs.")
    return run


def stage1_signature(run: GINRRun, latent_shape: Sequence[int]) -> dict[str, Any]:
    """What a prior's latents depend on: which run, its model and the checkpoint they came from."""
    found = load_latest(run.folder, quiet=True)  # the checkpoint the run was loaded from (damaged ones skipped)
    return {"latents": str(Path(run.folder).resolve()), "method": run.config.field, "dataset": run.config.source,
            "latent_shape": list(latent_shape), "stage1_step": int(found[1]["step"]) if found else 0,
            "stage1_spec": json.loads(json.dumps(run.model.spec()))}


def check_compatible(stored: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    """Refuse latents that are not the ones a stored prior was trained on."""
    if stored["latents"] != current["latents"]:
        raise NfieldsError(f"the prior in '{folder}' was trained on the latents of '{stored['latents']}', not "
                           f"'{current['latents']}'; give that run or start a new prior.")
    for key, what in (("latent_shape", "latent shape"), ("method", "method"), ("stage1_spec", "model"),
                      ("stage1_step", "checkpoint step")):
        if stored[key] != current[key]:
            shown = ("its settings changed" if key == "stage1_spec"
                     else f"{what} {_show(stored[key])} then, {_show(current[key])} now")
            raise NfieldsError(f"stage-1 run '{current['latents']}' has changed since the prior in '{folder}' was "
                               f"trained on it ({shown}); train a new prior.")


def _show(value) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


@torch.no_grad()
def extract_latents(run: GINRRun, split: str = "train", limit: int = 0, batch: int = 64,
                    progress: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(N, *latent_shape) float latents of a split on the run's device and its labels (or None).

    Methods with a learned latent table (`needs_index`) give the table's rows for the training split (the
    latents the decoder was trained with) and None for other splits (their latents would need fitting)."""
    model = run.model.eval()
    if model.needs_index:
        if split != "train":
            return None, None
        data = run.instances("train", run.config.limit)
        table = model.latents.detach()
        if table.shape[0] != len(data):
            raise NfieldsError(f"stage-1 run '{run.folder}' has {table.shape[0]} training latents but its "
                               f"training split has {len(data)} images; is its dataset still the one it used?")
        count = min(limit, len(data)) if limit else len(data)
        labels = data.labels[:count].to(table.device) if data.labels is not None else None
        return table[:count].float().clone(), labels
    data = run.instances(split, limit)
    count = len(data)
    bar = progress_bar(count, 0, f"encode {split} latents", progress)
    batch = eval_batch(model, batch)  # at most so many grid cells at once (voxel grids are large)
    parts = []
    try:
        for start in range(0, count, batch):
            index = torch.arange(start, min(count, start + batch), device=run.device)
            parts.append(model.encode(data.float_images(index)).float())
            bar.update(len(index))
    finally:
        bar.close()
    labels = data.labels.to(run.device) if data.labels is not None else None
    return torch.cat(parts), labels


# -- the objective ---------------------------------------------------------------------------------------------

class DiffusionObjective:
    """x0-prediction MSE on batches of standardised training latents from a seeded permutation per epoch (a
    resumed run sees the same batches and noise); the EMA is updated after every step."""

    def __init__(self, prior: LatentPrior, train: torch.Tensor, train_labels: torch.Tensor | None,
                 test: torch.Tensor | None, test_labels: torch.Tensor | None, config: TrainDiffusionConfig,
                 batch: int):
        self.model = prior
        self.train, self.train_labels = train, train_labels if prior.num_classes else None
        self.test, self.test_labels = test, test_labels if prior.num_classes else None
        self.config, self.batch = config, batch
        self.device = train.device
        self.steps_per_epoch = max(1, len(train) // batch)
        self.items_per_step = (batch, "latents")
        self._epoch, self._order = -1, None

    def batch_index(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.train), generator=generator)
        return self._order[position * self.batch:(position + 1) * self.batch].to(self.device)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = self.batch_index(step)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + step)
        condition = None
        if self.train_labels is not None:
            condition = self.train_labels[index].clone()
            drop = torch.rand(len(index), device=self.device, generator=generator) < self.config.cfg_dropout
            condition[drop] = self.model.denoiser.null_class
        return self.model.loss(self.train[index], condition, generator), {}

    def after_step(self) -> None:
        self.model.update_ema()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """x0-prediction MSE of the EMA and the live denoiser under one fixed draw of steps and noise: on the
        held-out (test split) latents when the stage-1 method encodes new images, and on training latents."""
        limit = self.config.eval_limit or len(self.train)
        sets = {"train": (self.train[:limit], None if self.train_labels is None else self.train_labels[:limit])}
        if self.test is not None:
            sets["test"] = (self.test, self.test_labels)
        was_training = self.model.training
        self.model.eval()
        metrics = {}
        for name, (latents, labels) in sets.items():
            for tag, use_ema in (("", True), ("_live", False)):
                total = 0.0
                for i, start in enumerate(range(0, len(latents), 256)):
                    part = slice(start, start + 256)
                    generator = torch.Generator(device=self.device).manual_seed(EVAL_SEED + i)
                    condition = None if labels is None else labels[part]
                    loss = self.model.loss(latents[part], condition, generator, use_ema=use_ema)
                    total += float(loss) * len(latents[part])
                metrics[f"loss_{name}{tag}"] = total / len(latents)
        self.model.train(was_training)
        return metrics


def make_optimizer(prior: LatentPrior, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW on the live denoiser; weight decay on weight matrices and embeddings only (ours: mNIF decays
    every 'weight', GroupNorm scales included); with decay 0 this is A.3's Adam."""
    params = prior.trainable_parameters()
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999))


# -- the run ---------------------------------------------------------------------------------------------------

def _stored(out: Path) -> dict[str, Any] | None:
    """The manifest of the run in `out` (its settings checked when it is a prior), or None when there is none."""
    try:
        data = read_manifest(out)
    except NfieldsError:
        return None
    if data["kind"] == "train-diffusion":
        load_run_config(out, TrainDiffusionConfig)
    return data


def run_train_diffusion(config: TrainDiffusionConfig, out: Path, resume: bool = False, overwrite: bool = False,
                        explicit: set[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a prior in `out`; returns metrics.json's content."""
    explicit = set(explicit or ())
    device = prepare(config)
    stored = _stored(out) if resume else None
    if resume and stored is not None and stored["kind"] != "train-diffusion":
        raise NfieldsError(f"'{out}' is not a 'nfields train diffusion' run; resume one, or give another --out.")
    if stored is not None and "source" in explicit and config.source:
        asked = str(Path(config.source).resolve())
        if asked != stored["diffusion"]["latents"]:
            raise NfieldsError(f"the prior in '{out}' was trained on the latents of '{stored['diffusion']['latents']}',"
                               f" not '{asked}'; resume without --latents or start a new run.")
        explicit.discard("source")
    config = start_run(config, out, resume, overwrite, explicit)
    if not config.source:
        raise NfieldsError("give --latents RUN, the folder of a stage-1 run ('nfields train ginr').")
    torch.manual_seed(config.seed)
    stage1 = load_stage1(config.source, device)
    # The training split the stage-1 model was trained on (its --limit), so vectors and tokens alike.
    used = stage1.config.limit  # the latents sit on the device: 60,000 locality token sets would be 47 GB
    limit = min(config.limit, used) if config.limit and used else (config.limit or used)
    train, train_labels = extract_latents(stage1, "train", limit, config.encode_batch, progress)
    test, test_labels = extract_latents(stage1, "test", config.eval_limit, config.encode_batch, progress)
    latent_shape = tuple(train.shape[1:])
    signature = stage1_signature(stage1, latent_shape)
    if stored is not None:
        check_compatible(stored["diffusion"], signature, out)

    name = denoiser_for_shape(latent_shape) if config.field == "auto" else config.field
    conditional = resolve_conditional(config, train_labels, explicit)
    num_classes = int(train_labels.max()) + 1 if conditional else 0
    batch = config.batch or PAPER_BATCH[name]
    if len(train) < batch:
        raise NfieldsError(f"the stage-1 run has {len(train)} training latents, fewer than one --batch of {batch}; "
                           f"lower --batch.")
    if config.epochs:
        config = dataclasses.replace(config, steps=max(1, round(config.epochs * (len(train) // batch))))
    denoiser = make_denoiser(name, latent_shape, num_classes, **config.field_options)
    prior = LatentPrior(denoiser, *latent_statistics(train), steps=config.diffusion_steps,
                        ema_decay=config.ema_decay).to(device)
    weight_decay = PAPER_WEIGHT_DECAY[name] if config.weight_decay is None else config.weight_decay
    objective = DiffusionObjective(prior, train, train_labels, test, test_labels, config, batch)
    optimizer = make_optimizer(prior, config.lr or DEFAULT_LR, weight_decay)
    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, field_spec=denoiser_spec(denoiser), diffusion={
            **signature, "denoiser": name, "num_classes": num_classes, "batch": batch, "weight_decay": weight_decay,
            "lr": config.lr or DEFAULT_LR, "train_latents": len(train), "test_latents": 0 if test is None else len(test),
            "standardisation": "per dimension" if len(latent_shape) == 1 else "per token and channel"})
        trainer = run_trainer(objective, optimizer, config, run_dir, resume, progress, f"train diffusion ({name})",
                        f"lower --batch (now {batch}) or the denoiser's width")
    return write_outputs(out, prior, stage1, config, trainer, objective, trained_steps=trainer.trained_steps)


def resolve_conditional(config: TrainDiffusionConfig, labels: torch.Tensor | None, explicit: set[str]) -> bool:
    if config.class_conditional == "on" and labels is None:
        raise NfieldsError(f"--class-conditional on needs labels, and '{config.source}' has none; use auto or off.")
    conditional = labels is not None and config.class_conditional != "off"
    if not conditional and "guidance" in explicit:
        raise NfieldsError("--guidance needs a class-conditional prior (labelled stage-1 data, --class-conditional "
                           "auto or on).")
    return conditional


def write_outputs(out: Path, prior: LatentPrior, stage1: GINRRun, config: TrainDiffusionConfig, trainer: Trainer,
                  objective: DiffusionObjective, trained_steps: int) -> dict[str, Any]:
    """metrics.json, curve.png and samples.png (decoded samples of the EMA prior)."""
    final = trainer.history.evals[-1] if trainer.history.evals else objective.evaluate()
    run = DiffusionRun(prior.eval(), config, stage1, out)
    per_row = 8
    row_classes = list(range(min(prior.num_classes, 10))) if prior.num_classes else [None, None]
    classes = torch.tensor([c for c in row_classes for _ in range(per_row)]) if prior.num_classes else None
    latents = sample_latents(run, per_row * len(row_classes), seed=config.seed, classes=classes)
    images = decode_latents(run, latents)
    if stage1.radiance:  # renders from the fixed views: show the first view of each sample
        images = images[:, 0]
    elif images.dim() == 5:  # voxel grids: pictures of their shapes
        from .ginr_outputs import pictures

        images = torch.from_numpy(pictures(images))
    images = images.numpy()
    guided = f", guidance {config.guidance:g}" if prior.num_classes else ""
    save_mosaic(images.reshape(len(row_classes), per_row, *images.shape[1:]), out / "samples.png",
                [f"class {c}" if c is not None else "" for c in row_classes],
                f"samples: prior over {stage1.config.field} latents of {stage1.config.source}{guided}")
    save_loss_curve(trainer.history.train, trainer.history.evals, out / "curve.png",
                    f"diffusion over {stage1.config.field} latents of {stage1.config.source}")
    metrics: dict[str, Any] = {
        "denoiser": prior.denoiser.registry_name, "latents": str(Path(stage1.folder).resolve()),
        "method": stage1.config.field, "dataset": stage1.config.source, "latent_shape": list(prior.latent_shape),
        **{k: v for k, v in final.items() if k not in ("step", "seconds")},
        "steps": trainer.step, "trained_steps": trained_steps, "epochs": trainer.step * objective.batch / len(objective.train),
        "seconds": trainer.seconds,
        "latents_per_second": trainer.step * objective.batch / trainer.seconds if trainer.seconds > 0 else 0.0,
        "params": parameter_count(prior.denoiser), "train_latents": len(objective.train),
        "class_conditional": bool(prior.num_classes), "num_classes": prior.num_classes, "batch": objective.batch,
        "sampling_steps": config.sampling_steps, "guidance": config.guidance if prior.num_classes else None,
        "device": str(prior.mean.device),
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def save_mosaic(images: np.ndarray, path: Path, row_titles: list[str], title: str) -> None:
    """(R, K, H, W, C) images in [0, 1] as one picture (one axis: fast for many samples), a title per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, k, h, w, c = images.shape
    pad = max(1, h // 16)
    canvas = np.ones((r * (h + pad) - pad, k * (w + pad) - pad, c), dtype=np.float32)
    for i in range(r):
        for j in range(k):
            canvas[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = images[i, j]
    fig, ax = plt.subplots(figsize=(1.0 * k + 1.0, 1.0 * r * h / w + 0.6))
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(r)], row_titles, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    write_bytes_atomic(path, viz.figure_bytes(fig, dpi=100))


def save_loss_curve(train: list[dict], evals: list[dict], path: Path, title: str) -> None:
    """The x0-prediction loss (log scale) against step and training seconds: training batches, and the
    fixed-noise evaluations of the EMA denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, x in zip(axes, ("step", "seconds")):
        if train:
            ax.plot([p[x] for p in train], [p["loss"] for p in train], label="training batches (live)", lw=1)
        for key, label in (("loss_train", "training latents (EMA)"), ("loss_test", "held-out latents (EMA)")):
            if evals and key in evals[0]:
                ax.plot([p[x] for p in evals], [p[key] for p in evals], "o-", label=label, ms=3)
        ax.set_yscale("log")
        ax.set_xlabel(x if x == "step" else "training time (s)")
        ax.set_ylabel("x0 MSE (standardised)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right")
    fig.suptitle(title)
    write_bytes_atomic(path, viz.figure_bytes(fig, dpi=100))


# -- using a trained prior ---------------------------------------------------------------------------------------

@dataclass
class DiffusionRun:
    prior: LatentPrior
    config: TrainDiffusionConfig
    stage1: GINRRun
    folder: Path

    @property
    def device(self) -> torch.device:
        return self.prior.mean.device

    @property
    def class_conditional(self) -> bool:
        return self.prior.num_classes > 0


def is_diffusion_run(run_dir: str | Path) -> bool:
    return is_run_of(run_dir, "train-diffusion")


def load_diffusion_run(run_dir: str | Path, device: str = "auto") -> DiffusionRun:
    """A trained prior (EMA and live weights, statistics) and its stage-1 run, on `device`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NfieldsError(f"run folder '{run_dir}' does not exist; give the --out folder of 'nfields train diffusion'.")
    if not is_diffusion_run(run_dir):
        raise NfieldsError(f"'{run_dir}' is not a 'nfields train diffusion' run; give the --out folder of one.")

    def build(data: dict) -> LatentPrior:
        denoiser = denoiser_from_spec(data["field_spec"])
        zeros = torch.zeros(denoiser.latent_shape)
        return LatentPrior(denoiser, zeros, torch.ones_like(zeros), steps=data["diffusion_steps"],
                           ema_decay=data["ema_decay"])

    prior, data = load_trained(run_dir, build, device, cls=TrainDiffusionConfig)
    config = load_run_config(run_dir, TrainDiffusionConfig)
    stage1 = load_stage1(data["diffusion"]["latents"], prior.mean.device)
    check_compatible(data["diffusion"], stage1_signature(stage1, prior.latent_shape), run_dir)
    return DiffusionRun(prior, config, stage1, run_dir)


def sample_latents(run: DiffusionRun, n: int, seed: int = 0, guidance: float | None = None,
                   classes: int | Sequence[int] | torch.Tensor | None = None, batch: int = 256,
                   sampling_steps: int | None = None) -> torch.Tensor:
    """(n, *latent_shape) latents in the stage-1 scale, from the EMA denoiser by DDIM, on the run's device.

    A class-conditional prior samples `classes` (one int, or n of them; None: 0, 1, ..., K-1 in turn) with
    classifier-free guidance `guidance` (None: the run's); an unconditional one takes neither."""
    if n < 1:
        raise NfieldsError(f"the number of samples must be at least 1, not {n}.")
    if not run.class_conditional and (guidance is not None or classes is not None):
        raise NfieldsError(f"{'guidance' if guidance is not None else 'classes'} needs a class-conditional prior; "
                           f"the one in '{run.folder}' is unconditional.")
    if guidance is not None and guidance < 0:
        raise NfieldsError(f"guidance must not be negative, not {guidance}.")
    steps = sampling_steps or run.config.sampling_steps
    labels = None
    if run.class_conditional:
        labels = class_labels(classes, n, run.prior.num_classes).to(run.device)
        guidance = run.config.guidance if guidance is None else guidance
    generator = torch.Generator(device=run.device).manual_seed(seed)
    parts = []
    for start in range(0, n, batch):
        part = None if labels is None else labels[start:start + batch]
        parts.append(run.prior.sample(min(batch, n - start), steps, part, 1.0 if guidance is None else guidance,
                                       generator))
    return torch.cat(parts)


def class_labels(classes, n: int, num_classes: int) -> torch.Tensor:
    if classes is None:
        return torch.arange(n) % num_classes
    labels = torch.as_tensor(classes, dtype=torch.long).flatten()
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n:
        raise NfieldsError(f"give one class or one per sample ({n}), not {labels.numel()}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise NfieldsError(f"classes must be in 0..{num_classes - 1}, not {labels.tolist()[:8]}.")
    return labels.clone()


@torch.no_grad()
def decode_latents(run: DiffusionRun | GINRRun, latents: torch.Tensor, scale: float = 1.0,
                   batch: int = 64) -> torch.Tensor:
    """(N, *grid, C) values in [0, 1] on the CPU: the stage-1 decoder evaluated on its training grid scaled by
    `scale` (any scale: the field is continuous); images (N, h, w, C), voxel grids (N, d, h, w, C); radiance
    fields rendered from the fixed cameras (GINRRun.cameras) with `scale` x their pixels, (N, V, h, w, 3)."""
    if not (math.isfinite(scale) and scale > 0):
        raise NfieldsError(f"--scale must be positive, not {scale}.")
    stage1 = run.stage1 if isinstance(run, DiffusionRun) else run
    model = stage1.model.eval()
    if stage1.radiance:
        cameras = stage1.cameras.scaled(scale)
        return model.render_latents(latents, cameras.poses, cameras.height, cameras.width, cameras.focal).cpu()
    shape = tuple(max(1, round(s * scale)) for s in model.data.image_size)
    batch = max(1, min(batch, RENDER_CELLS // math.prod(shape)))  # bounded memory at large scales
    latents = latents.to(model.device)
    return torch.cat([model.render(part, shape=shape).clamp(0, 1).cpu() for part in latents.split(batch)])
