"""`nfields fit video`."""

from __future__ import annotations

import argparse

from .common import add_fit_arguments, fit_settings

VIDEO_SETTINGS = ("frames", "size", "batch_pixels", "coords")


def add_parser(sub) -> None:
    p = sub.add_parser("video", help="fit one video with one field",
                       description="Fit one video (a file or a built-in name) with a neural field (t, y, x) -> RGB.")
    add_fit_arguments(p, "video file (MP4, AVI, MOV, GIF, ...) or built-in name, e.g. bikes")
    p.add_argument("--frames", type=int, metavar="N", help="fit the first N frames (default: all)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="S: longer side to S pixels, keeping the aspect ratio; H W: exact size")
    p.add_argument("--batch-pixels", type=int, help="random pixels (over all frames) per step (default 65536; "
                                                    "0: all)")
    p.add_argument("--coords", help="pixel-centre convention: centers (default) or endpoints")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_video import FitVideoConfig, run_fit_video

    config, explicit, out = fit_settings(args, FitVideoConfig, "fit-video", VIDEO_SETTINGS,
                                         "a video (a file path or a built-in name such as 'bikes'; "
                                         "see 'nfields datasets')")
    metrics = run_fit_video(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            explicit=explicit)
    print(f"{metrics['field']} on {metrics['source']} ({metrics['frames']} frames {metrics['size'][1]}x"
          f"{metrics['size'][0]}, {metrics['device']}): PSNR {metrics['psnr']:.2f} dB (mean over frames; "
          f"worst frame {metrics['psnr_min']:.2f}), SSIM {metrics['ssim']:.4f} after {metrics['steps']} steps "
          f"in {metrics['seconds']:.1f} s ({metrics['params']:,} parameters)\n"
          f"outputs: {out}/reconstruction.mp4, {out}/frames.png, {out}/curve.png, {out}/metrics.json")
    return 0
