"""`nfields fit images`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_fit_arguments, fit_settings

IMAGES_SETTINGS = ("split", "size", "limit", "batch", "target_psnr", "coords", "check_every")
FILES = ("fields.safetensors", "psnr.csv", "metrics.json", "reconstructions.png", "psnr_histogram.png")


def add_parser(sub) -> None:
    p = sub.add_parser("images", help="fit one field per image of a dataset, many at once",
                       description="Fit one independent field per image of a dataset or folder, K images at a time "
                                   "in one batched computation; every field's weights go to one safetensors file.")
    add_fit_arguments(p, "fashion-mnist, emoji, or a folder of images")
    p.add_argument("--split", help="train, test or all (default all)")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="resize every image: S (square) or H W")
    p.add_argument("--limit", type=int, help="fit only the first N images of the split")
    p.add_argument("--batch", type=int, help="images fitted at once (default 256)")
    p.add_argument("--target-psnr", type=float, help="stop an image once it reaches this PSNR in dB "
                                                     "(default: every image runs --steps)")
    p.add_argument("--check-every", type=int, help="steps between checks for finished images (default 10)")
    p.add_argument("--coords", help="pixel-centre convention: centers (default) or endpoints (SIREN)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_images import FitImagesConfig, run_fit_images

    config, explicit, out = fit_settings(args, FitImagesConfig, "fit-images", IMAGES_SETTINGS,
                                         "a dataset (fashion-mnist, emoji) or a folder of images")
    if args.out is None:  # not the folder 'nfields fit image' would pick for a file of the same name
        out = Path("runs") / f"{Path(config.source).name}-{config.field}-images"
    metrics = run_fit_images(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                             explicit=explicit)
    reached = ("" if metrics["target_psnr"] is None else
               f", {100 * metrics['reached_target']:.1f}% reached {metrics['target_psnr']:g} dB")
    speed = f"{metrics['images_per_second']:.1f} images/s" if metrics["images_per_second"] else "resumed finished run"
    print(f"{metrics['images']} images ({metrics['image']}, {metrics['field']}, {metrics['device']}): mean PSNR "
          f"{metrics['psnr_mean']:.2f} dB (min {metrics['psnr_min']:.2f}){reached}; {speed} "
          f"in {metrics['seconds']:.1f} s")
    print(f"wrote {', '.join(str(out / name) for name in FILES)}")
    return 0
