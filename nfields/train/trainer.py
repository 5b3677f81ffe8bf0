"""One training loop for every job.

A job supplies an `Objective`: the module that holds every trainable tensor, a `loss(step)` and
an `evaluate()`. The trainer owns the rest: optimisation, the clock, logging, progress,
checkpoints and resuming.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..errors import NfieldsError, notice
from . import distributed
from .checkpoint import load_latest, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from .graph import GraphedStep
from .logging import EventLog, progress_bar
from .run import commit_run_dir, model_state

#: On the CPU, a run whose first steps show it would take longer than this (seconds) says so, with advice.
SLOW_RUN_SECONDS = 600.0


class Objective(Protocol):
    model: nn.Module
    #: Optional: `items_per_step = (count, unit)`, e.g. (4096, "rays"), shown as a rate in the progress bar.
    #: Optional: `after_step()`, called after every optimizer step (e.g. to update an EMA of the weights).
    #: Optional: `finished()` -> bool, asked after every step (keep it cheap: no device sync); True ends the
    #: run there, with the final log, evaluation and checkpoint. `TrainerConfig.steps` is then an upper bound.
    #: Optional: `postfix()` -> {name: short text}, added to the progress bar at log points.
    #: Optional: `cuda_graph_safe = True`: `loss(step)` has static shapes, no host syncs and ignores `step`, so
    #: with `TrainerConfig.cuda_graph` on a CUDA device the whole step is replayed as one CUDA graph.

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and named scalars to log (tensors: read only at log points)."""

    def evaluate(self) -> dict[str, float]:
        """Full evaluation; its time is not counted as training time."""


@dataclass
class TrainerConfig:
    steps: int
    checkpoint_every: int = 500
    log_every: int = 25
    eval_every: int = 0
    eval_at: tuple[int, ...] = ()
    progress: bool = True
    #: Stop after this many seconds of training (0: no limit); the clock is read after every step, so a run
    #: stops within one step of the limit (under torchrun, all ranks at the same step).
    max_seconds: float = 0.0
    #: Also evaluate when training time first passes each of these seconds (checked at log points).
    eval_at_seconds: tuple[float, ...] = ()
    #: Replay the step as one CUDA graph where the objective says it is safe (nfields.train.graph).
    cuda_graph: bool = False


