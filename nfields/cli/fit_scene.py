"""`nfields fit scene`."""

from __future__ import annotations

import argparse

from .common import add_fit_arguments, fit_settings

SCENE_SETTINGS = ("size", "batch_rays", "seconds", "eval_at_seconds", "test_views", "chunk_rays", "precrop_steps",
                  "precrop_fraction")


def add_parser(sub) -> None:
    p = sub.add_parser("scene", help="fit one multi-view scene (radiance field or light field)",
                       description="Fit a scene in the NeRF-synthetic layout (transforms_{train,val,test}.json "
                                   "beside the images; 'nfields make-scene' builds one) and render its test views.")
    add_fit_arguments(p, "scene folder with transforms_train.json (and transforms_test.json)",
                      field_help="nerf, hashgrid (default) or lightfield")
    p.add_argument("--size", type=int, help="resize the views to this width in pixels (e.g. 400 for 800² scenes)")
    p.add_argument("--batch-rays", type=int, help="rays per step (default 4096)")
    p.add_argument("--eval-at-seconds", type=float, nargs="+", metavar="S",
                   help="also evaluate when training time passes these seconds")
    p.add_argument("--test-views", type=int, help="evaluate on the first N test views (default all)")
    p.add_argument("--chunk-rays", type=int, help="rays rendered at once when evaluating (default 4096)")
    p.add_argument("--precrop-steps", type=int, help="first steps on the centre of each view only (default: nerf 500)")
    p.add_argument("--precrop-fraction", type=float, help="the centre's share of each side (default 0.5)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_scene import FitSceneConfig, run_fit_scene

    config, explicit, out = fit_settings(args, FitSceneConfig, "fit-scene", SCENE_SETTINGS,
                                         "a scene folder (with transforms_train.json; see 'nfields make-scene')")
    metrics = run_fit_scene(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            explicit=explicit)
    print(f"{metrics['field']} on {metrics['source']} ({metrics['device']}): test PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.4f} over {metrics['test_views']} views after {metrics['steps']} steps in "
          f"{metrics['seconds']:.1f} s ({metrics['rays_per_second']:,.0f} rays/s, {metrics['params']:,} parameters)"
          f"\nfiles: {out}/test/, {out}/test_views.png, {out}/curve.png, {out}/metrics.json")
    return 0
