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

    render = sub.add_parser("render", help="render a fitted field at any resolution: an image, a clip at any "
                                           "sample rate, a video at any size and frame rate, a mesh, new views "
                                           "of a scene",
                            description="Image runs: evaluate on any grid (--scale or --size, --region). Audio runs: "
                                        "a WAV at any --rate. Video runs: an MP4 at any --size/--scale and --fps, "
                                        "or one --frame T as an image. Shape runs: a PLY mesh at any --resolution. "
                                        "Scene runs: an orbit video (--orbit) or the views of a pose file (--pose). "
                                        "'train ginr' runs: test instance --index I at --scale K.")
    render.add_argument("run", type=Path, help="a run folder made by 'nfields fit' or 'train ginr'")
    render.add_argument("--index", type=int, help="'train ginr' runs: the test instance to render; 'fit images' "
                                                  "runs: the image")
    scale = render.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="image and video runs: output pixels per fitted pixel, e.g. 4")
    scale.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="exact output size")
    render.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="image runs: the area to render, in pixels of the fitted image (may extend past it)")
    render.add_argument("--rate", type=float, help="audio runs: sample rate in Hz (default: the clip's)")
    render.add_argument("--fps", type=float, help="video runs: frame rate (default: the video's; same duration)")
    render.add_argument("--frame", type=float, metavar="T", help="video runs: one frame at time T in frames "
                                                                 "(2.5: halfway between frames 2 and 3), as an image")
    render.add_argument("--resolution", type=int, help="shape runs: marching-cubes grid points per side "
                                                       "(default: the run's)")
    render.add_argument("--orbit", action="store_true", help="scene runs: a video circling the object (.mp4)")
    render.add_argument("--frames", type=int, help="frames of the orbit (default 60)")
    render.add_argument("--elevation", type=float, default=30.0, help="orbit elevation in degrees (default 30)")
    render.add_argument("--radius", type=float, default=4.0, help="orbit camera distance (default 4)")
    render.add_argument("--pose", type=Path, help="scene runs: a JSON camera-to-world 4x4 matrix or a "
                                                  "transforms file (one image per frame)")
    render.add_argument("--depth", action="store_true", help="scene runs: depth maps instead of colour")
    render.add_argument("--out", type=Path, required=True,
                        help="output image (PNG, JPEG, TIFF, ...), .wav, .mp4, .ply or folder")
    render.add_argument("--device", default="auto")
    render.add_argument("--chunk", type=int, default=None, help="pixels (rays, samples) evaluated at once")
    render.set_defaults(handler=cmd_render)

    export = sub.add_parser("export", help="write a fitted field's weights quantised (compression), or a "
                                           "shape's or a scene's surface as a mesh")
    export.add_argument("run", type=Path)
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--bits", type=int, choices=(16, 8), help="image, audio, video and shape runs: quantise the "
                                                                "field's weights")
    what.add_argument("--mesh", action="store_true", help="shape runs: marching cubes on the field; scene runs: "
                                                          "on the density")
    export.add_argument("--resolution", type=int, help="--mesh: grid points per side (default: the shape run's, "
                                                       "256 for scenes)")
    export.add_argument("--threshold", type=float, help="--mesh on scenes: density level of the surface (default 25)")
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

#: Render flags and the kinds of run each is for (any other kind given one gets a sentence saying so).
RENDER_FLAGS = {"index": ("images", "ginr"), "scale": ("image", "images", "video", "ginr"),
                "size": ("image", "images", "video", "scene"), "region": ("image", "images"),
                "rate": ("audio",), "fps": ("video",), "frame": ("video",), "resolution": ("shape",),
                "orbit": ("scene",), "frames": ("scene",), "pose": ("scene",), "depth": ("scene",)}
#: Flags with defaults, checked only when changed from them.
RENDER_DEFAULTS = {"elevation": 30.0, "radius": 4.0}


