"""Generative neural fields (issue 6), in the form of mNIF's tables.

Rows: mNIF S and L (CAVIA contexts, then a residual-MLP DDPM), a Transformer DDPM over the locality-aware
INR's tokens, and INR-GAN, on `emoji` (64^2 RGB) and `fashion-mnist` (28^2 gray); mNIF S on `voxels`
(coverage / MMD with Chamfer distance against the test shapes) and on radiance fields of many objects
(`scenes:DIR`: FID of renders). Every row trains through the `nfields` commands a user runs.

Two stages, because the FID network (87 MB) does not travel to the GPU box:

    # on the GPU: train, sample, time; rows run as concurrent processes sharing the GPU
    python benchmarks/generative.py --rows mnif-s-emoji mnif-l-emoji --stage1-seconds 300 --stage2-seconds 150 \
        --runs runs/bench-gen --out $OUT/gen --parallel 4
    # here (CPU): FID, precision and recall of each row's samples.npz against the training set (radiance
    # rows: their renders from the object set's fixed test views against the reference.npz the GPU stage
    # wrote, the training objects' own images from those views)
    python benchmarks/generative.py --score DIR... --json benchmarks/results/generative.json
    python benchmarks/generative.py --show benchmarks/results/generative.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, merge_results, title  # noqa: E402

DATASETS = ("emoji", "fashion-mnist")
# Denoisers scaled to minutes of training (ours; the papers' are 279M-parameter MLPs and a 458M DiT-L).
MLP_DENOISER = ["-o", "width=1024", "-o", "blocks=4", "--batch", "256"]
TOKEN_DENOISER = ["-o", "width=384", "-o", "depth=6", "-o", "heads=6", "--batch", "128"]


def row_commands(name: str, run: Path, t1: float, t2: float, scenes: str | None) -> list[list[str]]:
    """The `nfields` commands that train a row: stage 1 (or the GAN), then the prior."""
    stage1, prior = run / "stage1", run / "prior"
    budget1 = ["--seconds", f"{t1:g}", "--max-steps", "1000000", "--precision", "tf32", "--quiet", "--out", str(stage1)]
    # 100 DDIM steps (ours; the papers' 250) keep 5,000 samples of the Transformer prior within the device call.
    budget2 = ["--seconds", f"{t2:g}", "--steps", "1000000", "--sampling-steps", "100", "--precision", "tf32",
               "--quiet", "--out", str(prior)]
    method, _, dataset = name.partition("-")
    if name.startswith("mnif-"):
        size, dataset = name.split("-", 2)[1:]
        dataset = f"scenes:{scenes}" if dataset == "radiance" else dataset
        adapt = "autodecode" if dataset.startswith("scenes:") else "cavia"
        # Radiance fields: ~180 training objects, fewer than one batch of 256 latents; mNIF's stage-2 batch is 64.
        denoiser = [*MLP_DENOISER[:-1], "64"] if adapt == "autodecode" else MLP_DENOISER
        return [["train", "mnif", "--dataset", dataset, "--size", size.upper(), "--adapt", adapt, "--batch", "32",
                 *budget1],
                ["train", "diffusion", "--latents", str(stage1), "--class-conditional", "off", *denoiser, *budget2]]
    if method == "locality":
        return [["train", "ginr", "--dataset", dataset, "--method", "locality", *budget1],
                # 10,000 token sets (7.9 GB on the device): all 60,000 Fashion-MNIST ones ran out of memory.
                ["train", "diffusion", "--latents", str(stage1), *TOKEN_DENOISER, "--limit", "10000", *budget2]]
    if name.startswith("inr-gan-"):
        dataset = name[len("inr-gan-"):]
        return [["train", "inr-gan", "--dataset", dataset, "--seconds", f"{t1 + t2:g}", "--max-steps", "1000000",
                 "--precision", "tf32", "--quiet", "--out", str(prior)]]
    raise SystemExit(f"unknown row '{name}'")


def run_row(name: str, args: argparse.Namespace) -> dict:
    """Train a row with the CLI, then sample, time and draw it; writes OUT/NAME/{row.json, samples.npz, *.png}
    (radiance rows also reference.npz, the FID reference, and orbit videos)."""
    from nfields.jobs.generate import (cost_numbers, generate, interpolate_samples, load_generative_run,
                                       reference_set, sample)

    run, out = args.runs / name, args.out / name
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for command in row_commands(name, run, args.stage1_seconds, args.stage2_seconds, args.scenes):
        if args.reuse and (Path(command[command.index("--out") + 1]) / "metrics.json").exists():
            continue  # trained by an earlier call that ran out of time while sampling
        print(f"[{name}] nfields {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", "nfields", *command], check=True)
    prior = run / "prior"
    gen = load_generative_run(prior)
    row = {"row": name, "train_seconds": {"stage1": args.stage1_seconds, "stage2": args.stage2_seconds},
           "wall_seconds": time.time() - started}
    for stage in ("stage1", "prior"):
        metrics = run / stage / "metrics.json"
        if metrics.exists():
            row[stage] = json.loads(metrics.read_text())
    row.update(cost_numbers(gen))
    if args.speed_only:  # the cost columns alone, with nothing else on the device
        row["speed_only"] = True
        (out / "row.json").write_text(json.dumps(row, indent=1))
        return row
    n = args.shapes if gen.voxels else args.samples
    if gen.radiance:  # about --samples renders: each sample is rendered from every fixed view
        views = gen.run.stage1.cameras.poses.shape[0]
        n = -(-args.samples // views)
        reference = reference_set(gen, 0)
        np.savez_compressed(out / "reference.npz", reference=reference)
        row.update(fixed_views=views, reference_images=len(reference))
    generate(prior, n, out, seed=0)
    interpolate_samples(prior, 0, 1, out / "interpolation.png", steps=8)
    if gen.voxels:
        from nfields.jobs.generate import evaluate_generation

        scored = evaluate_generation(prior, n, samples_file=out / "samples.npz", progress=False)
        row.update({k: scored[k] for k in ("coverage", "mmd", "reference_shapes", "empty_samples")})
        (out / "samples.npz").unlink()  # scored here; too large to bring back
    else:
        save_super_resolution(gen, sample, out / "super_resolution.png")
    (out / "row.json").write_text(json.dumps(row, indent=1))
    return row


def save_super_resolution(gen, sample, path: Path, scale: int = 4) -> None:
    """One sample at its training size (pixels enlarged) beside the same field rendered at `scale` x, full and a
    centre crop: fields render at any resolution."""
    from nfields import viz

    low = sample(gen, 1, seed=0)[0]
    high = sample(gen, 1, seed=0, scale=scale)[0]
    if gen.radiance:  # renders from every fixed view: show the first
        low, high = low[0], high[0]
    enlarged = low.repeat(scale, 0).repeat(scale, 1)
    h, w = high.shape[:2]
    crop = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    viz.save_grid([[enlarged, high, enlarged[crop], high[crop]]], [gen.folder.parent.name], path,
                  f"sample 0 at 1x (enlarged) and rendered at {scale}x",
                  column_titles=["1x", f"{scale}x", "1x crop", f"{scale}x crop"])


def run_rows(args: argparse.Namespace) -> None:
    """Rows as concurrent processes (--parallel) sharing the device, then one JSON of them all."""
    if args.one:
        run_row(args.rows[0], args)
        return
    pending, active = list(args.rows), []
    while pending or active:
        while pending and len(active) < args.parallel:
            name = pending.pop(0)
            log = open(args.out / f"{name}.log", "w")
            command = [sys.executable, __file__, "--one", "--rows", name, *passthrough(args)]
            active.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for name, process in list(active):
            if process.poll() is not None:
                active.remove((name, process))
                print(f"{name}: exit {process.returncode}", flush=True)
    rows = [json.loads((args.out / r / "row.json").read_text()) for r in args.rows if (args.out / r / "row.json").exists()]
    result = {**header("generative", args.device), "parallel": args.parallel, "rows": rows}
    (args.out / "gpu.json").write_text(json.dumps(result, indent=1))
    show(result)


def passthrough(args: argparse.Namespace) -> list[str]:
    flags = ["--stage1-seconds", str(args.stage1_seconds), "--stage2-seconds", str(args.stage2_seconds),
             "--runs", str(args.runs), "--out", str(args.out), "--samples", str(args.samples),
             "--shapes", str(args.shapes), "--device", args.device]
    return flags + (["--scenes", args.scenes] if args.scenes else []) + (["--speed-only"] if args.speed_only else []) \
        + (["--reuse"] if args.reuse else [])


# -- CPU: FID, precision, recall ----------------------------------------------------------------------------

def score(folders: list[Path], reference_limit: int, device: str) -> dict:
    """FID / precision / recall of each row's samples.npz against its training set, on this machine; radiance
    rows against their reference.npz (the training objects' images from the fixed views)."""
    from nfields.data.datasets import load_dataset
    from nfields.metrics.generative import fid, inception_features, precision_recall

    parts, references = [], {}
    for folder in folders:
        # gpu.json, or (a call cut short) the rows that finished
        summary = folder / "gpu.json"
        part = (json.loads(summary.read_text()) if summary.exists() else
                {**header("generative", device), "rows": [json.loads(f.read_text()) for f in sorted(folder.glob("*/row.json"))]})
        for row in part["rows"]:
            samples_file = folder / row["row"] / "samples.npz"
            if not samples_file.exists():
                continue
            dataset = reference_dataset(row)
            with np.load(samples_file) as data:
                samples = data["samples"]
            samples = samples.reshape(-1, *samples.shape[-3:])  # radiance: (N, V, H, W, 3) renders -> images
            reference_file = folder / row["row"] / "reference.npz"
            if reference_file.exists():
                dataset = str(reference_file)
                if dataset not in references:
                    with np.load(reference_file) as data:
                        images = data["reference"]
                    print(f"reference {reference_file}: {len(images)} renders' true images", flush=True)
                    references[dataset] = inception_features(images, device=device, progress=True)
            if dataset not in references:
                size = samples.shape[1:3]
                images = load_dataset(dataset, "train", size=tuple(size)).images
                if len(images) > reference_limit:
                    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:reference_limit]
                    images = images[keep]
                print(f"reference {dataset}: {len(images)} training images", flush=True)
                references[dataset] = inception_features(images, device=device, progress=True)
            print(f"{row['row']}: {len(samples)} samples", flush=True)
            fake = inception_features(samples, device=device, progress=True)
            real = references[dataset]
            pr = precision_recall(real, fake, k=3, device=device)
            row.update(fid=fid(real, fake), precision=pr.precision, recall=pr.recall, f1=pr.f1,
                       fid_samples=len(samples), reference_images=len(real))
        parts.append(part)
    result = merge_results([], ()) if not parts else {**parts[0], "rows": [r for p in parts for r in p["rows"]]}
    result["scored_on"] = f"{device}: Inception features of the samples the GPU rows wrote"
    return result


