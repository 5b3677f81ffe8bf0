"""`nfields train mnif`: stage 1 of mNIF (a mixture of SIREN weights per instance) on the `train ginr`
machinery, so `eval`, `encode`, `render --index` and `interpolate` work on its runs too."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_run_arguments
from .train_ginr import add_dataset_arguments, train_instances

MNIF_SETTINGS = ("epochs", "batch", "size", "limit", "eval_limit", "pixel_fraction", "query_rays", "seconds",
                 "eval_at_seconds")


def add_parser(sub) -> None:
    p = sub.add_parser("mnif", help="mNIF stage 1: a mixture of SIRENs conditioned on a latent per instance",
                       description="Mixtures of neural implicit functions (You et al. 2023): M SIREN weight sets "
                                   "averaged per layer by coefficients from a latent; the latent from CAVIA "
                                   "(meta-SGD steps from zero) or auto-decoding. Images, 64^3 voxels, and radiance "
                                   "fields of many objects (scenes:DIR, auto-decoding, NeRF without view "
                                   "direction).")
    p.add_argument("--dataset", dest="source", metavar="NAME",
                   help="fashion-mnist, emoji, an image folder, voxels (64^3 occupancy of the pybullet objects), or "
                        "scenes:DIR (radiance fields of a 'nfields make-scene --objects' folder)")
    p.add_argument("--size", dest="model_size", metavar="S|L", help="model size: S (default) or L")
    p.add_argument("--adapt", metavar="A", help="context adaptation: cavia (default) or autodecode (scenes: autodecode only)")
    p.add_argument("--resolution", dest="size", type=int, metavar="R",
                   help="resize images to R x R (voxels: R^3 grids; default the dataset's own, 64 for voxels)")
    add_dataset_arguments(p, "instances per step over all processes (default 16; the paper's 32)")
    p.add_argument("--query-rays", type=int, help="scenes: rays rendered per object per step (default 1024)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<dataset>-mnif)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    add_run_arguments(p, "1e-4, the official scripts'")
    p.add_argument("--eval-at-seconds", type=float, nargs="+", metavar="S", help="also evaluate at these seconds")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any mnif option, e.g. -o experts=64 -o latent_dim=256 -o inner_steps=3 (see 'nfields fields')")
    p.set_defaults(handler=run, field="mnif", width=None, hidden_layers=None)


def run(args: argparse.Namespace) -> int:
    # --size and --adapt are method options; only given ones go in, so a resume need not repeat them.
    args.option = [f"{key}={value}" for key, value in (("size", args.model_size), ("adapt", args.adapt))
                   if value is not None] + args.option
    return train_instances(args, "train-mnif", MNIF_SETTINGS,
                           "--dataset NAME (fashion-mnist, emoji, a folder, voxels or scenes:DIR)")