def cmd_render(args: argparse.Namespace) -> int:
    from ..jobs.runs import made_by, short_kind

    if not args.out.parent.exists():
        raise NfieldsError(f"folder '{args.out.parent}' does not exist; create it or choose another --out.")
    if args.chunk is not None and args.chunk <= 0:
        raise NfieldsError(f"--chunk must be positive, not {args.chunk}.")
    kind = short_kind(args.run)
    if kind in ("diffusion", "inr-gan"):
        raise NfieldsError(f"'{args.run}' is {made_by(kind)}, a prior over fields: sample and render new ones with "
                           f"'nfields generate {args.run} --n N --out DIR'.")
    for flag, kinds in RENDER_FLAGS.items():
        value = getattr(args, flag)
        if value not in (None, False) and kind not in kinds:
            names = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} and {kinds[-1]}"
            raise NfieldsError(f"--{flag} is for {names} runs, and '{args.run}' is {made_by(kind)}; see "
                               f"'nfields render --help'.")
    if kind != "scene" and any(getattr(args, k) != v for k, v in RENDER_DEFAULTS.items()):
        raise NfieldsError("--elevation and --radius are for scene orbits (--orbit).")
    return RENDERERS[kind](args)


def _render_scene(args: argparse.Namespace) -> int:
    from ..jobs.scene_outputs import render_scene_run

    if args.frames is not None and not args.orbit:
        raise NfieldsError("--frames is the length of an --orbit; give --orbit too.")
    report = render_scene_run(args.run, args.out, (args.frames or 60) if args.orbit else None, args.pose, args.depth,
                              tuple(args.size) if args.size else None, args.elevation, args.radius,
                              device=args.device, chunk=args.chunk or 4096)
    what = "depth maps" if args.depth else "views"
    print(f"wrote {', '.join(report['files'][:3])}{' ...' if len(report['files']) > 3 else ''} "
          f"({report['views']} {what} at {report['width']}x{report['height']})")
    return 0


