"""`nfields train ginr`, and the commands that use its runs: `eval`, `encode`, `interpolate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NfieldsError
from . import generate
from .common import add_run_arguments, fit_settings

GINR_SETTINGS = ("epochs", "batch", "size", "limit", "eval_limit", "pixel_fraction", "support_views", "query_rays",
                 "seconds", "eval_at_seconds")


def add_parser(sub) -> None:
    p = sub.add_parser("ginr", help="learn one shared field plus a per-instance condition over a dataset",
                       description="Generalizable INRs: TransINR, IPC and the locality-aware INR (one Transformer "
                                   "encoder, each paper's decoder), and the functa and auto-decoder baselines. "
                                   "Multi-GPU: torchrun --nproc_per_node K -m nfields train ginr ...")
    p.add_argument("--dataset", dest="source", metavar="NAME", help="fashion-mnist, emoji, an image folder, voxels "
                                                    "(latent-vector methods), or scenes:DIR (objects "
                                                    "made by 'nfields make-scene --objects')")
    p.add_argument("--method", dest="field", metavar="M",
                   help="transinr, ipc, locality (default), functa, autodecoder or mnif (see also train mnif)")
    add_dataset_arguments(p, "instances per step over all processes (default 16)")
    p.add_argument("--size", type=int, help="resize instances to SIZE x SIZE (default: the dataset's own)")
    p.add_argument("--support-views", type=int, help="light fields: up to this many support views (default 3)")
    p.add_argument("--query-rays", type=int, help="light fields: rays predicted per object per step (default 1024)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<dataset>-<method>)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    add_run_arguments(p, "the method's, 1e-4 for the token methods")
    p.add_argument("--eval-at-seconds", type=float, nargs="+", metavar="S", help="also evaluate at these seconds")
    p.add_argument("--width", type=int, help="method option: encoder width (default 768)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any method option, e.g. -o depth=4 -o sigmas=24,6 (see 'nfields fields')")
    p.set_defaults(handler=run, hidden_layers=None)


def add_dataset_arguments(p: argparse.ArgumentParser, batch_help: str) -> None:
    """The budget and data flags of every training over a dataset (train ginr, train mnif)."""
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, help="passes over the training set")
    budget.add_argument("--max-steps", dest="steps", metavar="S", type=int, help="optimisation steps (default 10000)")
    p.add_argument("--batch", type=int, help=batch_help)
    p.add_argument("--limit", type=int, help="train on the first N instances only")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test instances only")
    p.add_argument("--pixel-fraction", type=float,
                   help="share of each instance's cells decoded per step (default: all pixels; 4096 voxels)")


def run(args: argparse.Namespace) -> int:
    return train_instances(args, "train-ginr", GINR_SETTINGS,
                           "--dataset NAME (fashion-mnist, emoji, a folder or scenes:DIR)")


def train_instances(args: argparse.Namespace, job: str, settings: tuple[str, ...], what: str) -> int:
    """Settings from the flags, the training (train ginr, train mnif) and its printed summary."""
    from ..jobs.train_ginr import TrainGINRConfig, run_train_ginr

    config, explicit, out = fit_settings(args, TrainGINRConfig, job, settings, what)
    metrics = run_train_ginr(config, out, resume=args.resume, overwrite=args.overwrite, explicit=explicit,
                             progress=not args.quiet)
    if metrics:  # rank 0
        report_run(metrics, out)
    return 0


def rate(per_second: float) -> str:
    """A rate with the digits that matter: 1,234 / 12.3 / 0.042."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def report_run(metrics: dict, out: Path) -> None:
    """The summary a training command prints (`train ginr`, `train mnif`)."""
    views = "".join(f", {k[5:].replace('_', ' ')} {v:.2f}" for k, v in metrics.items()
                    if k.startswith("psnr_") and k.endswith("views"))
    occupancy = (f", occupancy accuracy {metrics['accuracy']:.4f}, IoU {metrics['iou']:.3f}"
                 if "iou" in metrics else "")
    print(f"{metrics['method']} on {metrics['dataset']} ({metrics['device']}): test PSNR {metrics['psnr']:.2f} dB"
          f"{views}{occupancy} after {metrics['steps']} steps ({metrics['epochs']:.2f} epochs) in "
          f"{metrics['seconds']:.1f} s, {rate(metrics['instances_per_second'])} instances/s, "
          f"{metrics['params']:,} parameters\n"
          f"files: {out}/metrics.json, {out}/curve.png, "
          f"{out}/{'reconstructions' if 'train_psnr' in metrics else 'views'}.png"
          f"{f', {out}/locality.png' if 'locality_top10' in metrics else ''}"
          f"{f', {out}/orbit.png' if metrics.get('kind') == 'radiance' else ''}")