def reference_dataset(row: dict) -> str:
    stage1 = row.get("stage1", {})
    return stage1.get("dataset") or row["row"].split("-", 2)[-1]


# -- the table -------------------------------------------------------------------------------------------

def show(result: dict) -> None:
    print(title(result, "training seconds per stage in each row"))
    print(f"{'row':<30} {'learnable':>10} {'inference':>10} {'PSNR':>6} {'FID':>7} {'prec':>6} {'rec':>6} "
          f"{'cov':>6} {'MMD':>8} {'samples/s':>10} {'GFLOPs':>8}")
    for row in result["rows"]:
        psnr = row.get("stage1", {}).get("train_psnr", row.get("stage1", {}).get("psnr"))
        cells = [f"{row['learnable_parameters'] / 1e6:9.2f}M", f"{row['inference_parameters'] / 1e3:9.1f}K",
                 f"{psnr:6.2f}" if psnr is not None else f"{'-':>6}"]
        for key, fmt in (("fid", "7.2f"), ("precision", "6.3f"), ("recall", "6.3f"), ("coverage", "6.3f"),
                         ("mmd", "8.5f")):
            cells.append(format(row[key], fmt) if key in row else f"{'-':>{int(fmt.split('.')[0])}}")
        cells += [f"{row['samples_per_second']:10,.0f}", f"{row['gflops_per_sample']:8.4f}"]
        name = row["row"] + (" (alone)" if row.get("speed_only") else "")
        print(f"{name:<30} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=[])
    parser.add_argument("--stage1-seconds", type=float, default=300.0)
    parser.add_argument("--stage2-seconds", type=float, default=150.0)
    parser.add_argument("--samples", type=int, default=5000, help="samples written per image row (for FID)")
    parser.add_argument("--shapes", type=int, default=200, help="samples per voxel row (coverage / MMD)")
    parser.add_argument("--scenes", help="the objects folder of the radiance rows")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-gen"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gen-out"))
    parser.add_argument("--parallel", type=int, default=1, help="rows trained at once on the device")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--speed-only", action="store_true",
                        help="train the rows, then time them only (samples/s, GFLOPs): no samples, no pictures")
    parser.add_argument("--reuse", action="store_true", help="keep rows' finished training stages under --runs")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--score", type=Path, nargs="+", help="GPU output folders to score here (FID)")
    parser.add_argument("--reference-limit", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--merge", type=Path, nargs="+", help="several results JSON as one (--json)")
    parser.add_argument("--show", type=Path)
    args = parser.parse_args()
    if args.merge:
        result = merge_results(args.merge)
        args.json.write_text(json.dumps(result, indent=1))
        show(result)
        return
    if args.show:
        show(json.loads(args.show.read_text()))
        return
    if args.score:
        result = score(args.score, args.reference_limit, args.device)
        show(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    run_rows(args)


if __name__ == "__main__":
    main()
