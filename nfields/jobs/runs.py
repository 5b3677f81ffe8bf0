"""Run folders by kind: which command made a folder (`short_kind`), and
what `nfields render` makes of the kinds that have no output module of their own (audio, video, shape).

The kind is the run manifest's (`nfields.train.manifest`), without its verb.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NfieldsError
from ..memory import check_memory
from ..train.manifest import run_kind

#: Every short kind of run folder (`short_kind`) and the command that makes it.
COMMANDS = {"image": "fit image", "images": "fit images", "audio": "fit audio", "video": "fit video",
         "shape": "fit shape", "scene": "fit scene", "ginr": "train ginr", "diffusion": "train diffusion",
         "inr-gan": "train inr-gan"}
#: Kinds whose run holds one field of the fields registry (`nfields export --bits` quantises it).
SINGLE_FIELD_KINDS = ("image", "audio", "video", "shape")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
#: Peak host bytes per output value (float32 samples, their clipped copy, 16-bit PCM and the encoder's buffer).
AUDIO_BYTES_PER_VALUE = 16
#: Peak host bytes per value of one video frame or image (float32 output, its clipped and rounded copies,
#: uint8 and the encoder's copy).
PICTURE_BYTES_PER_VALUE = 20
#: Peak host bytes per grid point of marching cubes (the float32 grid and scikit-image's working arrays).
MESH_BYTES_PER_POINT = 24


def short_kind(run_dir: str | os.PathLike) -> str:
    """The kind of run in `run_dir` without its verb (a key of COMMANDS: 'image', 'audio', 'ginr', ...), from the
    run's manifest (`nfields.train.manifest.run_kind` decides it); NfieldsError if it is not a run folder."""
    kind = run_kind(run_dir).split("-", 1)[1]
    return "ginr" if kind == "mnif" else kind  # mNIF stage 1 is a 'train ginr' method


def made_by(kind: str) -> str:
    """'an audio run ('nfields fit audio')' and the like, for messages."""
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind} run ('nfields {COMMANDS[kind]}')"


def _check_suffix(out: Path, suffixes: tuple[str, ...], what: str) -> None:
    if out.suffix.lower() not in suffixes:
        raise NfieldsError(f"{what} is written as {', '.join(s[1:].upper() for s in suffixes)}; give --out a "
                           f"{' or '.join(suffixes)} name, not '{out.name}'.")


# -- audio ---------------------------------------------------------------------------------------------

def render_audio_run(run_dir: str | os.PathLike, out: str | os.PathLike, rate: float | None = None,
                     device: str = "auto", chunk: int = 1 << 18) -> dict[str, Any]:
    """`nfields render` on an audio run: the clip at any sample rate (default the clip's), as WAV, FLAC or OGG."""
    from ..data.audio import write_audio
    from .fit_audio import load_fitted_audio

    out = Path(out)
    _check_suffix(out, AUDIO_SUFFIXES, "audio")
    if rate is not None and not (np.isfinite(rate) and 1 <= rate < 2 ** 31):
        raise NfieldsError(f"--rate must be a sample rate in Hz from 1 to 2^31, not {rate}.")
    fitted = load_fitted_audio(run_dir, device)
    rate = rate or fitted.rate
    count = int(np.floor((fitted.length - 1) * rate / fitted.rate + 1e-9)) + 1  # as resampled_axis
    check_memory(count * fitted.field.out_features * AUDIO_BYTES_PER_VALUE, f"{count:,} samples at {rate:g} Hz",
                 "choose a lower --rate")
    samples = fitted.render(rate, chunk)
    try:
        write_audio(samples, round(rate), out)
    except (RuntimeError, ValueError, OSError) as error:
        raise NfieldsError(f"cannot write '{out}' ({error}); use a .wav name and a common sample rate.") from None
    return {"file": str(out), "rate": round(rate), "samples": len(samples), "channels": samples.shape[1],
            "seconds": len(samples) / round(rate)}


# -- video ---------------------------------------------------------------------------------------------

