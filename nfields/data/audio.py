"""Audio clips as signals: load a file or a built-in, validate it, give time coordinates and samples.

Time is the coordinate: sample k of n sits at t = -1 + 2k/(n - 1), i.e. linspace(-1, 1, n) with
endpoints, as SIREN's official code does (`get_mgrid(len(data), 1)`). Files are decoded with
libsndfile (PyPI `soundfile`, imported only when a file is read): WAV, FLAC, OGG, MP3 and more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NfieldsError
from . import catalog

SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}


@dataclass
class AudioSignal:
    """A clip as a signal: samples (N, C) float32 as the file stores them (PCM scaled to [-1, 1))."""

    samples: np.ndarray
    rate: int
    name: str

    @property
    def length(self) -> int:
        return self.samples.shape[0]

    @property
    def channels(self) -> int:
        return self.samples.shape[1]

    @property
    def duration(self) -> float:
        return self.length / self.rate

    def coords(self) -> torch.Tensor:
        """(N, 1) times in [-1, 1], matching `targets()`."""
        return time_axis(torch.arange(self.length), self.length)[:, None]

    def targets(self) -> torch.Tensor:
        """(N, C) samples."""
        return torch.from_numpy(self.samples)

    def cropped(self, max_seconds: float | None) -> "AudioSignal":
        """The first `max_seconds` of the clip (all of it when shorter or None)."""
        if max_seconds is None or self.duration <= max_seconds:
            return self
        return AudioSignal(self.samples[:max(1, round(max_seconds * self.rate))], self.rate, self.name)


def time_axis(positions: torch.Tensor, length: int) -> torch.Tensor:
    """Times in [-1, 1] of `positions` in sample units of a `length`-sample clip (0 = first sample)."""
    return (-1.0 + 2.0 * positions.double() / max(length - 1, 1)).float()


def resampled_axis(length: int, rate: float, new_rate: float) -> torch.Tensor:
    """Times of the samples at `new_rate` that cover the clip (first to last sample), in [-1, 1]."""
    if not new_rate > 0:
        raise NfieldsError(f"the sample rate must be positive, not {new_rate}.")
    count = int(np.floor((length - 1) * new_rate / rate + 1e-9)) + 1
    return time_axis(torch.arange(count, dtype=torch.float64) * (rate / new_rate), length)


def resolve_source(source: str | os.PathLike) -> tuple[Path, str]:
    """A path or a built-in audio name -> (file path, display name)."""
    return catalog.resolve(source, "audio", SUFFIXES)


def load_audio(source: str | os.PathLike, max_seconds: float | None = None) -> AudioSignal:
    """Load WAV, FLAC, OGG, MP3 (mono, stereo, any rate; 8-32-bit PCM or float) or a built-in name."""
    import soundfile

    path, name = resolve_source(source)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise NfieldsError(f"'{path}' is not an audio file that can be read (WAV, FLAC, OGG, MP3) "
                           f"({str(error).splitlines()[0]}).") from None
    if samples.size == 0:
        raise NfieldsError(f"'{path}' holds no audio samples; give a clip that is not empty.")
    if not np.isfinite(samples).all():
        raise NfieldsError(f"'{path}' contains NaN or infinite samples; clean the file first.")
    return AudioSignal(np.ascontiguousarray(samples), int(rate), name).cropped(max_seconds)


def write_audio(samples: np.ndarray, rate: int, path: str | os.PathLike) -> None:
    """Write (N, C) samples in [-1, 1] as 16-bit PCM (format from the suffix), atomically."""
    import soundfile

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), int(rate), subtype="PCM_16")
