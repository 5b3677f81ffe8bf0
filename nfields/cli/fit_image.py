"""`nfields fit image`."""

from __future__ import annotations

import argparse

from .common import add_fit_arguments, fit_settings

IMAGE_SETTINGS = ("size", "keep_fraction", "mask", "batch_pixels", "coords", "supervise")


def add_parser(sub) -> None:
    p = sub.add_parser("image", help="fit one image with one field",
                       description="Fit one image (a file or a built-in name) with a neural field.")
    add_fit_arguments(p, "image file (PNG, JPEG, TIFF, WebP) or built-in name, e.g. camera")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="S: longer side to S pixels, keeping the aspect ratio; H W: exact size")
    p.add_argument("--keep-fraction", type=float, help="inpainting: train on this random fraction of pixels")
    p.add_argument("--mask", help="inpainting: train on the white pixels of this image")
    p.add_argument("--batch-pixels", type=int, help="random pixels per step (default 0: all)")
    p.add_argument("--coords", help="pixel-centre convention: centers (default) or endpoints (SIREN)")
    p.add_argument("--supervise", help="values (default), or gradient / laplacian: Poisson reconstruction, "
                                       "fitting only the image's derivatives (SIREN)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_image import FitImageConfig, run_fit_image

    config, explicit, out = fit_settings(args, FitImageConfig, "fit-image", IMAGE_SETTINGS,
                                         "an image (a file path or a built-in name such as 'camera'; "
                                         "see 'nfields datasets')")
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
