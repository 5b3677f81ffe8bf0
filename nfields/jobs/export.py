"""Compression: a fitted field's weights quantised to 16 or 8 bits, in one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.image import load_image
from ..errors import NfieldsError
from ..fields import Field, field_from_spec
from ..io import atomic_path
from ..metrics import psnr
from ..train.run import load_run_config
from .fit_image import FittedImage, load_config, load_fitted


def quantize(state: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    """16 bits: IEEE half floats. 8 bits: per-tensor affine uint8 (min and step kept in fp32)."""
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().float().cpu()
        if bits == 16:
            out[name] = tensor.half()
        else:
            low, high = tensor.min(), tensor.max()
            step = (high - low) / 255 if high > low else torch.tensor(1.0)
            out[f"{name}.q"] = torch.round((tensor - low) / step).to(torch.uint8)
            out[f"{name}.min"] = low.reshape(1)
            out[f"{name}.step"] = step.reshape(1)
    return out


def dequantize(tensors: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    if bits == 16:
        return {k: v.float() for k, v in tensors.items()}
    names = [k[:-2] for k in tensors if k.endswith(".q")]
    return {n: tensors[f"{n}.q"].float() * tensors[f"{n}.step"] + tensors[f"{n}.min"] for n in names}


#: Grid points per side on which a quantised shape field is compared with the full-precision one.
SHAPE_CHECK_GRID = 64


def export_run(run_dir: str | Path, bits: int, out: str | Path) -> dict:
    """Write the quantised field of an image, audio, video or shape run to `out`; report its size and its
    quality after quantisation (PSNR against the fitted signal; for shapes, the largest change of the
    field's values on a grid)."""
    from .runs import SINGLE_FIELD_KINDS, made_by, short_kind

    if bits not in (16, 8):
        raise NfieldsError(f"--bits must be 16 or 8, not {bits}.")
    out = Path(out)
    if not out.parent.exists():
        raise NfieldsError(f"folder '{out.parent}' does not exist; create it or choose another --out.")
    if out.suffix.lower() != ".safetensors":
        raise NfieldsError(f"an exported field is a safetensors file; give --out a .safetensors name, not '{out.name}'.")
    run_dir = Path(run_dir)
    kind = short_kind(run_dir)
    if kind not in SINGLE_FIELD_KINDS:
        raise NfieldsError(f"'{run_dir}' is {made_by(kind)}; --bits quantises the one field of an image, audio, "
                           f"video or shape run.")
    fitted, signal = _load_single_field(run_dir, kind)
    quantized = quantize(fitted.field.state_dict(), bits)
    metadata = {"format": "nfields-quantized-field", "bits": str(bits), "kind": kind,
                "field_spec": json.dumps(fitted.field.spec()), kind: json.dumps(signal)}
    try:
        with atomic_path(out) as tmp:
            save_file(quantized, str(tmp), metadata=metadata)
    except OSError as error:
        raise NfieldsError(f"cannot write '{out}' ({error.strerror}); choose another --out.") from None

    restored = load_exported(out)
    report = {"file": str(out), "kind": kind, "bits": bits, "bytes": out.stat().st_size}
    report.update(_quality(kind, run_dir, fitted, restored, report["bytes"]))
    return report


def _load_single_field(run_dir: Path, kind: str):
    """(the fitted signal object, what load_exported needs to rebuild it) of a single-field run."""
    if kind == "image":
        fitted = load_fitted(run_dir, device="cpu")
        return fitted, {"height": fitted.height, "width": fitted.width, "coords": fitted.convention}
    if kind == "audio":
        from .fit_audio import load_fitted_audio

        fitted = load_fitted_audio(run_dir, device="cpu")
        return fitted, {"length": fitted.length, "rate": fitted.rate, "scale": fitted.scale}
    if kind == "video":
        from .fit_video import load_fitted_video

        fitted = load_fitted_video(run_dir, device="cpu")
        return fitted, {"frames": fitted.num_frames, "height": fitted.height, "width": fitted.width,
                        "fps": fitted.fps, "coords": fitted.convention}
    from .fit_shape import load_fitted_shape

    fitted = load_fitted_shape(run_dir, device="cpu")
    return fitted, {"mode": fitted.mode}


def _quality(kind: str, run_dir: Path, fitted, restored, size: int) -> dict:
    if kind == "image":
        config = load_config(run_dir)
        target = load_image(config.source, tuple(config.size) if config.size else None)
        return {"bits_per_pixel": 8 * size / (fitted.height * fitted.width),
                "psnr": psnr(torch.from_numpy(restored.render()), torch.from_numpy(target.values)),
                "psnr_before": psnr(torch.from_numpy(fitted.render()), torch.from_numpy(target.values))}
    if kind == "audio":
        from ..data.audio import load_audio
        from ..metrics import waveform_psnr
        from .fit_audio import FitAudioConfig

        config = load_run_config(run_dir, FitAudioConfig)
        target = torch.from_numpy(load_audio(config.source, config.max_seconds).samples)
        return {"psnr": waveform_psnr(torch.from_numpy(restored.render()), target),
                "psnr_before": waveform_psnr(torch.from_numpy(fitted.render()), target)}
    if kind == "video":
        from ..data.video import load_video
        from .fit_video import FitVideoConfig

        config = load_run_config(run_dir, FitVideoConfig)
        video = load_video(config.source, config.frames, config.size)
        targets = [torch.from_numpy(video.frame(i)) for i in range(video.num_frames)]

        def mean_psnr(frames) -> float:
            return float(np.mean([psnr(torch.from_numpy(f), t) for f, t in zip(frames, targets)]))

        return {"bits_per_pixel": 8 * size / (fitted.num_frames * fitted.height * fitted.width),
                "psnr": mean_psnr(restored.iter_render()), "psnr_before": mean_psnr(fitted.iter_render())}
    from ..render.mesh import evaluate_grid

    change = np.abs(evaluate_grid(restored.field, SHAPE_CHECK_GRID) - evaluate_grid(fitted.field, SHAPE_CHECK_GRID))
    return {"max_change": float(change.max()), "grid": SHAPE_CHECK_GRID}


def load_exported(path: str | Path):
    """The fitted signal (FittedImage, FittedAudio, FittedVideo or FittedShape) of a file written by
    `export_run`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise NfieldsError(f"'{path}' is not a readable exported field ({error}).") from None
    if metadata.get("format") != "nfields-quantized-field":
        raise NfieldsError(f"'{path}' was not written by 'nfields export'.")
    kind = metadata.get("kind", "image")
    try:
        model: Field = field_from_spec(json.loads(metadata["field_spec"]))
        model.load_state_dict(dequantize(tensors, int(metadata["bits"])))
        info = json.loads(metadata[kind])
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise NfieldsError(f"'{path}' is a damaged exported field ({type(error).__name__}); export it again.") from None
    model.eval()
    if kind == "audio":
        from .fit_audio import FittedAudio

        return FittedAudio(model, info["length"], info["rate"], info["scale"])
    if kind == "video":
        from .fit_video import FittedVideo

        return FittedVideo(model, info["frames"], info["height"], info["width"], info["fps"], info["coords"])
    if kind == "shape":
        from .fit_shape import FittedShape

        return FittedShape(model, info["mode"])
    return FittedImage(model, info["height"], info["width"], info["coords"])


__all__ = ["export_run", "load_exported", "quantize", "dequantize"]
