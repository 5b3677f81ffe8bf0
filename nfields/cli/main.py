"""The `nfields` command: it parses, calls the library, and prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

from ..errors import NfieldsError


#: One module per `nfields fit SIGNAL`, each with add_parser(sub).
FIT_COMMANDS = ("fit_image", "fit_audio", "fit_video", "fit_shape")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfields", description="Neural fields: fit, render, compress.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit one signal with one field")
    signals = fit.add_subparsers(dest="signal", required=True, metavar="SIGNAL")
    for name in FIT_COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(signals)

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
