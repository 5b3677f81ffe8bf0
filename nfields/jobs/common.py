"""What every single-signal fit shares: its base settings, training a field on an objective,
and starting, resuming and describing a run folder. A new signal type (image, audio, video,
shape) adds its own settings dataclass, objective and outputs on top of these."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from ..errors import NfieldsError
from ..fields import FIELDS
from ..io import write_json_atomic
from ..kernels import KERNELS, set_kernel
from ..registry import Registry
from ..train import Objective, Trainer, TrainerConfig
from ..train.device import PRECISIONS, resolve_device, set_precision
from ..train.run import check_run_dir, load_run_config, manifest, resolved_for_resume


@dataclass
class FitConfig:
    """Settings of any fit of one signal with one field; subclasses add the signal's own."""

    #: Settings that name files; stored absolute so a run folder works from any directory.
    path_settings: ClassVar[tuple[str, ...]] = ("source",)
    #: Where `field` is looked up (scene fits use the scene fields).
    field_registry: ClassVar[Registry] = FIELDS
    #: The run kinds (nfields.train.manifest.KINDS) whose config.json holds these settings; the first is written.
    kinds: ClassVar[tuple[str, ...]] = ()

    source: str = ""
    field: str = "siren"
    field_options: dict[str, Any] = default(default_factory=dict)
    steps: int = 2000
    lr: float | None = None  # None: the field's own default
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    kernel: str = "auto"  # fused Triton kernels on CUDA where the field has them (nfields.kernels)
    checkpoint_every: int = 500
    log_every: int = 25
    eval_every: int = 0
    eval_at: list[int] = default(default_factory=list)
    seconds: float = 0.0  # stop after this much training time (0: no limit)

    def validate(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise NfieldsError(f"--{item.name.replace('_', '-')} must be a finite number, not {value}.")
        if self.steps <= 0:
            raise NfieldsError(f"--steps must be a positive number of steps, not {self.steps}.")
        if self.lr is not None and not self.lr > 0:
            raise NfieldsError(f"--lr must be positive, not {self.lr}.")
        for name in ("checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise NfieldsError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}.")
        if self.kernel not in KERNELS:
            raise NfieldsError(f"unknown --kernel '{self.kernel}'; use {', '.join(KERNELS)}.")
        if self.precision not in PRECISIONS:
            raise NfieldsError(f"unknown precision '{self.precision}'; use {' or '.join(PRECISIONS)}.")
        if not (0 <= self.seconds < float("inf")):
            raise NfieldsError(f"--seconds must be a number of seconds, 0 or more (0: no limit), not {self.seconds}.")
        self.field_config()

    def run_kind(self) -> str:
        """The kind of run these settings make (config.json's `kind`)."""
        return self.kinds[0]

    def field_config(self):
        """The field's options, typed and checked (NfieldsError on a bad one)."""
        return self.field_registry.config(self.field, self.field_options)

    def normalized(self):
        """Validated, field options typed (`-o width=32` -> 32) and file paths absolute."""
        self.validate()
        typed = self.field_config()
        changes: dict[str, Any] = {"field_options": {k: getattr(typed, k) for k in self.field_options}}
        for name in self.path_settings:
            value = getattr(self, name)
            if value and Path(value).exists():
                changes[name] = str(Path(value).resolve())
        return dataclasses.replace(self, **changes)

    def trainer_config(self, progress: bool) -> TrainerConfig:
        return TrainerConfig(self.steps, self.checkpoint_every, self.log_every, self.eval_every,
                             tuple(self.eval_at), progress, **self.time_budget())

    def time_budget(self) -> dict[str, Any]:
        """TrainerConfig's time limits; jobs that also evaluate by the clock override this."""
        return {"max_seconds": self.seconds}


def train_field(objective: Objective, model: torch.nn.Module, config: FitConfig, run_dir: Path | None, resume: bool,
                progress: bool, description: str, out_of_memory_advice: str) -> Trainer:
    """Run the one training loop on `objective` with the field's own optimizer."""
    set_kernel(model, config.kernel, next(model.parameters()).device)
    optimizer = model.make_optimizer(config.lr or model.default_lr)
    # The fused step (--kernel auto or fused) is also replayed as one CUDA graph where the objective allows it.
    return run_trainer(objective, optimizer, config, run_dir, resume, progress, description, out_of_memory_advice,
                       cuda_graph=config.kernel != "torch")


def run_trainer(objective: Objective, optimizer: torch.optim.Optimizer, config: FitConfig, run_dir: Path | None,
                resume: bool, progress: bool, description: str, out_of_memory_advice: str,
                cuda_graph: bool = False) -> Trainer:
    """The one training loop on `objective`, resumed from the run folder's newest checkpoint when asked.
    Running out of device memory is one sentence with `out_of_memory_advice`."""
    run_dir = None if run_dir is None else Path(run_dir)
    trainer_config = dataclasses.replace(config.trainer_config(progress), cuda_graph=cuda_graph)
    trainer = Trainer(objective, optimizer, run_dir, trainer_config, description=description)
    if resume and run_dir is not None:
        trainer.resume()
    try:
        trainer.fit()
    except torch.OutOfMemoryError:
        raise NfieldsError(f"one training step does not fit in device memory; {out_of_memory_advice}.") from None
    return trainer


def prepare(config: FitConfig, device_name: str | None = None) -> torch.device:
    """Validate, pick the device and its matmul precision."""
    config.validate()
    device = resolve_device(device_name or config.device)
    set_precision(config.precision)
    return device


C = TypeVar("C", bound=FitConfig)


def start_run(config: C, out: Path, resume: bool, overwrite: bool, explicit: set[str], check: bool = True) -> C:
    """Check the run folder (unless `check` is False: other processes of a torchrun launch leave that to
    rank 0); on resume, the stored settings with only the budget from the command."""
    if not resume:
        config.validate()  # a bad setting is refused before the folder is even probed
    if check:
        check_run_dir(out, resume, overwrite)
    if resume:
        config = resolved_for_resume(load_run_config(out, type(config)), config.normalized(), set(explicit))
    return config.normalized()


def write_run_config(out: Path, config: FitConfig, device: torch.device, model: torch.nn.Module | None = None,
                     field_spec: dict | None = None, **signal: Any) -> None:
    """config.json, the run manifest: the run's kind and format, the resolved settings, the device, the model's
    spec (`model.spec()` unless `field_spec` is given) and what the data is (e.g. image={...})."""
    spec = model.spec() if field_spec is None else field_spec
    write_json_atomic(out / "config.json", manifest(config.run_kind(), config, resolved_device=str(device),
                                                    field_spec=spec, **signal))


def final_metrics(trainer: Trainer, objective: Objective) -> dict[str, float]:
    """The last evaluation (the trainer evaluates at the final step), without step and seconds."""
    metrics = trainer.history.evals[-1] if trainer.history.evals else objective.evaluate()
    return {k: v for k, v in metrics.items() if k not in ("step", "seconds")}
