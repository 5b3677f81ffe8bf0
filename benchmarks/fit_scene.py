"""Every scene field on built-in scenes: test PSNR/SSIM after 30 s, 2 min and 5 min of training,
rays per second, peak GPU memory, and render speed (frames per second of one 200x200 view).

    python benchmarks/fit_scene.py --prepare .carry/scenes     # here, with mitsuba: render the scenes
    python benchmarks/fit_scene.py --data .carry/scenes --device cuda --scenes duck --fields hashgrid \\
        --json $OUT/duck_hashgrid.json                         # the GPU run, one or more (scene, field) rows
    python benchmarks/fit_scene.py --data .carry/scenes --device cpu --quick   # a tiny smoke run
    python benchmarks/fit_scene.py --merge a.json b.json ... --json benchmarks/results/fit_scene_cuda.json

The scenes (our choice): built-in meshes rendered by `nfields make-scene` with mitsuba's path
tracer, 100 random upper-hemisphere training views and 8 test views on a circle at 30 degrees,
200x200, white background. Each field runs with its defaults and 4,096 rays a step; time is
training time (evaluations stop the clock). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402
from common import header, merge_results, release, title, write_results  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402
from nfields.jobs.fit_scene import evaluation_views, save_views_picture  # noqa: E402

SCENES = ["duck", "bunny", "armadillo"]
FIELDS = ["hashgrid", "nerf", "lightfield"]
VIEWS, TEST_VIEWS, SIZE = 100, 8, 200
MARKS = [30.0, 120.0, 300.0]
QUICK = dict(views=6, test_views=2, size=24, marks=[2.0, 4.0], batch_rays=64, render_size=24)
BATCH_RAYS = 4096
RENDER_SIZE, RENDER_CHUNK = 200, 1 << 14


def prepare(folder: Path, quick: bool) -> None:
    from nfields.data.make_scene import make_scene

    views, test_views, size = (QUICK["views"], QUICK["test_views"], QUICK["size"]) if quick else (VIEWS, TEST_VIEWS, SIZE)
    for name in SCENES:
        out = folder / name
        if (out / "transforms_train.json").exists():
            print(f"{out} exists; kept")
            continue
        report = make_scene(name, out, views=views, size=size, test_views=test_views, val_views=0, seed=0)
        print(f"wrote {out}: {report}")


def render_fps(fitted: nfields.FittedScene, device: str, size: int, repeats: int = 3) -> float:
    pose = fitted.orbit(1)[0]
    fitted.render(pose, size, size, RENDER_CHUNK)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fitted.render(pose, size, size, RENDER_CHUNK)
    if device == "cuda":
        torch.cuda.synchronize()
    return repeats / (time.perf_counter() - started)


def run_one(scene: nfields.Scene, name: str, field: str, marks: list[float], device: str, batch_rays: int,
            render_size: int, pictures: Path | None) -> dict:
    torch.manual_seed(0)
    model = nfields.make_scene_field(field, nfields.SceneBounds(scene.near, scene.far, scene.bound))
    # The clock is read at log points: every 10 steps keeps the marks within a fraction of a second.
    fitted, trainer = nfields.fit_scene(scene, model, steps=10**9, seconds=max(marks), eval_at_seconds=marks[:-1],
                                        device=device, progress=False, checkpoint_every=10**9, log_every=10,
                                        batch_rays=batch_rays)
    evals = []
    for mark, e in zip(marks, trainer.history.evals):
        evals.append({"mark_seconds": mark, "seconds": round(e["seconds"], 2), "step": e["step"],
                      "psnr": round(e["psnr"], 3), "ssim": round(e["ssim"], 4)})
    row = {"scene": name, "field": field, "params": parameter_count(model), "steps": trainer.step,
           "seconds": round(trainer.seconds, 2), "rays_per_second": round(trainer.step * batch_rays / trainer.seconds),
           "ms_per_step": round(1000 * trainer.seconds / trainer.step, 3), "evals": evals,
           "psnr_per_view_final": fitted.metrics["psnr_per_view"],
           "peak_memory_mb": fitted.metrics.get("peak_memory_mb"),
           "render_fps": round(render_fps(fitted, device, render_size), 3)}
    if pictures is not None:
        test = evaluation_views(scene)
        final = evals[-1]
        save_views_picture(test, fitted.renders, list(range(0, len(test), 2))[:4], fitted.metrics["psnr_per_view"],
                           scene.near, scene.far, model.has_density, pictures / f"{name}_{field}.png",
                           f"{field} on {name} after {final['seconds']:.0f} s: {final['psnr']:.2f} dB "
                           f"(mean of {len(test)} test views)")
    return row


def format_row(row: dict) -> str:
    marks = "  ".join(f"{e['mark_seconds']:>4.0f}s {e['psnr']:6.2f} dB/{e['ssim']:.3f}" for e in row["evals"])
    memory = f"{row['peak_memory_mb']:,.0f} MB" if row.get("peak_memory_mb") else "-"
    return (f"{row['scene']:<10} {row['field']:<10} {marks}  {row['rays_per_second']:>10,} rays/s  "
            f"{row['ms_per_step']:7.2f} ms/step  {row['render_fps']:7.2f} fps  {memory}")


def show(result: dict) -> None:
    print(title(result, f"{result['train_views']} training views at {result['size']}², {result['batch_rays']:,} rays a step"))
    for row in result["rows"]:
        print(format_row(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scenes", nargs="+", default=SCENES)
    parser.add_argument("--fields", nargs="+", default=FIELDS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pictures", type=Path, help="folder for a test-view picture per row")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the JSON of several runs into --json")
    parser.add_argument("--show", type=Path)
    args = parser.parse_args()
    if args.show:
        show(json.loads(args.show.read_text()))
        return
    if args.merge:
        result = merge_results(args.merge)
        write_results(args.json, result)
        show(result)
        return
    if args.prepare:
        prepare(args.prepare, args.quick)
        return
    marks = QUICK["marks"] if args.quick else MARKS
    batch_rays = QUICK["batch_rays"] if args.quick else BATCH_RAYS
    render_size = QUICK["render_size"] if args.quick else RENDER_SIZE
    result = {**header("fit_scene", args.device), "train_views": QUICK["views"] if args.quick else VIEWS,
              "test_views": QUICK["test_views"] if args.quick else TEST_VIEWS,
              "size": QUICK["size"] if args.quick else SIZE, "batch_rays": batch_rays, "marks_seconds": marks,
              "render_size": render_size, "rows": []}
    for name in args.scenes:
        scene = nfields.load_scene(args.data / name)
        for field in args.fields:
            row = run_one(scene, name, field, marks, args.device, batch_rays, render_size, args.pictures)
            result["rows"].append(row)
            print(format_row(row), flush=True)
            if args.json:  # after every row, so a time limit keeps what finished
                write_results(args.json, result)
            release(args.device)


if __name__ == "__main__":
    main()
