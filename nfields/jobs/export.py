"""Compression: a fitted field's weights quantised to 16 or 8 bits, in one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.image import load_image
from ..errors import NfieldsError
from ..fields import Field, field_from_spec
from ..io import atomic_path
from ..metrics import psnr
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


def export_run(run_dir: str | Path, bits: int, out: str | Path) -> dict:
    """Write the quantised field to `out`; report its size and its PSNR after quantisation."""
    if bits not in (16, 8):
        raise NfieldsError(f"--bits must be 16 or 8, not {bits}.")
    out = Path(out)
    if not out.parent.exists():
        raise NfieldsError(f"folder '{out.parent}' does not exist; create it or choose another --out.")
    fitted = load_fitted(run_dir, device="cpu")
    config = load_config(Path(run_dir))
    quantized = quantize(fitted.field.state_dict(), bits)
    metadata = {"format": "nfields-quantized-field", "bits": str(bits),
                "field_spec": json.dumps(fitted.field.spec()),
                "image": json.dumps({"height": fitted.height, "width": fitted.width, "coords": fitted.convention})}
    try:
        with atomic_path(out) as tmp:
            save_file(quantized, str(tmp), metadata=metadata)
    except OSError as error:
        raise NfieldsError(f"cannot write '{out}' ({error.strerror}); choose another --out.") from None

    restored = load_exported(out)
    target = load_image(config.source, tuple(config.size) if config.size else None)
    reconstruction = restored.render()
    size = out.stat().st_size
    return {"file": str(out), "bits": bits, "bytes": size,
            "bits_per_pixel": 8 * size / (fitted.height * fitted.width),
            "psnr": psnr(torch.from_numpy(reconstruction), torch.from_numpy(target.values)),
            "psnr_before": psnr(torch.from_numpy(fitted.render()), torch.from_numpy(target.values))}


def load_exported(path: str | Path) -> FittedImage:
    """A FittedImage from a file written by `export_run`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise NfieldsError(f"'{path}' is not a readable exported field ({error}).") from None
    if metadata.get("format") != "nfields-quantized-field":
        raise NfieldsError(f"'{path}' was not written by 'nfields export'.")
    model: Field = field_from_spec(json.loads(metadata["field_spec"]))
    model.load_state_dict(dequantize(tensors, int(metadata["bits"])))
    image = json.loads(metadata["image"])
    return FittedImage(model.eval(), image["height"], image["width"], image["coords"])


__all__ = ["export_run", "load_exported", "quantize", "dequantize"]
