"""Fit one video with one field (t, y, x) -> RGB: the objective, the Python entry point, and the
run folder (reconstruction.mp4, frames.png, curve.png, metrics.json with per-frame PSNR)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .. import viz
from ..data.grid import CONVENTIONS, axis, region_axis
from ..data.image import target_size
from ..data.video import VideoSignal, frame_times, load_video, video_coords, write_video
from ..errors import NfieldsError
from ..fields import Field, make_field, parameter_count
from ..io import write_bytes_atomic, write_json_atomic
from ..metrics import mse_to_psnr, psnr, ssim
from ..render import render_image
from ..train import Trainer
from ..train.run import open_run_dir
from .common import FitConfig, final_metrics, prepare, start_run, train_field, write_run_config
from .image_objectives import decode_values, encode_values


@dataclass
class FitVideoConfig(FitConfig):
    """Everything that defines a video fit; written resolved to `config.json` in the run folder."""

    kinds: ClassVar[tuple[str, ...]] = ("fit-video",)

    source: str = "bikes"
    frames: int | None = None  # the first N frames; None: all
    size: list[int] | None = None
    coords: str = "centers"  # or "endpoints": linspace(-1, 1) on t, y and x (SIREN's get_mgrid)
    # Our default: SIREN's video experiments sampled a random subset of pixels per step; 2^16 keeps
    # a 3 x 256 SIREN step at a few ms on a GPU and memory independent of the video's length.
    batch_pixels: int = 65536  # 0: every pixel of every frame in every step

    def validate(self) -> None:
        super().validate()
        if self.frames is not None and self.frames <= 0:
            raise NfieldsError(f"--frames must be a positive number of frames, not {self.frames}.")
        if self.size is not None and (len(self.size) not in (1, 2) or any(s <= 0 for s in self.size)):
            raise NfieldsError(f"--size takes one or two positive integers, not {self.size}.")
        if self.coords not in CONVENTIONS:
            raise NfieldsError(f"unknown coordinate convention '{self.coords}'; use {' or '.join(CONVENTIONS)}.")
        if self.batch_pixels < 0:
            raise NfieldsError(f"--batch-pixels must be 0 (all pixels) or positive, not {self.batch_pixels}.")


class VideoObjective:
    """MSE on a random batch of pixels drawn across all frames, values in the field's [-1, 1].

    The frames stay uint8 on the device; a batch is gathered and converted to float per step.
    """

    def __init__(self, model: Field, signal: VideoSignal, convention: str, batch_pixels: int,
                 device: torch.device, eval_chunk: int = 1 << 18):
        self.model = model
        self.signal = signal
        self.convention = convention
        self.frames = torch.from_numpy(signal.frames).to(device)  # (T, H, W, C) uint8
        self.times = signal.time_axis(convention, device)
        self.ys, self.xs = axis(signal.height, convention, device), axis(signal.width, convention, device)
        total = self.frames[..., 0].numel()
        self.batch_pixels = batch_pixels if 0 < batch_pixels < total else 0
        self.eval_chunk = eval_chunk
        self.psnr_per_frame: list[float] = []
        self.ssim_per_frame: list[float] = []

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, 3), values (B, C) in [-1, 1]) of a random batch, or of every pixel."""
        t_, h, w, c = self.frames.shape
        values = self.frames.view(-1, c)
        if not self.batch_pixels:
            coords = video_coords(self.times, h, w, self.convention).view(-1, 3)
            return coords, encode_values(values.float() / 255.0)
        index = torch.randint(t_ * h * w, (self.batch_pixels,), device=values.device)
        t, rest = index // (h * w), index % (h * w)
        coords = torch.stack([self.times[t], self.ys[rest // w], self.xs[rest % w]], dim=-1)
        return coords, encode_values(values[index].float() / 255.0)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        coords, values = self.batch()
        mse = ((self.model(coords) - values) ** 2).mean()
        return mse, {"psnr": mse_to_psnr(mse.detach() / 4.0)}  # /4: [-1, 1] MSE -> [0, 1] MSE

    @torch.no_grad()
    def predict_frame(self, index: int) -> torch.Tensor:
        """(H, W, C) values in [0, 1] of frame `index`, not clamped."""
        coords = video_coords(self.times[index:index + 1], self.signal.height, self.signal.width,
                              self.convention).view(-1, 3)
        parts = [self.model(coords[i:i + self.eval_chunk]) for i in range(0, len(coords), self.eval_chunk)]
        return decode_values(torch.cat(parts)).view(self.signal.height, self.signal.width, -1)

    def evaluate(self) -> dict[str, float]:
        """PSNR and SSIM of every frame (clamped to [0, 1]), averaged over frames."""
        was_training = self.model.training
        self.model.eval()
        self.psnr_per_frame, self.ssim_per_frame = [], []
        for i in range(self.signal.num_frames):
            prediction, target = self.predict_frame(i), self.frames[i].float() / 255.0
            self.psnr_per_frame.append(psnr(prediction, target))
            self.ssim_per_frame.append(ssim(prediction, target))
        self.model.train(was_training)
        return {"psnr": float(np.mean(self.psnr_per_frame)), "psnr_min": float(np.min(self.psnr_per_frame)),
                "ssim": float(np.mean(self.ssim_per_frame))}


class _AtTime(nn.Module):
    """A video field seen as an image field at one time: (..., 2) -> field((t, y, x))."""

    def __init__(self, field: Field, time: torch.Tensor):
        super().__init__()
        self.field = field
        self.time = time
        self.out_features = field.out_features

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.field(torch.cat([self.time.to(coords).expand(*coords.shape[:-1], 1), coords], dim=-1))


@dataclass
class FittedVideo:
    """A field fitted to a video, renderable at any time (between frames too) and any size."""

    field: Field
    num_frames: int
    height: int
    width: int
    fps: float = 25.0
    convention: str = "centers"
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    def times(self, frames: int | Sequence[float] | None = None) -> torch.Tensor:
        """Time coordinates: None -> the fitted frames; n -> n frames evenly over the same span
        (2 * num_frames: twice the frame rate); a sequence -> those times in frame units (0.5:
        halfway between the first two frames)."""
        if frames is None:
            frames = self.num_frames
        if isinstance(frames, (int, np.integer)):
            if frames <= 0:
                raise NfieldsError(f"the number of frames to render must be positive, not {frames}.")
            return region_axis(0, self.num_frames, int(frames), self.num_frames, self.convention)
        return frame_times(list(frames), self.num_frames, self.convention)

    def iter_render(self, frames: int | Sequence[float] | None = None, size: Sequence[int] | None = None,
                    chunk: int = 1 << 18) -> Iterator[np.ndarray]:
        """The frames one by one, each (H, W, C) in [0, 1]; `size` is S (longer side) or (H, W)."""
        height, width = target_size(self.height, self.width, tuple(size)) if size else (self.height, self.width)
        for t in self.times(frames):
            raw = render_image(_AtTime(self.field, t), height, width, (self.height, self.width), self.convention,
                               chunk=chunk)
            yield np.clip(decode_values(raw), 0, 1)

    def render(self, frames: int | Sequence[float] | None = None, size: Sequence[int] | None = None,
               chunk: int = 1 << 18) -> np.ndarray:
        """(frames, H, W, C) values in [0, 1]; see `times` and `iter_render`."""
        return np.stack(list(self.iter_render(frames, size, chunk)))


# -- the Python entry point -------------------------------------------------------------------

def fit_video(signal: VideoSignal, model: Field, config: FitVideoConfig | None = None,
              run_dir: Path | None = None, resume: bool = False, progress: bool = True,
              **overrides: Any) -> tuple[FittedVideo, Trainer]:
    """Fit `model` ((t, y, x) -> C) to `signal`; `overrides` are FitVideoConfig fields (steps=500, ...).

    Without `run_dir` nothing is written; with it, checkpoints and TensorBoard events go there.
    `fitted.metrics` has `psnr` (mean over frames), `psnr_per_frame`, `ssim` of the final step.
    """
    config = dataclasses.replace(config or FitVideoConfig(), **overrides)
    device = prepare(config)
    model = model.to(device)
    objective = VideoObjective(model, signal, config.coords, config.batch_pixels, device)
    trainer = train_field(objective, model, config, run_dir, resume, progress, f"{config.field} {signal.name}",
                          "pass a smaller --batch-pixels (e.g. 16384)")
    metrics: dict[str, Any] = final_metrics(trainer, objective)
    if not objective.psnr_per_frame:  # resumed at the final step: nothing was evaluated in this process
        metrics = objective.evaluate()
    metrics["psnr_per_frame"] = [round(p, 4) for p in objective.psnr_per_frame]
    fitted = FittedVideo(model, signal.num_frames, signal.height, signal.width, signal.fps, config.coords, metrics)
    return fitted, trainer


# -- run folders --------------------------------------------------------------------------------

def save_frames_picture(target: VideoSignal, frames: list[int], reconstructed: list[np.ndarray],
                        path: Path, title: str) -> None:
    """A grid: one column per frame; rows target, reconstruction, |error| (mean over channels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(frames)
    aspect = target.width / target.height
    fig, axes = plt.subplots(3, columns, figsize=(2.6 * aspect * columns + 1, 8.2), squeeze=False,
                             constrained_layout=True)
    errors = [np.abs(r - target.frame(i)).mean(-1) for i, r in zip(frames, reconstructed)]
    top = max(max(float(e.max()) for e in errors), 1e-3)
    for col, (i, recon, error) in enumerate(zip(frames, reconstructed, errors)):
        axes[0, col].imshow(target.frame(i), interpolation="nearest")
        axes[0, col].set_title(f"frame {i}")
        axes[1, col].imshow(recon, interpolation="nearest")
        shown = axes[2, col].imshow(error, cmap="inferno", vmin=0, vmax=top)
    for row, name in enumerate(("target", "reconstruction", "|error|")):
        axes[row, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    fig.suptitle(title)
    write_bytes_atomic(path, viz.figure_bytes(fig))


def picture_frames(num_frames: int, count: int = 4) -> list[int]:
    """`count` frames spread evenly from the first to the last."""
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


def run_fit_video(config: FitVideoConfig, out: Path, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """The `nfields fit video` job: validate, fit, and fill the run folder. Returns metrics."""
    out = Path(out)
    config = start_run(config, out, resume, overwrite, explicit)
    device = prepare(config)
    signal = load_video(config.source, config.frames, config.size)
    torch.manual_seed(config.seed)
    model = make_field(config.field, 3, signal.channels, **config.field_options)

    with open_run_dir(out, resume, overwrite) as run_dir:
        write_run_config(run_dir, config, device, model,
                         video={"frames": signal.num_frames, "height": signal.height, "width": signal.width,
                                "channels": signal.channels, "fps": signal.fps})
        fitted, trainer = fit_video(signal, model, config, run_dir=run_dir, resume=resume, progress=progress)

    shown = picture_frames(signal.num_frames)
    kept: dict[int, np.ndarray] = {}

    def frames_uint8() -> Iterator[np.ndarray]:
        for i, frame in enumerate(fitted.iter_render()):
            if i in shown:
                kept[i] = frame
            yield viz.to_uint8(frame)

    write_video(frames_uint8(), out / "reconstruction.mp4", signal.fps)
    metrics = {**fitted.metrics, "steps": trainer.step, "seconds": trainer.seconds,
               "params": parameter_count(model), "field": config.field, "device": str(device),
               "frames": signal.num_frames, "size": [signal.height, signal.width], "fps": signal.fps,
               "video": f"{signal.num_frames}x{signal.width}x{signal.height}", "source": config.source,
               "batch_pixels": config.batch_pixels, "history": trainer.history.evals}
    title = f"{config.field} on {signal.name}: {metrics['psnr']:.2f} dB (mean over frames) after {trainer.step} steps"
    save_frames_picture(signal, shown, [kept[i] for i in shown], out / "frames.png", title)
    viz.save_curve(trainer.history.train, trainer.history.evals, out / "curve.png", title)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def load_fitted_video(run_dir: str | Path, device: str = "auto") -> FittedVideo:
    """A fitted video from a run folder (its newest checkpoint), renderable at any time and size."""
    from ..fields import field_from_spec
    from ..train.run import load_run_config, load_trained

    model, data = load_trained(run_dir, lambda data: field_from_spec(data["field_spec"]), device)
    info = data["video"]
    convention = load_run_config(run_dir, FitVideoConfig).coords
    return FittedVideo(model, int(info["frames"]), int(info["height"]), int(info["width"]), float(info["fps"]),
                       convention)
