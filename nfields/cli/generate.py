"""`nfields generate`, and the generative side of `nfields eval` (--fid) and `nfields interpolate`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="sample new fields from a 'train diffusion' or 'train inr-gan' run",
                       description="Writes samples.png (a grid), samples.npz (every sample, uint8) and, for voxel "
                                   "fields, sample_NNN.ply meshes by marching cubes; radiance fields are rendered "
                                   "from the object set's fixed test views (samples.npz: N x views x H x W x 3) "
                                   "with orbit videos sample_NNN.mp4 of the first 4. Samples are fields: --scale "
                                   "renders them at any resolution.")
    g.add_argument("run", type=Path, help="a run folder of 'nfields train diffusion' or 'nfields train inr-gan'")
    g.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scale", type=float, default=1.0, help="output pixels (voxels) per training pixel, e.g. 4")
    g.add_argument("--class", dest="classes", type=int, nargs="+", metavar="C",
                   help="class-conditional priors: the class of every sample (one) or of each (n)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the run's)")
    g.add_argument("--out", type=Path, required=True, help="output folder")
    g.add_argument("--device", default="auto")
    g.set_defaults(handler=cmd_generate)


def add_eval_arguments(e: argparse.ArgumentParser) -> None:
    """Flags of `nfields eval` on generative runs."""
    e.add_argument("--fid", action="store_true",
                   help="generative runs: FID, precision and recall against the training set (voxels: coverage "
                        "and MMD against the test shapes), parameters, GFLOPs and samples/s")
    e.add_argument("--n", type=int, default=10000,
                   help="--fid: samples scored (default 10000; radiance fields: each rendered from every fixed view)")
    e.add_argument("--reference-limit", type=int, default=10000,
                   help="--fid: at most this many training images, drawn at random (default 10000)")
    e.add_argument("--samples", type=Path, help="--fid: score the samples.npz of a 'generate' call instead")
    e.add_argument("--seed", type=int, default=0)


def is_generative(run: Path) -> bool:
    from ..jobs.train_diffusion import is_diffusion_run
    from ..jobs.train_inr_gan import is_inr_gan_run

    return is_diffusion_run(run) or is_inr_gan_run(run)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..jobs.generate import generate

    report = generate(args.run, args.n, args.out, args.seed, args.scale, args.guidance, args.classes, args.device)
    shape = "x".join(str(s) for s in report["shape"])
    videos = f", {len(report['videos'])} orbit videos" if report.get("videos") else ""
    print(f"wrote {report['samples']} samples ({shape}) to {report['out']}: samples.png, samples.npz{videos}")
    if report.get("video_note"):
        print(f"note: {report['video_note']}")
    return 0


def cmd_eval_generation(args: argparse.Namespace) -> int:
    from ..jobs.generate import evaluate_generation

    m = evaluate_generation(args.run, args.n, args.seed, args.reference_limit, args.device, samples_file=args.samples)
    if "fid" in m:
        scored = f"{m['renders']} renders of {m['samples']} samples" if "renders" in m else f"{m['samples']} samples"
        quality = (f"FID {m['fid']:.2f}, precision {m['precision']:.3f}, recall {m['recall']:.3f} "
                   f"({scored} against {m['reference_images']} training images)")
    else:
        quality = (f"coverage {m['coverage']:.3f}, MMD {m['mmd']:.5f} ({m['samples']} samples against "
                   f"{m['reference_shapes']} test shapes)")
    unit = m.get("speed_unit", "samples")
    print(f"{quality}\n{m['learnable_parameters']:,} learnable parameters, {m['inference_parameters']:,} per "
          f"field; {m['gflops_per_sample']:.4f} GFLOPs and {m['samples_per_second']:,.0f} {unit}/s at "
          f"{m['speed_size']}² on {m['speed_device']}\nfiles: {args.run}/eval_generation.json")
    return 0


def cmd_interpolate_samples(args: argparse.Namespace) -> int:
    from ..jobs.generate import interpolate_samples

    out = interpolate_samples(args.run, args.first, args.second, args.out, args.steps, args.scale, args.device)
    print(f"wrote {out} ({args.steps} samples from seed {args.first} to seed {args.second})")
    return 0
