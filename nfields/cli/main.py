"""The `nfields` command: it parses, calls the library, and prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import NfieldsError


def _fit_image_parser(sub) -> None:
    p = sub.add_parser("image", help="fit one image with one field",
                       description="Fit one image (a file or a built-in name) with a neural field.")
    p.add_argument("source", nargs="?", help="image file (PNG, JPEG, TIFF, WebP) or built-in name, e.g. camera")
    p.add_argument("--field", help="relu, relu-pe, fourier, siren, gauss or hashgrid (default siren)")
    p.add_argument("--steps", type=int, help="optimisation steps (default 2000)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="S: longer side to S pixels, keeping the aspect ratio; H W: exact size")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--out", type=Path, help="run folder (default runs/<source>-<field>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the field's own)")
    p.add_argument("--keep-fraction", type=float, help="inpainting: train on this random fraction of pixels")
    p.add_argument("--mask", help="inpainting: train on the white pixels of this image")
    p.add_argument("--batch-pixels", type=int, help="random pixels per step (default 0: all)")
    p.add_argument("--coords", help="pixel-centre convention: centers (default) or endpoints (SIREN)")
    p.add_argument("--precision", help="fp32 (default) or tf32 matmuls on CUDA")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    p.add_argument("--log-every", type=int, help="steps between log points (default 25)")
    p.add_argument("--eval-at", type=int, nargs="+", metavar="STEP", help="also evaluate at these steps")
    p.add_argument("--width", type=int, help="field option: hidden width")
    p.add_argument("--hidden-layers", type=int, help="field option: number of width x width layers")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field option, e.g. -o omega0=30 -o log2_table_size=18 (see 'nfields fields')")
    p.add_argument("--recipe", help="a named preset, e.g. siren-camera (see 'nfields recipes')")
    p.add_argument("--config", type=Path, help="a JSON file of settings (a run's config.json works)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_fit_image)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfields", description="Neural fields: fit, render, compress.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit one signal with one field")
    _fit_image_parser(fit.add_subparsers(dest="signal", required=True, metavar="SIGNAL"))

    render = sub.add_parser("render", help="evaluate a fitted field on any grid (super-resolution, zoom)")
    render.add_argument("run", type=Path, help="a run folder made by 'nfields fit image'")
    scale = render.add_mutually_exclusive_group(required=True)
    scale.add_argument("--scale", type=float, help="output pixels per fitted pixel, e.g. 4")
    scale.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="exact output size")
    render.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="the area to render, in pixels of the fitted image (may extend past it)")
    render.add_argument("--out", type=Path, required=True, help="output image (PNG, JPEG, TIFF, ...)")
    render.add_argument("--device", default="auto")
    render.add_argument("--chunk", type=int, default=1 << 18, help="pixels evaluated at once")
    render.set_defaults(handler=cmd_render)

    export = sub.add_parser("export", help="write a fitted field's weights quantised (compression)")
    export.add_argument("run", type=Path)
    export.add_argument("--bits", type=int, required=True, choices=(16, 8))
    export.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    export.set_defaults(handler=cmd_export)

    sub.add_parser("datasets", help="list the built-in data and whether each is installed").set_defaults(
        handler=cmd_datasets)
    sub.add_parser("fields", help="list the fields and their options").set_defaults(handler=cmd_fields)
    sub.add_parser("recipes", help="list the named presets").set_defaults(handler=cmd_recipes)
    return parser


# -- fit image ----------------------------------------------------------------------------------

FLAG_TO_SETTING = {"source": "source", "field": "field", "steps": "steps", "size": "size", "device": "device",
                   "seed": "seed", "lr": "lr", "keep_fraction": "keep_fraction", "mask": "mask",
                   "batch_pixels": "batch_pixels", "coords": "coords", "precision": "precision",
                   "checkpoint_every": "checkpoint_every", "log_every": "log_every", "eval_at": "eval_at"}
RUN_ONLY_KEYS = {"resolved_device", "image", "field_spec"}  # written beside the settings in config.json


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NfieldsError(f"field option '{pair}' must look like KEY=VALUE, e.g. -o omega0=30.")
        options[key.replace("-", "_")] = value
    return options


def _read_config_file(path: Path) -> dict[str, Any]:
    from ..jobs.fit_image import FitImageConfig

    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise NfieldsError(f"cannot read config file '{path}' ({error.strerror}).") from None
    except ValueError as error:
        raise NfieldsError(f"config file '{path}' is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise NfieldsError(f"config file '{path}' must hold a JSON object of settings.")
    names = {f.name for f in dataclasses.fields(FitImageConfig)}
    unknown = set(data) - names - RUN_ONLY_KEYS
    if unknown:
        raise NfieldsError(f"config file '{path}' has unknown settings: {', '.join(sorted(unknown))}.")
    return {k: v for k, v in data.items() if k in names}


def cmd_fit_image(args: argparse.Namespace) -> int:
    from ..jobs.fit_image import FitImageConfig, run_fit_image
    from ..recipes import recipe

    settings: dict[str, Any] = {}
    if args.recipe:
        settings.update(recipe(args.recipe, "fit-image").settings)
    if args.config:
        settings.update(_read_config_file(args.config))
    explicit = {name for flag, name in FLAG_TO_SETTING.items() if getattr(args, flag) is not None}
    settings.update({FLAG_TO_SETTING[f]: getattr(args, f) for f in FLAG_TO_SETTING if getattr(args, f) is not None})
    options = dict(settings.get("field_options", {}))
    options.update(_parse_options(args.option))
    for flag in ("width", "hidden_layers"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    if options:
        settings["field_options"] = options
        explicit.add("field_options")
    if not settings.get("source") and not (args.resume and args.out):
        raise NfieldsError("give an image (a file path or a built-in name such as 'camera'; see 'nfields datasets'),"
                           " or --resume with the run's --out folder.")
    config = FitImageConfig(**settings)
    out = args.out or Path("runs") / f"{Path(config.source).stem}-{config.field}"
    metrics = run_fit_image(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            explicit=explicit)
    lines = [f"{metrics['field']} on {metrics['source']} ({metrics['image']}, {metrics['device']}): "
             f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} after {metrics['steps']} steps "
             f"in {metrics['seconds']:.1f} s ({metrics['params']:,} parameters)"]
    if "psnr_heldout" in metrics:
        lines.append(f"held-out pixels: PSNR {metrics['psnr_heldout']:.2f} dB")
    lines.append(f"pictures: {out}/comparison.png, {out}/reconstruction.png, {out}/curve.png")
    print("\n".join(lines))
    return 0


# -- render, export, listings --------------------------------------------------------------------

def cmd_render(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .. import viz
    from ..jobs.fit_image import load_fitted

    if not args.out.parent.exists():
        raise NfieldsError(f"folder '{args.out.parent}' does not exist; create it or choose another --out.")
    if args.chunk <= 0:
        raise NfieldsError(f"--chunk must be positive, not {args.chunk}.")
    fitted = load_fitted(args.run, args.device)
    height, width = fitted.output_size(*(args.size or (None, None)), scale=args.scale, region=args.region)
    with tqdm(total=height, desc="render", unit="row", file=sys.stderr, disable=height * width < 1 << 22) as bar:
        image = fitted.render(height, width, region=args.region, chunk=args.chunk, progress=bar)
    try:
        viz.save_image(image, args.out)
    except (KeyError, ValueError, OSError) as error:
        raise NfieldsError(f"cannot write '{args.out}' ({error}); use a .png, .jpg or .tif name.") from None
    print(f"wrote {args.out} ({width}x{height})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..jobs.export import export_run

    report = export_run(args.run, args.bits, args.out)
    print(f"wrote {report['file']}: {report['bytes']:,} bytes, {report['bits_per_pixel']:.3f} bits per pixel, "
          f"PSNR {report['psnr']:.2f} dB after {report['bits']}-bit quantisation "
          f"({report['psnr_before']:.2f} dB before)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import catalog

    for entry in catalog.entries():
        state = "installed" if entry.path() else f"missing: install {entry.package}"
        print(f"{entry.name:<12} {entry.kind:<6} {entry.description}  [{state}]")
    return 0


def cmd_fields(args: argparse.Namespace) -> int:
    from ..fields import FIELDS

    for name in FIELDS.names():
        cls, config = FIELDS.lookup(name)
        options = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(config))
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<9} {doc}\n          options: {options}; default lr {cls.default_lr:g}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..recipes import RECIPES

    for r in RECIPES.values():
        print(f"{r.name:<20} ({r.job}) {r.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except NfieldsError as error:
        print(f"nfields: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfields: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nfields datasets | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
