"""The `nfields` command: it parses, calls the library, and prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

from ..errors import NfieldsError
from . import generate, make_scene, train_diffusion, train_ginr, train_inr_gan, train_mnif


#: One module per `nfields fit SIGNAL`, each with add_parser(sub).
FIT_COMMANDS = ("fit_image", "fit_images", "fit_audio", "fit_video", "fit_shape", "fit_scene")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfields", description="Neural fields: fit, render, compress.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit one signal with one field")
    signals = fit.add_subparsers(dest="signal", required=True, metavar="SIGNAL")
    for name in FIT_COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(signals)

    train = sub.add_parser("train", help="learn over a whole dataset: generalizable INRs, mNIF, priors, INR-GAN")
    jobs = train.add_subparsers(dest="job", required=True, metavar="JOB")
    for job in (train_ginr, train_mnif, train_diffusion, train_inr_gan):
        job.add_parser(jobs)
    train_ginr.add_run_commands(sub)
    generate.add_parser(sub)

    render = sub.add_parser("render", help="render a fitted field: an image at any size, or new views of a scene",
                            description="Image runs: evaluate on any grid (--scale or --size, --region). Scene "
                                        "runs: an orbit video (--orbit) or the views of a pose file (--pose). "
                                        "'train ginr' runs: test instance --index I at --scale K.")
    render.add_argument("run", type=Path, help="a run folder made by 'nfields fit image', 'fit scene' or 'train ginr'")
    render.add_argument("--index", type=int, help="'train ginr' runs: the test instance to render; 'fit images' "
                                                  "runs: the image")
    scale = render.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="image runs: output pixels per fitted pixel, e.g. 4")
    scale.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="exact output size")
    render.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="image runs: the area to render, in pixels of the fitted image (may extend past it)")
    render.add_argument("--orbit", action="store_true", help="scene runs: a video circling the object (.mp4)")
    render.add_argument("--frames", type=int, default=60, help="frames of the orbit (default 60)")
    render.add_argument("--elevation", type=float, default=30.0, help="orbit elevation in degrees (default 30)")
    render.add_argument("--radius", type=float, default=4.0, help="orbit camera distance (default 4)")
    render.add_argument("--pose", type=Path, help="scene runs: a JSON camera-to-world 4x4 matrix or a "
                                                  "transforms file (one image per frame)")
    render.add_argument("--depth", action="store_true", help="scene runs: depth maps instead of colour")
    render.add_argument("--out", type=Path, required=True, help="output image (PNG, JPEG, TIFF, ...), .mp4 or folder")
    render.add_argument("--device", default="auto")
    render.add_argument("--chunk", type=int, default=None, help="pixels (rays) evaluated at once")
    render.set_defaults(handler=cmd_render)

    export = sub.add_parser("export", help="write a fitted field's weights quantised (compression), or a "
                                           "scene's density surface as a mesh")
    export.add_argument("run", type=Path)
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--bits", type=int, choices=(16, 8), help="image runs: quantise the weights")
    what.add_argument("--mesh", action="store_true", help="scene runs: marching cubes on the density")
    export.add_argument("--resolution", type=int, default=256, help="--mesh: grid points per side (default 256)")
    export.add_argument("--threshold", type=float, default=25.0, help="--mesh: density level of the surface (default 25)")
    export.add_argument("--device", default="auto")
    export.add_argument("--out", type=Path, required=True, help="output .safetensors (--bits) or .ply (--mesh)")
    export.set_defaults(handler=cmd_export)
    make_scene.add_parser(sub)

    sub.add_parser("datasets", help="list the built-in data and whether each is installed").set_defaults(
        handler=cmd_datasets)
    sub.add_parser("fields", help="list the fields and their options").set_defaults(handler=cmd_fields)
    sub.add_parser("recipes", help="list the named presets").set_defaults(handler=cmd_recipes)
    return parser


# -- render, export, listings --------------------------------------------------------------------

def cmd_render(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import is_ginr_run
    from ..jobs.scene_outputs import is_scene_run

    if not args.out.parent.exists():
        raise NfieldsError(f"folder '{args.out.parent}' does not exist; create it or choose another --out.")
    if args.chunk is not None and args.chunk <= 0:
        raise NfieldsError(f"--chunk must be positive, not {args.chunk}.")
    if is_scene_run(args.run):
        return _render_scene(args)
    if is_ginr_run(args.run):
        return _render_instance(args)
    if (args.run / "fields.safetensors").exists() and args.index is None:
        raise NfieldsError("a 'fit images' run holds one field per image: give --index I (and --scale K).")
    if args.index is not None and not (args.run / "fields.safetensors").exists():
        raise NfieldsError("--index is for 'train ginr' and 'fit images' runs; an image run renders its one image.")
    if args.scale is None and args.size is None:
        raise NfieldsError("an image run renders at --scale K or --size H W; give one of them.")
    return _render_image(args)


def _render_scene(args: argparse.Namespace) -> int:
    from ..jobs.scene_outputs import render_scene_run

    if args.scale is not None or args.region is not None:
        raise NfieldsError("--scale and --region are for image runs; a scene renders at --size H W.")
    report = render_scene_run(args.run, args.out, args.frames if args.orbit else None, args.pose, args.depth,
                              tuple(args.size) if args.size else None, args.elevation, args.radius,
                              device=args.device, chunk=args.chunk or 4096)
    what = "depth maps" if args.depth else "views"
    print(f"wrote {', '.join(report['files'][:3])}{' ...' if len(report['files']) > 3 else ''} "
          f"({report['views']} {what} at {report['width']}x{report['height']})")
    return 0


def _render_instance(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import render_instance

    if args.index is None or args.size or args.region or args.orbit or args.pose or args.depth:
        raise NfieldsError("a 'train ginr' run renders one test instance: give --index I (and --scale K).")
    report = render_instance(args.run, args.index, args.out, args.scale or 1.0, device=args.device)
    print(f"wrote {report['file']} ({report['width']}x{report['height']})")
    return 0


def _render_image(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .. import viz
    from ..jobs.fit_image import load_fitted

    if args.orbit or args.pose or args.depth:
        raise NfieldsError("--orbit, --pose and --depth are for scene runs; an image run renders at --scale or --size.")
    fitted = load_fitted(args.run, args.device) if args.index is None else _fitted_of_many(args)
    height, width = fitted.output_size(*(args.size or (None, None)), scale=args.scale, region=args.region)
    with tqdm(total=height, desc="render", unit="row", file=sys.stderr, disable=height * width < 1 << 22) as bar:
        image = fitted.render(height, width, region=args.region, chunk=args.chunk or 1 << 18, progress=bar)
    try:
        viz.save_image(image, args.out)
    except (KeyError, ValueError, OSError) as error:
        raise NfieldsError(f"cannot write '{args.out}' ({error}); use a .png, .jpg or .tif name.") from None
    print(f"wrote {args.out} ({width}x{height})")
    return 0


def _fitted_of_many(args: argparse.Namespace):
    """Image --index of a 'fit images' run, on --device."""
    from ..jobs.fit_images import load_fitted_images
    from ..train.device import resolve_device

    fields = load_fitted_images(args.run)
    if not -len(fields) <= args.index < len(fields):
        raise NfieldsError(f"--index {args.index} is out of range: the run holds {len(fields)} fields.")
    fitted = fields.fitted(args.index)
    fitted.field.to(resolve_device(args.device))
    return fitted


def cmd_export(args: argparse.Namespace) -> int:
    from ..jobs.export import export_run
    from ..jobs.scene_outputs import export_scene_mesh, is_scene_run

    if args.mesh:
        if not is_scene_run(args.run):
            raise NfieldsError(f"'{args.run}' is not a scene run; --mesh extracts a surface from 'nfields fit scene' "
                               "runs (shape runs already write mesh.ply).")
        report = export_scene_mesh(args.run, args.out, args.resolution, args.threshold, args.device)
        print(f"wrote {report['file']}: {report['vertices']:,} vertices, {report['faces']:,} faces at density "
              f"{report['threshold']:g} ({report['resolution']}³ grid)")
        return 0

    report = export_run(args.run, args.bits, args.out)
    print(f"wrote {report['file']}: {report['bytes']:,} bytes, {report['bits_per_pixel']:.3f} bits per pixel, "
          f"PSNR {report['psnr']:.2f} dB after {report['bits']}-bit quantisation "
          f"({report['psnr_before']:.2f} dB before)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import catalog

    for entry in catalog.entries():
        state = "installed" if entry.path() else f"missing: install {entry.package}"
        print(f"{entry.name:<13} {entry.kind:<7} {entry.description}  [{state}]")
    return 0


def cmd_fields(args: argparse.Namespace) -> int:
    from ..fields import FIELDS
    from ..fields.radiance import SCENE_FIELDS
    from ..ginr import GINR_METHODS

    for title, registry in (("fields (fit image, audio, video, shape)", FIELDS), ("scene fields (fit scene)", SCENE_FIELDS),
                            ("generalizable-INR methods (train ginr)", GINR_METHODS)):
        print(f"{title}:")
        for name in registry.names():
            cls, config = registry.lookup(name)
            options = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(config))
            doc = (inspect.getdoc(cls) or "").splitlines()[0]
            print(f"  {name:<10} {doc}\n             options: {options}; default lr {cls.default_lr:g}")
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
