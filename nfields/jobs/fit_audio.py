"""Fit one audio clip with one field: the objective, the Python entry point, and the run folder.

SIREN's audio setup (official Colab): time in [-1, 1] with endpoints, a first-layer omega0 of
3,000 (later layers 30), 3 hidden x 256, full batch, Adam 1e-4, and the waveform divided by its
peak |x| before fitting (`normalize="peak"`). Metrics and outputs are on the file's own scale.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import viz
from ..data.audio import AudioSignal, load_audio, resampled_axis, write_audio
from ..errors import NfieldsError
from ..fields import Field, make_field, parameter_count
from ..io import write_json_atomic
from ..metrics import mse_to_psnr, snr, waveform_psnr
from ..render import render_samples
from ..train import Trainer
from ..train.run import open_run_dir
from .common import FitConfig, final_metrics, prepare, start_run, train_field, write_run_config

#: Field options that audio needs other than the field's own defaults; a user's options win. They
#: are applied where the field is made (make_audio_field), so config.json's `field_spec` shows them.
#: SIREN: time spans [-1, 1] but holds ~10^4 oscillations, so the first layer's omega0 is 3,000.
AUDIO_FIELD_DEFAULTS: dict[str, dict[str, Any]] = {"siren": {"first_omega0": 3000.0}}

NORMALIZATIONS = ("peak", "none")


def audio_field_options(field: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The field options for audio: AUDIO_FIELD_DEFAULTS under the given `options`."""
    return {**AUDIO_FIELD_DEFAULTS.get(field, {}), **(options or {})}


def make_audio_field(name: str, channels: int, **options: Any) -> Field:
    """A field from time (N, 1) to samples (N, channels), with the audio defaults (SIREN: omega0 3000 first)."""
    return make_field(name, 1, channels, **audio_field_options(name, options))


def peak_scale(samples: np.ndarray, normalize: str) -> float:
    """What the samples are divided by before fitting: their peak |x| ("peak", SIREN's official
    code) or 1 ("none"); 1 for a silent clip."""
    peak = float(np.abs(samples).max()) if normalize == "peak" else 0.0
    return peak if peak > 0 else 1.0


@dataclass
class FitAudioConfig(FitConfig):
    """Everything that defines an audio fit; written resolved to `config.json` in the run folder."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-audio",)

    source: str = "front-center"
    max_seconds: float | None = None  # crop the clip to its first S seconds
    batch_samples: int = 0  # 0: every sample in every step (SIREN's full batch)
    normalize: str = "peak"  # "peak": fit x / max|x| (SIREN's official code); "none": fit x as stored

    def validate(self) -> None:
        super().validate()
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise NfieldsError(f"--max-seconds must be positive, not {self.max_seconds}.")
        if self.batch_samples < 0:
            raise NfieldsError(f"--batch-samples must be 0 (all samples) or positive, not {self.batch_samples}.")
        if self.normalize not in NORMALIZATIONS:
            raise NfieldsError(f"unknown --normalize '{self.normalize}'; use {' or '.join(NORMALIZATIONS)}.")


class AudioObjective:
    """MSE between the field and the (peak-normalised) samples at their times."""

    def __init__(self, model: Field, signal: AudioSignal, scale: float, batch_samples: int,
                 device: torch.device, eval_chunk: int = 1 << 18):
        self.model = model
        self.scale = scale
        self.times = signal.coords()[:, 0].to(device)
        self.targets = signal.targets().to(device)
        self.train_values = self.targets / scale
        self.batch_samples = batch_samples if 0 < batch_samples < signal.length else 0
        self.eval_chunk = eval_chunk

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        times, values = self.times, self.train_values
        if self.batch_samples:
            index = torch.randint(len(times), (self.batch_samples,), device=times.device)
            times, values = times[index], values[index]
        mse = ((self.model(times[:, None]) - values) ** 2).mean()
        # The waveform PSNR on the file's scale (peak-to-peak 2), unclamped.
        return mse, {"psnr": mse_to_psnr(mse.detach() * self.scale ** 2 / 4.0)}

    def predict(self) -> torch.Tensor:
        """(N, C) samples on the file's scale, not clamped."""
        raw = render_samples(self.model, self.times, self.eval_chunk)
        return torch.from_numpy(raw).to(self.targets.device) * self.scale

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        prediction = self.predict()
        self.model.train(was_training)
        return {"psnr": waveform_psnr(prediction, self.targets), "snr": snr(prediction, self.targets)}


