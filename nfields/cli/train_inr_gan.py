"""`nfields train inr-gan`: a hypernetwork GAN whose samples are coordinate networks (INR-GAN)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_run_arguments, fit_settings

INR_GAN_SETTINGS = ("batch", "size", "limit", "seconds", "r1_gamma", "mirror")


def add_parser(sub) -> None:
    p = sub.add_parser("inr-gan", help="a GAN whose generator makes coordinate networks (INR-GAN)",
                       description="INR-GAN: a mapping network and a hypernetwork that modulates shared weights "
                                   "by factorized multiplicative modulation (rank 10) of a multi-scale INR on (y, x), "
                                   "against a StyleGAN2-style ResNet discriminator with R1. Samples render at any "
                                   "resolution and beyond the training frame.")
    p.add_argument("--dataset", dest="source", metavar="NAME", help="emoji (64x64 RGB), fashion-mnist (28x28 gray) "
                                                                    "or a folder of images")
    p.add_argument("--max-steps", dest="steps", metavar="S", type=int, help="optimisation steps (default 20000)")
    p.add_argument("--batch", type=int, help="images per step (default 32)")
    p.add_argument("--size", type=int, help="resize images to SIZE x SIZE (default: the dataset's own)")
    p.add_argument("--limit", type=int, help="train on the first N images only")
    p.add_argument("--r1-gamma", type=float, help="R1 weight (default 0.0002 * H * W / batch, StyleGAN2-ADA's rule)")
    p.add_argument("--no-mirror", dest="mirror", action="store_const", const=False,
                   help="no random horizontal flips of the training images")
    p.add_argument("--out", type=Path, help="run folder (default runs/<dataset>-inr-gan)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    add_run_arguments(p, "0.0025, both networks")
    p.add_argument("--width", type=int, help="GAN option: width of the coarsest INR level (default 256)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any GAN option, e.g. -o levels=2 -o rank=10 -o d_width=32 (InrGanConfig)")
    p.set_defaults(handler=run, hidden_layers=None, field=None)


def run(args: argparse.Namespace) -> int:
    from ..jobs.train_inr_gan import TrainInrGanConfig, run_train_inr_gan

    config, explicit, out = fit_settings(args, TrainInrGanConfig, "train-inr-gan", INR_GAN_SETTINGS,
                                         "--dataset NAME (emoji, fashion-mnist or a folder of images)")
    m = run_train_inr_gan(config, out, resume=args.resume, overwrite=args.overwrite, explicit=explicit,
                          progress=not args.quiet)
    print(f"INR-GAN on {m['dataset']} ({m['device']}, {m['height']}x{m['width']}): {m['steps']} steps in "
          f"{m['seconds']:.1f} s, {m['images_per_second']:,.0f} images/s; D loss {m.get('final_d_loss', 0):.3f}, "
          f"G loss {m.get('final_g_loss', 0):.3f}, R1 gamma {m['r1_gamma']:g}; generator {m['generator_params']:,} "
          f"parameters, {m['samples_per_second']:,.0f} samples/s\n"
          f"files: {out}/metrics.json, {out}/samples.png, {out}/superres.png, {out}/extrapolation.png, "
          f"{out}/interpolation.png, {out}/curve.png")
    return 0
