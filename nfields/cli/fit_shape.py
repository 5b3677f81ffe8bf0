"""`nfields fit shape`."""

from __future__ import annotations

import argparse

from .common import add_fit_arguments, fit_settings

SHAPE_SETTINGS = ("mode", "sdf_loss", "batch_points", "resolution", "surface_samples", "pool_points", "eval_points")


def add_parser(sub) -> None:
    p = sub.add_parser("shape", help="fit one 3D shape (signed distance or occupancy) with one field",
                       description="Fit a 3D shape (a mesh, an oriented point cloud or a built-in mesh) with a "
                                   "neural field, then extract its surface with marching cubes.")
    add_fit_arguments(p, "mesh (OFF, PLY, OBJ, STL), oriented point cloud (.xyz 'x y z nx ny nz', PLY with "
                         "normals) or built-in mesh name, e.g. bunny")
    p.add_argument("--mode", help="sdf (default): signed distance; occupancy: inside/outside logits")
    p.add_argument("--sdf-loss", help="siren (default): SIREN's loss on oriented points; regression: L1 to true "
                                      "signed distances (watertight meshes only)")
    p.add_argument("--batch-points", type=int, help="points per step (default 10000; siren adds as many uniform ones)")
    p.add_argument("--resolution", type=int, help="marching-cubes grid points per side (default 128)")
    p.add_argument("--surface-samples", type=int, help="on-surface training points sampled once (default 200000)")
    p.add_argument("--pool-points", type=int, help="labelled points for occupancy/regression (default 100000)")
    p.add_argument("--eval-points", type=int, help="surface and IoU points for the metrics (default 100000)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_shape import FitShapeConfig, run_fit_shape

    config, explicit, out = fit_settings(args, FitShapeConfig, "fit-shape", SHAPE_SETTINGS,
                                         "a shape (a mesh or point-cloud file or a built-in name such as 'bunny'; "
                                         "see 'nfields datasets')")
    metrics = run_fit_shape(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            explicit=explicit)

    def number(key: str) -> str:
        value = metrics.get(key)
        return "-" if value is None or value != value else f"{value:.4f}"

    print(f"{metrics['field']} {metrics['objective']} on {metrics['source']} ({metrics['device']}): Chamfer L1 "
          f"{number('chamfer_l1')}, normal consistency {number('normal_consistency')}, F-score "
          f"{number('fscore')}, IoU {number('iou')} after {metrics['steps']} steps in {metrics['seconds']:.1f} s "
          f"({metrics['params']:,} parameters)\nfiles: {out}/mesh.ply, {out}/preview.png, {out}/metrics.json")
    return 0