def render_video_run(run_dir: str | os.PathLike, out: str | os.PathLike, size: tuple[int, int] | None = None,
                     scale: float | None = None, fps: float | None = None, frame: float | None = None,
                     device: str = "auto", chunk: int = 1 << 18) -> dict[str, Any]:
    """`nfields render` on a video run: the whole clip as MP4 at any size (`size` (H, W) or `scale`) and frame
    rate `fps` (the clip's duration kept), or the one frame at time `frame` (in frames, 2.5: halfway between
    frames 2 and 3) as an image."""
    from .. import viz
    from ..data.video import write_video
    from .fit_video import load_fitted_video

    out = Path(out)
    if frame is None and out.suffix.lower() in FRAME_SUFFIXES:
        raise NfieldsError(f"'{out.name}' is an image name; give --frame T for one frame of the video, or a .mp4 "
                           f"name for all of it.")
    if frame is None:
        _check_suffix(out, (".mp4",), "a video")
    else:
        _check_suffix(out, FRAME_SUFFIXES, "one frame (--frame)")
        if fps is not None:
            raise NfieldsError("--fps is for the whole video; --frame renders one frame as an image.")
        if not np.isfinite(frame):
            raise NfieldsError(f"--frame must be a finite time in frames, not {frame}.")
    if fps is not None and not (np.isfinite(fps) and 0 < fps <= 1000):
        raise NfieldsError(f"--fps must be a frame rate above 0 and at most 1000, not {fps}.")
    if size is not None and min(size) <= 0:
        raise NfieldsError(f"--size takes two positive integers H W, not {' '.join(map(str, size))}.")
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise NfieldsError(f"--scale must be positive (and finite), not {scale}.")
    fitted = load_fitted_video(run_dir, device)
    if size is None:
        factor = scale or 1.0
        size = (max(1, round(fitted.height * factor)), max(1, round(fitted.width * factor)))
    height, width = size
    channels = fitted.field.out_features
    check_memory(height * width * channels * PICTURE_BYTES_PER_VALUE, f"a {width}x{height} frame",
                 "choose a smaller --size or --scale")
    if frame is not None:
        picture = next(fitted.iter_render([frame], (height, width), chunk))
        _save_picture(picture, out)
        return {"file": str(out), "frames": 1, "height": height, "width": width, "fps": fitted.fps}
    fps = fps or fitted.fps
    count = max(1, round(fitted.num_frames * fps / fitted.fps))

    def frames():
        for picture in fitted.iter_render(count, (height, width), chunk):
            picture = viz.to_uint8(picture)
            yield np.repeat(picture[..., None], 3, -1) if picture.ndim == 2 else picture[..., :3]

    write_video(frames(), out, fps)
    return {"file": str(out), "frames": count, "height": height, "width": width, "fps": fps}


def _save_picture(picture: np.ndarray, out: Path) -> None:
    from .. import viz

    try:
        viz.save_image(picture, out)
    except (KeyError, ValueError, OSError) as error:
        raise NfieldsError(f"cannot write '{out}' ({error}); use a .png, .jpg or .tif name.") from None


# -- shape ---------------------------------------------------------------------------------------------

def render_shape_run(run_dir: str | os.PathLike, out: str | os.PathLike, resolution: int | None = None,
                     device: str = "auto") -> dict[str, Any]:
    """`nfields render` (and `export --mesh`) on a shape run: the level-0 surface by marching cubes on a
    `resolution`^3 grid (default the run's), as PLY."""
    from ..render.mesh import write_ply
    from ..train.run import load_run_config
    from .fit_shape import FitShapeConfig, load_fitted_shape

    out = Path(out)
    _check_suffix(out, (".ply",), "a mesh")
    resolution = resolution or load_run_config(run_dir, FitShapeConfig).resolution
    if resolution < 8:
        raise NfieldsError(f"--resolution must be at least 8 grid points per side, not {resolution}.")
    check_memory(resolution ** 3 * MESH_BYTES_PER_POINT, f"marching cubes on a {resolution}^3 grid",
                 "choose a smaller --resolution")
    fitted = load_fitted_shape(run_dir, device)
    vertices, faces = fitted.extract_mesh(resolution)
    if len(faces) == 0:
        raise NfieldsError(f"the field has no surface (its values never cross 0 on the {resolution}^3 grid); "
                           f"fit the shape for more steps.")
    write_ply(out, vertices, faces)
    return {"file": str(out), "vertices": len(vertices), "faces": len(faces), "resolution": resolution}


__all__ = ["COMMANDS", "SINGLE_FIELD_KINDS", "short_kind", "made_by", "render_audio_run", "render_video_run",
           "render_shape_run"]
