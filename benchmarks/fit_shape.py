"""3D shapes: Chamfer L1, normal consistency, IoU and seconds to fit built-in CGAL meshes with
SIREN (SDF, SIREN's loss), ReLU-PE (SDF, SIREN's loss), the hash grid (SDF, SIREN's loss) and
ReLU-PE as an occupancy network (BCE on labelled points; ReLU-PE because Occupancy Networks used
ReLU MLPs) at a fixed step budget.

    python benchmarks/fit_shape.py --prepare .carry/shape          # here: trimesh + libigl + libcgal-demo
    python benchmarks/fit_shape.py --data .carry/shape             # the GPU run, from the .npz files alone
    python benchmarks/fit_shape.py --data .carry/shape --quick --device cpu   # a tiny smoke run

The .npz files hold each normalised mesh (vertices, faces) and its labelled pools (occupancy pool:
half uniform, half near-surface; uniform IoU points), float16 points labelled after rounding; the
--data run samples surface points from the meshes with numpy. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402  (imports neither trimesh nor igl at module level)
from common import header, release, results_path, write_results  # noqa: E402
from nfields.data.shape import ShapeSamples  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402
from nfields.jobs.fit_shape import fit_shape  # noqa: E402

MESHES = ["bunny", "armadillo", "camel", "cow", "fandisk", "knot"]
#: (label, field, mode, field options)
METHODS = [("siren-sdf", "siren", "sdf", {}),
           ("relu-pe-sdf", "relu-pe", "sdf", {}),
           ("hashgrid-sdf", "hashgrid", "sdf", {}),
           ("relu-pe-occupancy", "relu-pe", "occupancy", {})]


def prepare(folder: Path, meshes: list[str], pool: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in meshes:
        started = time.perf_counter()
        signal = nfields.load_shape(name)
        samples = ShapeSamples.from_signal(signal, surface=1, evaluation=1, occupancy=pool, iou=pool,
                                           point_dtype=np.float16)
        path = folder / f"{name}.npz"
        samples.save_npz(path)
        total += path.stat().st_size
        print(f"{name:<10} {signal.describe():<42} {path.stat().st_size / 1e6:5.2f} MB "
              f"{time.perf_counter() - started:5.1f} s", flush=True)
    print(f"total {total / 1e6:.2f} MB in {folder}")


def measure(folder: Path, meshes: list[str], methods: list[str], steps: int, batch: int, resolution: int,
            surface: int, evaluation: int, device: str) -> list[dict]:
    rows = []
    for name in meshes:
        samples = ShapeSamples.load_npz(folder / f"{name}.npz", surface=surface, evaluation=evaluation)
        for label, field_name, mode, options in METHODS:
            if label not in methods:
                continue
            torch.manual_seed(0)
            field = nfields.make_field(field_name, 3, 1, **options)
            started = time.perf_counter()
            fitted, trainer = fit_shape(samples, field, steps=steps, batch_points=batch, resolution=resolution,
                                        eval_points=evaluation, mode=mode, field=field_name, device=device,
                                        progress=False, log_every=steps, checkpoint_every=10**9)
            m = fitted.metrics
            row = {"mesh": name, "method": label, "field": field_name, "mode": mode, "steps": steps,
                   "params": parameter_count(field), "seconds_fit": round(trainer.seconds, 2),
                   "seconds_total": round(time.perf_counter() - started, 2),
                   "ms_per_step": round(1000 * trainer.seconds / trainer.step, 3),
                   **{k: round(float(m[k]), 5) for k in ("chamfer_l1", "chamfer_l2", "normal_consistency",
                                                         "fscore", "iou") if k in m}}
            rows.append(row)
            print(format_row(row), flush=True)
            del fitted, trainer, field
            release(device)
    return rows


def format_row(row: dict) -> str:
    return (f"{row['mesh']:<10} {row['method']:<18} CD-L1 {row.get('chamfer_l1', float('nan')):.5f}  "
            f"NC {row.get('normal_consistency', float('nan')):.4f}  F {row.get('fscore', float('nan')):.3f}  "
            f"IoU {row.get('iou', float('nan')):.4f}  fit {row['seconds_fit']:6.2f} s  "
            f"({row['ms_per_step']:.2f} ms/step, {row['params']:,} params)")


def summary(rows: list[dict]) -> list[str]:
    lines = []
    for label, *_ in METHODS:
        mine = [r for r in rows if r["method"] == label]
        if mine:
            mean = {k: float(np.nanmean([r.get(k, np.nan) for r in mine]))
                    for k in ("chamfer_l1", "normal_consistency", "iou", "seconds_fit")}
            lines.append(f"mean {label:<18} CD-L1 {mean['chamfer_l1']:.5f}  NC {mean['normal_consistency']:.4f}  "
                         f"IoU {mean['iou']:.4f}  fit {mean['seconds_fit']:.2f} s over {len(mine)} meshes")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="write the .npz files here (needs trimesh, libigl, libcgal-demo)")
    parser.add_argument("--data", type=Path, help="run the measurements from these .npz files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--meshes", nargs="+", default=MESHES)
    parser.add_argument("--methods", nargs="+", default=[m[0] for m in METHODS])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-points", type=int, default=10_000, help="on-surface (+ as many uniform) per step")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--pool", type=int, default=80_000, help="--prepare: labelled points per pool")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run: 2 meshes, 20 steps, 32^3")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare, args.meshes, args.pool)
    if not args.data:
        parser.error("give --prepare DIR or --data DIR")

    surface, evaluation = 200_000, 100_000
    if args.quick:
        args.meshes, args.steps, args.batch_points, args.resolution = args.meshes[:2], 20, 500, 32
        surface, evaluation = 5_000, 5_000
    result = {**header("fit_shape", args.device),
              "steps": args.steps, "batch_points": args.batch_points, "resolution": args.resolution,
              "surface_samples": surface, "eval_points": evaluation, "fscore_threshold": 0.02,
              "normalisation": "bounding-box centre at 0, longest side 1.8"}
    path = results_path(args.json, f"fit_shape_{args.device}{'_quick' if args.quick else ''}")
    result["rows"] = measure(args.data, args.meshes, args.methods, args.steps, args.batch_points, args.resolution,
                             surface, evaluation, args.device)
    result["summary"] = summary(result["rows"])
    print("\n".join(result["summary"]))
    write_results(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