@dataclass
class FittedAudio:
    """A field fitted to a clip: a continuous function of time, playable at any sample rate."""

    field: Field
    length: int  # samples in the fitted clip
    rate: int  # its sample rate
    scale: float = 1.0  # the fitted values times `scale` are samples
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    def render(self, rate: float | None = None, chunk: int = 1 << 18) -> np.ndarray:
        """(M, C) samples in [-1, 1] at `rate` (default: the clip's) over the clip's time span."""
        times = resampled_axis(self.length, self.rate, rate or self.rate)
        return np.clip(render_samples(self.field, times, chunk) * self.scale, -1.0, 1.0)


# -- the Python entry point -------------------------------------------------------------------

def fit_audio(signal: AudioSignal, model: Field, config: FitAudioConfig | None = None,
              run_dir: Path | None = None, resume: bool = False, progress: bool = True,
              **overrides: Any) -> tuple[FittedAudio, Trainer]:
    """Fit `model` (time (N, 1) -> samples (N, C); see make_audio_field) to `signal`;
    `overrides` are FitAudioConfig fields (steps=1000, batch_samples=65536, ...).

    Without `run_dir` nothing is written; with it, checkpoints and TensorBoard events go there.
    """
    config = dataclasses.replace(config or FitAudioConfig(), **overrides)
    device = prepare(config)
    if model.in_features != 1 or model.out_features != signal.channels:
        raise NfieldsError(f"the field maps {model.in_features} -> {model.out_features} values but the clip needs "
                           f"1 -> {signal.channels}; make it with make_audio_field(name, {signal.channels}).")
    model = model.to(device)
    scale = peak_scale(signal.samples, config.normalize)
    objective = AudioObjective(model, signal, scale, config.batch_samples, device)
    trainer = train_field(objective, model, config, run_dir, resume, progress, f"{config.field} {signal.name}",
                          "pass --batch-samples (e.g. 65536) or a shorter --max-seconds")
    fitted = FittedAudio(model, signal.length, signal.rate, scale, final_metrics(trainer, objective))
    return fitted, trainer


# -- run folders --------------------------------------------------------------------------------

def run_fit_audio(config: FitAudioConfig, out: Path, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit audio` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    signal = load_audio(config.source, config.max_seconds)
    torch.manual_seed(config.seed)
    model = make_audio_field(config.field, signal.channels, **config.field_options)

    audio = {"rate": signal.rate, "samples": signal.length, "channels": signal.channels,
             "duration": signal.duration}
    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model, audio=audio)
        fitted, trainer = fit_audio(signal, model, config, run_dir=run_dir, resume=resume, progress=progress)

    reconstruction = fitted.render()
    metrics = {**fitted.metrics, "steps": trainer.step, "seconds": trainer.seconds,
               "params": parameter_count(model), "field": config.field, "device": str(device),
               "sample_rate": signal.rate, "duration": signal.duration, "channels": signal.channels,
               "scale": fitted.scale, "source": config.source, "history": trainer.history.evals}
    write_audio(reconstruction, signal.rate, out / "reconstruction.wav")
    title = (f"{config.field} on {signal.name}: PSNR {metrics['psnr']:.2f} dB, SNR {metrics['snr']:.2f} dB "
             f"after {trainer.step} steps")
    viz.save_audio_comparison(signal.samples, reconstruction, signal.rate, out / "comparison.png", title)
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png", title)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def load_fitted_audio(run_dir: str | Path, device: str = "auto") -> FittedAudio:
    """A fitted clip from a run folder (its newest checkpoint), playable at any sample rate."""
    from ..fields import field_from_spec
    from ..train.run import load_run_config, load_trained

    run_dir = Path(run_dir)
    model, data = load_trained(run_dir, lambda data: field_from_spec(data["field_spec"]), device)
    info = data["audio"]
    try:  # the value scale is known once the fit has finished ...
        scale = json.loads((run_dir / "metrics.json").read_text())["scale"]
    except (OSError, ValueError, KeyError, TypeError):  # ... or from the clip it was fitted to
        config = load_run_config(run_dir, FitAudioConfig)
        scale = peak_scale(load_audio(config.source, config.max_seconds).samples, config.normalize)
    return FittedAudio(model, int(info["samples"]), int(info["rate"]), float(scale))