def _render_instance(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import render_instance

    if args.index is None:
        raise NfieldsError("a 'train ginr' run renders one test instance: give --index I (and --scale K).")
    report = render_instance(args.run, args.index, args.out, args.scale or 1.0, device=args.device)
    print(f"wrote {report['file']} ({report['width']}x{report['height']})")
    return 0


def _render_image(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .. import viz
    from ..jobs.fit_image import load_fitted
    from ..jobs.runs import PICTURE_BYTES_PER_VALUE
    from ..memory import check_memory

    if args.index is not None and args.run_kind == "image":
        raise NfieldsError("--index is for 'train ginr' and 'fit images' runs; an image run renders its one image.")
    if args.run_kind == "images" and args.index is None:
        raise NfieldsError("a 'fit images' run holds one field per image: give --index I (and --scale K).")
    if args.scale is None and args.size is None:
        raise NfieldsError("an image run renders at --scale K or --size H W; give one of them.")
    fitted = load_fitted(args.run, args.device) if args.index is None else _fitted_of_many(args)
    height, width = fitted.output_size(*(args.size or (None, None)), scale=args.scale, region=args.region)
    check_memory(height * width * fitted.field.out_features * PICTURE_BYTES_PER_VALUE,
                 f"a {width}x{height} render", "render a smaller --size, or the image in pieces with --region")
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


def _render_audio(args: argparse.Namespace) -> int:
    from ..jobs.runs import render_audio_run

    report = render_audio_run(args.run, args.out, args.rate, args.device, args.chunk or 1 << 18)
    print(f"wrote {report['file']} ({report['samples']:,} samples at {report['rate']:,} Hz, "
          f"{report['seconds']:.2f} s, {report['channels']} channel{'s' if report['channels'] > 1 else ''})")
    return 0


def _render_video(args: argparse.Namespace) -> int:
    from ..jobs.runs import render_video_run

    report = render_video_run(args.run, args.out, tuple(args.size) if args.size else None, args.scale, args.fps,
                              args.frame, args.device, args.chunk or 1 << 18)
    what = f"frame {args.frame:g}" if args.frame is not None else f"{report['frames']} frames at {report['fps']:g} fps"
    print(f"wrote {report['file']} ({what}, {report['width']}x{report['height']})")
    return 0


def _render_shape(args: argparse.Namespace) -> int:
    from ..jobs.runs import render_shape_run

    report = render_shape_run(args.run, args.out, args.resolution, args.device)
    print(f"wrote {report['file']}: {report['vertices']:,} vertices, {report['faces']:,} faces "
          f"({report['resolution']}³ grid)")
    return 0


def _with_kind(render):
    """`render(args)` with the run's kind in `args.run_kind`."""
    def call(args: argparse.Namespace) -> int:
        from ..jobs.runs import short_kind

        args.run_kind = short_kind(args.run)
        return render(args)

    return call


RENDERERS = {"image": _with_kind(_render_image), "images": _with_kind(_render_image), "audio": _render_audio,
             "video": _render_video, "shape": _render_shape, "scene": _render_scene, "ginr": _render_instance}


def cmd_export(args: argparse.Namespace) -> int:
    from ..jobs.export import export_run
    from ..jobs.runs import SINGLE_FIELD_KINDS, made_by, short_kind

    kind = short_kind(args.run)
    if args.mesh:
        if kind == "shape":
            return _export_shape_mesh(args)
        if kind != "scene":
            raise NfieldsError(f"'{args.run}' is {made_by(kind)}; --mesh extracts a surface from shape and scene runs "
                               f"('nfields fit shape', 'nfields fit scene').")
        return _export_scene_mesh(args)
    if args.resolution is not None or args.threshold is not None:
        raise NfieldsError("--resolution and --threshold are for --mesh; --bits quantises the weights.")
    if kind not in SINGLE_FIELD_KINDS:
        why = {"images": "it holds one field per image; render them with 'nfields render --index I'",
               "scene": "a scene field is exported as a mesh with --mesh"}.get(
            kind, "it is a model over a dataset, not one field")
        raise NfieldsError(f"'{args.run}' is {made_by(kind)}: --bits quantises a single field (image, audio, video "
                           f"or shape runs), and {why}.")
    report = export_run(args.run, args.bits, args.out)
    quality = (f"PSNR {report['psnr']:.2f} dB after {report['bits']}-bit quantisation "
               f"({report['psnr_before']:.2f} dB before)" if "psnr" in report else
               f"the signed distance moves by at most {report['max_change']:.2g} on a {report['grid']}³ grid after "
               f"{report['bits']}-bit quantisation")
    per = f", {report['bits_per_pixel']:.3f} bits per pixel" if "bits_per_pixel" in report else ""
    print(f"wrote {report['file']}: {report['bytes']:,} bytes{per}, {quality}")
    return 0


def _export_shape_mesh(args: argparse.Namespace) -> int:
    from ..jobs.runs import render_shape_run

    if args.threshold is not None:
        raise NfieldsError("--threshold is the density level of scene meshes; a shape's surface is its level 0.")
    report = render_shape_run(args.run, args.out, args.resolution, args.device)
    print(f"wrote {report['file']}: {report['vertices']:,} vertices, {report['faces']:,} faces "
          f"({report['resolution']}³ grid)")
    return 0


def _export_scene_mesh(args: argparse.Namespace) -> int:
    from ..jobs.scene_outputs import export_scene_mesh

    threshold = 25.0 if args.threshold is None else args.threshold
    report = export_scene_mesh(args.run, args.out, args.resolution or 256, threshold, args.device)
    print(f"wrote {report['file']}: {report['vertices']:,} vertices, {report['faces']:,} faces at density "
          f"{report['threshold']:g} ({report['resolution']}³ grid)")
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