@dataclass
class History:
    """What happened: training log points and evaluations, each with step and training seconds."""

    train: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    def __init__(self, objective: Objective, optimizer: torch.optim.Optimizer, run_dir: Path | None,
                 config: TrainerConfig, description: str = "fit"):
        """Without a `run_dir` the trainer writes nothing (no checkpoints, no events)."""
        self.objective = objective
        self.optimizer = optimizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config = config
        self.description = description
        self.step = 0
        self.seconds = 0.0
        self.history = History()
        self.trained_steps = 0  # steps taken by the last fit() (a resumed run counts only its own)
        self._events: EventLog | None = None

    @property
    def device(self) -> torch.device:
        return next(self.objective.model.parameters()).device

    # -- checkpoints -----------------------------------------------------------------------
    def save(self) -> None:
        if self.run_dir is None or not distributed.is_main():
            return
        tensors = {f"model.{k}": v for k, v in self.objective.model.state_dict().items()}
        optimizer_tensors, optimizer_meta = optimizer_to_flat(self.optimizer)
        tensors.update(optimizer_tensors)
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"seconds": self.seconds, "optimizer": optimizer_meta,
                "history": {"train": self.history.train, "evals": self.history.evals}}
        save_checkpoint(self.run_dir, self.step, tensors, meta)
        # A run that replaces another (--overwrite) is staged beside it until its first checkpoint: swap it in.
        committed = commit_run_dir(self.run_dir)
        if committed != self.run_dir:
            events = self._events
            if events is not None:
                events.close()  # TensorBoard appends by path: reopen it at the run's new place
            self.run_dir = committed
            if events is not None:
                self._events = EventLog(committed)

    def resume(self) -> bool:
        """Load the newest good checkpoint (saying which damaged ones it skipped); False, with a notice, when the
        run stopped before its first one. An NfieldsError when checkpoints exist but none reads back whole."""
        if self.run_dir is None:
            return False
        found = load_latest(self.run_dir, map_location=self.device, quiet=not distributed.is_main())
        if found is None:
            if distributed.is_main():
                notice(f"'{self.run_dir}' has no checkpoint yet (the run stopped before its first one); "
                       f"starting again from step 0.")
            return False
        tensors, meta = found
        try:
            self.objective.model.load_state_dict(model_state(tensors))
            optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        except (RuntimeError, KeyError, ValueError) as error:
            raise NfieldsError(f"the checkpoint in '{self.run_dir}' does not match this configuration "
                               f"({str(error).splitlines()[0]}); resume with the run's own settings.") from None
        torch.set_rng_state(tensors["rng.cpu"].cpu())
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"].cpu(), self.device)
        self.step = meta["step"]
        self.seconds = meta["seconds"]
        self.history = History(meta["history"]["train"], meta["history"]["evals"])
        return True

    # -- the loop --------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _wants_eval(self, step: int) -> bool:
        every = self.config.eval_every
        return step in self.config.eval_at or (every > 0 and step % every == 0)

    def _train_step(self, zero_grad: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step; the detached loss and logs."""
        loss, logs = self.objective.loss(self.step)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), {k: v.detach() for k, v in logs.items()}

    def fit(self) -> History:
        cfg = self.config
        if cfg.max_seconds and self.seconds >= cfg.max_seconds:
            return self.history  # a resumed run that already used its time
        finished = getattr(self.objective, "finished", None)
        if finished is not None and finished():
            return self.history  # a resumed run that had already finished
        main = distributed.is_main()  # under torchrun only rank 0 logs, shows progress and saves
        first_step = self.step
        self._events = EventLog(self.run_dir if main else None, purge_step=self.step + 1 if self.step else None)
        bar = progress_bar(cfg.steps, self.step, self.description, cfg.progress and main)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        items = getattr(self.objective, "items_per_step", None)
        after_step = getattr(self.objective, "after_step", None)
        postfix = getattr(self.objective, "postfix", None)
        graphed = cfg.cuda_graph and self.device.type == "cuda" and getattr(self.objective, "cuda_graph_safe", False)
        train_step = GraphedStep(self._train_step, self.optimizer) if graphed else lambda: self._train_step(True)
        limit = cfg.max_seconds
        # The clock is read after every step (no device sync: the host waits for the device often enough); under
        # torchrun the ranks vote on it, so all stop at the same step.
        vote = distributed.StopVote(self.device) if limit and distributed.active() else None
        estimate = _RunEstimate(self, first_step) if self.device.type == "cpu" and main else None
        self._sync()
        started = time.perf_counter()
        try:
            while self.step < cfg.steps:
                loss, logs = train_step()
                if after_step is not None:
                    after_step()  # e.g. an EMA of the weights, updated from the weights just stepped
                self.step += 1
                bar.update(1)
                logs = {"loss": loss, **logs}
                for key, value in logs.items():
                    sums[key] = sums[key] + value if key in sums else value.clone()
                count += 1

                out_of_time = False
                if limit or estimate is not None:
                    elapsed = self.seconds + time.perf_counter() - started
                    if limit:
                        out_of_time = elapsed >= limit if vote is None else vote.post(elapsed >= limit)
                    if estimate is not None and estimate.update(elapsed):
                        estimate = None
                last = self.step == cfg.steps or out_of_time or (finished is not None and finished())
                log_now = self.step % cfg.log_every == 0 or last
                eval_now = self._wants_eval(self.step) or last
                save_now = self.step % cfg.checkpoint_every == 0 or last
                if not (log_now or eval_now or save_now):
                    continue
                self._sync()
                before = self.seconds
                self.seconds += time.perf_counter() - started  # the clock stops for logs, evals, saves
                if cfg.max_seconds and distributed.any_rank(self.seconds >= cfg.max_seconds, self.device):
                    last = eval_now = save_now = True
                eval_now = eval_now or any(before < s <= self.seconds for s in cfg.eval_at_seconds)
                if log_now and count:
                    point = {k: float(v) / count for k, v in sums.items()}
                    if not math.isfinite(point["loss"]):
                        raise NfieldsError(f"training diverged (the loss became {point['loss']}) at step "
                                           f"{self.step}; lower the learning rate with --lr.")
                    self.history.train.append({"step": self.step, "seconds": self.seconds, **point})
                    self._events.scalars(self.step, point, "train/")
                    shown = {k: f"{v:.4g}" for k, v in point.items()}
                    if items and self.seconds > before:
                        shown[f"{items[1]}/s"] = f"{items[0] * count / (self.seconds - before):.3g}"
                    if postfix is not None:
                        shown.update(postfix())
                    bar.set_postfix(shown, refresh=False)
                    sums, count = {}, 0
                if eval_now and main:
                    metrics = self.objective.evaluate()
                    self.history.evals.append({"step": self.step, "seconds": self.seconds, **metrics})
                    self._events.scalars(self.step, metrics, "eval/")
                if save_now:
                    self.save()
                if last:
                    break
                self._sync()
                started = time.perf_counter()
        finally:
            bar.close()
            self._events.close()
            self._events = None
            if vote is not None:
                vote.close()
            self.trained_steps = self.step - first_step
        return self.history


class _RunEstimate:
    """On the CPU: once the first steps are timed, one line when the whole run would take over SLOW_RUN_SECONDS."""

    def __init__(self, trainer: Trainer, first_step: int):
        self.trainer = trainer
        self.first_step = first_step
        self.start: float | None = None  # training seconds after the first step (which may warm up caches)

    def update(self, elapsed: float) -> bool:
        """Called after each step with the training seconds so far; True once it has said what it had to."""
        trainer, cfg = self.trainer, self.trainer.config
        taken = trainer.step - self.first_step
        if taken == 1:
            self.start = elapsed
            return False
        if self.start is None or taken < 4 or (taken < 11 and elapsed - self.start < 2.0):
            return False
        per_step = (elapsed - self.start) / (taken - 1)
        left = per_step * (cfg.steps - trainer.step)
        if cfg.max_seconds:
            left = min(left, cfg.max_seconds - elapsed)
        if left > SLOW_RUN_SECONDS:
            notice(f"this run would take about {_duration(left)} more on the CPU ({per_step:.3g} s a step, "
                   f"{cfg.steps - trainer.step:,} steps to go); fewer steps, a smaller size or --device cuda "
                   f"would shorten it.")
        return True


def _duration(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"
