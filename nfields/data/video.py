"""Videos as signals: decode a file (PyAV) or a built-in, keep the frames as uint8, give
(t, y, x) coordinates. Times follow the pixel convention of `grid.py` over frames: with
"centers", frame i of T sits at (2i + 1)/T - 1.

PyAV is imported inside the functions that decode or encode, so a signal made from arrays
(e.g. a benchmark's .npz) needs only numpy and torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import NfieldsError
from ..memory import available_memory
from . import catalog
from .grid import axis, edges_to_coords, pixel_grid
from .image import resize, target_size

SUFFIXES = {".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
DEFAULT_FPS = 25.0  # when a file does not say (some GIFs)


@dataclass
class VideoSignal:
    """A video as a signal: frames (T, H, W, C) uint8 (C = 3, RGB), shown at `fps` frames per second."""

    frames: np.ndarray
    name: str
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise NfieldsError(f"video frames must be a uint8 array (T, H, W, C), not {self.frames.dtype} "
                               f"{self.frames.shape}.")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def channels(self) -> int:
        return self.frames.shape[3]

    def frame(self, index: int) -> np.ndarray:
        """(H, W, C) float32 values in [0, 1] of one frame."""
        return self.frames[index].astype(np.float32) / 255.0

    def time_axis(self, convention: str = "centers", device=None) -> torch.Tensor:
        """(T,) time coordinates of the frames."""
        return axis(self.num_frames, convention, device)

    def resized(self, size: Sequence[int] | None) -> "VideoSignal":
        if size is None:
            return self
        height, width = target_size(self.height, self.width, tuple(size))
        if (height, width) == (self.height, self.width):
            return self
        frames = np.stack([resize_frame(f, height, width) for f in self.frames])
        return VideoSignal(frames, self.name, self.fps)


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """One uint8 frame resized as an 8-bit image (see image.resize), back to uint8 exactly."""
    return np.round(resize(frame.astype(np.float32) / 255.0, height, width) * 255.0).astype(np.uint8)


def frame_times(times: Sequence[float] | torch.Tensor, num_frames: int, convention: str = "centers",
                device=None) -> torch.Tensor:
    """Times in frame units (0 = the first frame, 1 = the second, 0.5 halfway; any real) -> coordinates."""
    u = torch.as_tensor(times, dtype=torch.float64, device=device) + 0.5  # frame units -> edge units
    return edges_to_coords(u, num_frames, convention)


def video_coords(times: torch.Tensor, height: int, width: int, convention: str = "centers") -> torch.Tensor:
    """(len(times), H, W, 3) coordinates (t, y, x) of every pixel of the frames at `times` (coordinates)."""
    grid = pixel_grid(height, width, convention, times.device)
    t = times.view(-1, 1, 1, 1).expand(-1, height, width, 1)
    return torch.cat([t, grid.expand(len(times), -1, -1, -1)], dim=-1)


# -- files --------------------------------------------------------------------------------------

def resolve_source(source: str | os.PathLike) -> tuple[Path, str]:
    """A path or a built-in video name -> (file path, display name)."""
    return catalog.resolve(source, "video", SUFFIXES)


def load_video(source: str | os.PathLike, frames: int | None = None,
               size: Sequence[int] | None = None) -> VideoSignal:
    """Decode MP4, AVI, MOV, GIF, ... (anything FFmpeg reads, via PyAV) or a built-in name, as RGB.

    `frames`: keep at most the first N frames; `size`: S (longer side) or (H, W), as for images.
    """
    if frames is not None and frames <= 0:
        raise NfieldsError(f"--frames must be a positive number of frames, not {frames}.")
    if size is not None and (len(size) not in (1, 2) or any(s <= 0 for s in size)):
        raise NfieldsError(f"--size takes one or two positive integers, not {list(size)}.")
    path, name = resolve_source(source)
    decoded, fps = _decode(path, frames, size)
    return VideoSignal(decoded, name, fps)


def _decode(path: Path, limit: int | None, size: Sequence[int] | None) -> tuple[np.ndarray, float]:
    import av

    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NfieldsError(f"'{path}' has no video stream; give a video file (MP4, AVI, MOV, GIF).")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            expected = min(stream.frames or limit or 0, limit or stream.frames)  # 0: the file does not say
            for frame in container.decode(stream):
                array = frame.to_ndarray(format="rgb24")
                if size is not None:
                    array = resize_frame(array, *target_size(array.shape[0], array.shape[1], tuple(size)))
                if not out:
                    _check_fits_in_memory(path, array.nbytes, expected)
                out.append(array)
                if len(out) == limit:
                    break
    except av.FFmpegError as error:
        reason = error.strerror or str(error)
        if not out:
            raise NfieldsError(f"'{path}' is not a video that can be decoded ({reason}); "
                               f"give an MP4, AVI, MOV or GIF file.") from None
        raise NfieldsError(f"'{path}' is damaged after frame {len(out)} ({reason}); pass --frames {len(out)} to "
                           f"fit the frames before it.") from None
    if not out:
        raise NfieldsError(f"'{path}' holds no decodable video frames; the file may be truncated or damaged.")
    if len(out) < expected:
        raise NfieldsError(f"'{path}' should hold {expected} frames but only {len(out)} could be decoded; the file "
                           f"is truncated or damaged (pass --frames {len(out)} to fit those).")
    return np.stack(out), fps


def _check_fits_in_memory(path: Path, frame_bytes: int, frames: int) -> None:
    if frames and frame_bytes * frames > 0.8 * available_memory():
        raise NfieldsError(f"'{path}' needs {frame_bytes * frames / 2**30:.1f} GiB as decoded frames, more than "
                           f"this machine has; pass --frames N or a smaller --size.")


def encoder_name() -> str:
    """The H.264 encoder when this PyAV build has one, else MPEG-4 part 2."""
    import av

    for name in ("libx264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises several types for a missing encoder
            continue
    raise NfieldsError("this PyAV build has no H.264 or MPEG-4 encoder; install PyAV from PyPI ('pip install av').")


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> None:
    """Encode (H, W, 3) uint8 frames as an MP4 at `path`, atomically (temporary file, then rename).

    Odd sizes are padded by one repeated row/column: 4:2:0 video needs even sizes.
    """
    import av

    from ..io import atomic_path

    codec = encoder_name()
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = None
            for frame in frames:
                h, w = frame.shape[:2]
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "16"}  # near-transparent: the picture shows the field's errors
                    else:
                        stream.bit_rate = max(2_000_000, 12 * frame.shape[0] * frame.shape[1])
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise NfieldsError("there are no frames to write.")
            for packet in stream.encode():
                container.mux(packet)
