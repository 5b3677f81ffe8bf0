"""`nfields make-scene`: render a mesh (or pybullet's object set) into NeRF-synthetic scene folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NfieldsError


def add_parser(sub) -> None:
    p = sub.add_parser("make-scene", help="render a mesh into a multi-view scene folder (NeRF-synthetic layout)",
                       description="Render a mesh with mitsuba 3 (CPU path tracer) into transforms_{train,val,test}"
                                   ".json and RGBA PNGs in NeRF-synthetic's layout; or, with --objects K, one such "
                                   "folder per object of pybullet's random object set.")
    p.add_argument("source", nargs="?", metavar="SOURCE", help="mesh (OBJ, PLY, OFF, STL, GLB) or built-in mesh name, e.g. duck, "
                                             "bunny ('nfields datasets')")
    p.add_argument("--objects", type=int, metavar="K",
                   help="instead of SOURCE: the first K of pybullet's 1,000 random objects, one folder each")
    p.add_argument("--views", type=int, metavar="N", help="training views (default 100; 50 with --objects)")
    p.add_argument("--size", type=int, metavar="S", help="image side in pixels (default 200; 64 with --objects)")
    p.add_argument("--test-views", type=int, default=8, metavar="M", help="test views on the 30-degree circle (default 8)")
    p.add_argument("--val-views", type=int, metavar="V", help="validation views (default 4; 0 with --objects)")
    p.add_argument("--depth", action="store_true", help="also write 16-bit depth PNGs (distance along the camera axis)")
    p.add_argument("--samples", type=int, metavar="SPP", help="samples per pixel (default 64)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random cameras (default 0)")
    p.add_argument("--up", choices=("y", "z"), default="y", help="the mesh file's up axis (default y); the scene is z-up")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the scene folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..data.make_scene import DEFAULT_SAMPLES, make_object_scenes, make_scene

    if (args.source is None) == (args.objects is None):
        raise NfieldsError("give either a SOURCE mesh or --objects K, not both." if args.source is not None
                           else "give a SOURCE mesh (a file or a built-in name such as 'duck') or --objects K.")
    common = dict(test_views=args.test_views, depth=args.depth, seed=args.seed, up=args.up,
                  samples=DEFAULT_SAMPLES if args.samples is None else args.samples,
                  progress=not args.quiet, overwrite=args.overwrite)
    if args.objects is not None:
        report = make_object_scenes(args.objects, args.out, views=_or(args.views, 50), size=_or(args.size, 64),
                                    val_views=_or(args.val_views, 0), **common)
        skipped = f", skipped {len(report['skipped'])}" if report["skipped"] else ""
        print(f"wrote {report['objects']} object scenes ({report['images']} images {report['size']}x{report['size']}, "
              f"{report['samples']} spp{skipped}) to {report['out']} in {report['seconds']:.1f} s; "
              f"index {report['index']}")
        return 0
    report = make_scene(args.source, args.out, views=_or(args.views, 100), size=_or(args.size, 200),
                        val_views=_or(args.val_views, 4), **common)
    counts = ", ".join(f"{report[split]} {split}" for split in ("train", "val", "test") if split in report)
    print(f"wrote {report['out']}: {counts} views of {report['source']} ({report['mesh']}) at "
          f"{report['size']}x{report['size']}, {report['samples']} spp{', with depth' if report['depth'] else ''} "
          f"in {report['seconds']:.1f} s")
    return 0


def _or(value, default):
    return default if value is None else value