def add_run_commands(sub) -> None:
    """eval, encode and interpolate: commands on a trained 'train ginr' run."""
    e = sub.add_parser("eval", help="evaluate a 'train ginr' run (test PSNR, optional test-time optimisation), or "
                                    "a generative run (--fid)")
    e.add_argument("run", type=Path)
    e.add_argument("--split", default="test", help="test (default), train or all")
    e.add_argument("--tto-steps", type=int, default=0, help="test-time optimisation steps of the latents only")
    e.add_argument("--tto-lr", type=float, default=1e-3, help="Adam learning rate of the test-time optimisation")
    e.add_argument("--limit", type=int, default=0, help="the first N instances only")
    e.add_argument("--device", default="auto")
    generate.add_eval_arguments(e)
    e.set_defaults(handler=cmd_eval)

    c = sub.add_parser("encode", help="latents of images under a 'train ginr' run, into one safetensors file")
    c.add_argument("run", type=Path)
    c.add_argument("inputs", help="a dataset name or a folder of images")
    c.add_argument("--split", default="test", help="test (default), train or all")
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--out", type=Path, required=True, help="latents.safetensors")
    c.add_argument("--device", default="auto")
    c.set_defaults(handler=cmd_encode)

    i = sub.add_parser("interpolate", help="a strip of renders between two test instances of a 'train ginr' run, "
                                           "or between the samples of two seeds of a generative run")
    i.add_argument("run", type=Path)
    i.add_argument("first", type=int, help="test instance, or seed of a generative run")
    i.add_argument("second", type=int)
    i.add_argument("--steps", type=int, default=8, help="images in the strip (default 8)")
    i.add_argument("--scale", type=float, default=1.0, help="output pixels per training pixel")
    i.add_argument("--split", default="test")
    i.add_argument("--out", type=Path, required=True, help="output image (PNG)")
    i.add_argument("--device", default="auto")
    i.set_defaults(handler=cmd_interpolate)


def _require_dataset_run(args: argparse.Namespace, command: str) -> None:
    """One sentence when `command` is given a run it has nothing to do with (a single-signal fit)."""
    from ..jobs.runs import made_by, short_kind

    kind = short_kind(args.run)
    if kind not in ("ginr", "diffusion", "inr-gan"):
        raise NfieldsError(f"'{args.run}' is {made_by(kind)}; 'nfields {command}' works on 'train ginr', "
                           f"'train mnif' and generative runs (a fit's scores are in its metrics.json).")


def cmd_eval(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import evaluate_run

    if args.fid and args.samples is not None:
        from ..jobs.generate import read_samples

        read_samples(args.samples)  # a bad file is named before the run is looked at
    _require_dataset_run(args, "eval")
    if args.fid or generate.is_generative(args.run):
        return generate.cmd_eval_generation(args)

    report = evaluate_run(args.run, args.split, args.tto_steps, args.tto_lr, args.limit, args.device)
    tto = f", {report['psnr_tto']:.2f} dB after {args.tto_steps} TTO steps" if "psnr_tto" in report else ""
    occupancy = (f", occupancy accuracy {report['accuracy']:.4f}, IoU {report['iou']:.3f}"
                 if "iou" in report else "")
    print(f"{report['method']} on {report['dataset']} ({args.split}, {report['instances']} instances): "
          f"PSNR {report['psnr']:.2f} dB{tto}{occupancy}\nfiles: {args.run}/eval_{args.split}*.json, *.png")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import encode_to_file

    _require_dataset_run(args, "encode")
    report = encode_to_file(args.run, args.inputs, args.out, args.split, args.limit, args.device)
    print(f"wrote {report['file']}: {report['count']} latents of shape {tuple(report['shape'])}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..jobs.ginr_outputs import interpolate

    _require_dataset_run(args, "interpolate")
    if generate.is_generative(args.run):
        return generate.cmd_interpolate_samples(args)

    report = interpolate(args.run, args.first, args.second, args.out, args.steps, args.scale, args.split, args.device)
    print(f"wrote {report['file']} ({report['steps']} images, {report['width']}x{report['height']})")
    return 0
