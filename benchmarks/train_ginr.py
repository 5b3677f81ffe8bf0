"""Generalizable INRs at equal budget: every method on Fashion-MNIST and emoji, the locality-aware INR's
ablations (paper Tables 3-4), light-field novel views against the number of support views, throughput
(instances/s), peak GPU memory and GPU utilisation, and test-time optimisation against fitting one
SIREN per image from scratch (paper §4.5).

    python benchmarks/train_ginr.py --rows fashion-locality emoji-ipc --seconds 240 --json $OUT/a.json \\
        --runs $OUT/runs                       # train rows; each gets the same seconds of training
    python benchmarks/train_ginr.py --gpus 4 --rows ... --json $OUT/all.json   # rows spread over 4 GPUs
    python benchmarks/train_ginr.py --tto RUN --images 10 --json $OUT/tto.json  # TTO curve vs SIREN
    python benchmarks/train_ginr.py --merge a.json b.json --json benchmarks/results/train_ginr_cuda.json
    python benchmarks/train_ginr.py --quick    # a CPU smoke run of two tiny rows

Every row trains with the paper's Appendix A settings scaled to the image size (nfields.jobs.train_ginr
.paper_options), batch 16 (light fields 32, as Appendix A), Adam at the method's default rate, TF32
matmuls for every method alike (ours: an equal budget buys each method the same GPU seconds), and is
evaluated on the whole test split (PSNR per instance, clamped, averaged). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import header, merge_results, release, title, write_results  # noqa: E402
from nfields.jobs.train_ginr import TrainGINRConfig, run_train_ginr  # noqa: E402

OBJECTS = os.environ.get("NFIELDS_OBJECTS", ".carry/objects")
TTO_LRS = (1e-3, 1e-2)
DATASETS = {"fashion": "fashion-mnist", "emoji": "emoji", "objects": f"scenes:{OBJECTS}"}
EVAL_LIMIT = 2000  # Fashion-MNIST test images evaluated per row (the autodecoder fits each one; all 10,000: slow)
METHODS = ["transinr", "ipc", "locality", "functa", "autodecoder"]
ABLATIONS = {  # paper Tables 3 and 4, on the row's dataset (bandwidths given as multiples of sigma_q's place)
    "no-sta": dict(aggregation="ipc"),
    "no-multiband": dict(multiband=False),
    "reversed-bands": "reversed",  # (sigma_2, sigma_1): low frequencies first
    "query-high": "query-high",  # sigma_q = sigma_1
}


def row_settings(name: str) -> tuple[str, str, dict]:
    """'emoji-locality', 'emoji-locality-no-sta', 'objects-ipc' -> (dataset, method, method options)."""
    dataset, method, *variant = name.split("-", 2)
    if dataset not in DATASETS or method not in METHODS:
        raise SystemExit(f"unknown row '{name}': use DATASET-METHOD[-ABLATION] with DATASET in {list(DATASETS)} "
                         f"and METHOD in {METHODS}")
    options: dict = {}
    if variant:
        ablation = ABLATIONS[variant[0]]
        if isinstance(ablation, dict):
            options.update(ablation)
        else:
            from nfields.jobs.train_ginr import paper_options

            size = {"fashion": 28, "emoji": 64}[dataset]
            paper = paper_options("locality", size, size, False)
            sigmas = [float(s) for s in paper["sigmas"].split(",")]
            if ablation == "reversed":
                options["sigmas"] = ",".join(f"{s:g}" for s in reversed(sigmas))
            else:
                options["query_sigma"] = sigmas[0]
    return DATASETS[dataset], method, options


class Utilisation:
    """Mean GPU utilisation (nvidia-smi, sampled every 0.5 s) while a row trains."""

    def __init__(self):
        self.process = None
        if torch.cuda.is_available():
            index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
            try:
                self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                                 "-i", index, "-lms", "500"], stdout=subprocess.PIPE, text=True)
            except OSError:
                self.process = None

    def stop(self) -> float | None:
        if self.process is None:
            return None
        self.process.terminate()
        values = [float(x) for x in self.process.stdout.read().split() if x.strip().replace(".", "").isdigit()]
        return sum(values) / len(values) if values else None


def run_row(name: str, seconds: float, runs: Path, device: str, quick: bool) -> dict:
    dataset, method, options = row_settings(name)
    light = dataset.startswith("scenes:")
    config = TrainGINRConfig(source=dataset, field=method, field_options=options, steps=10**9, batch=32 if light else 16,
                             seconds=seconds, device=device, precision="tf32" if device == "cuda" else "fp32",
                             eval_every=0, log_every=50, checkpoint_every=10**9,
                             eval_limit=EVAL_LIMIT if dataset == "fashion-mnist" else 0)
    if quick:
        tiny = (dict(width=32, depth=1, heads=2) if method in ("transinr", "ipc", "locality")
                else dict(hidden_width=32, latent_dim=32, hidden_layers=2))
        if method == "autodecoder":
            tiny["fit_steps"] = 10
        config = TrainGINRConfig(**{**config.__dict__, "field_options": {**tiny, **options}, "limit": 64,
                                    "eval_limit": 16, "size": 16, "log_every": 5})
    monitor = Utilisation()
    started = time.perf_counter()
    metrics = run_train_ginr(config, runs / name, overwrite=True, progress=False)
    utilisation = monitor.stop()
    row = {"row": name, "dataset": dataset, "method": method, "options": options, **metrics,
           "gpu_utilisation_percent": utilisation, "wall_seconds": time.perf_counter() - started}
    release(device)
    return row


def tto_curve(run: Path, images: int, steps: int, siren_steps: int, device: str) -> dict:
    """Paper §4.5 on `images` test images: the run's one-pass encoding, test-time optimisation of its latents,
    and one SIREN per image fitted from scratch; mean PSNR against seconds for each."""
    import nfields
    from nfields.jobs.ginr_outputs import load_ginr_run, optimize_latents, tto_record_steps
    from nfields.jobs.train_ginr import batch_psnr

    loaded = load_ginr_run(run, device)
    data = loaded.instances("test", images)
    batch = data.float_images(torch.arange(len(data), device=loaded.device))
    with torch.no_grad():
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        latents = loaded.model.encode(batch)
        one_pass = float(batch_psnr(loaded.model.render(latents), batch).mean())
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        encode_seconds = time.perf_counter() - started
    curves = {}
    for lr in TTO_LRS:  # the paper does not give its TTO learning rate
        _, curve = optimize_latents(loaded.model, batch, latents, steps, lr, tto_record_steps(steps))
        for point in curve:
            point["seconds"] += encode_seconds
        curves[f"{lr:g}"] = curve
    record = set(tto_record_steps(siren_steps))
    siren_points: dict[int, list] = {}
    for image in batch:  # one at a time, as the paper's per-sample FFNets
        field = nfields.make_field("siren", 2, image.shape[-1]).to(loaded.device)
        target = image.reshape(1, -1, image.shape[-1])
        fitted_curve = fit_from_scratch(field, loaded.model.coords(1), target, siren_steps, record, loaded.device)
        for step, psnr, seconds in fitted_curve:
            siren_points.setdefault(step, []).append((psnr, seconds))
    siren = [{"step": s, "psnr": sum(p for p, _ in v) / len(v), "seconds": sum(t for _, t in v) / len(v)}
             for s, v in sorted(siren_points.items())]
    return {"run": str(run), "method": loaded.config.field, "dataset": loaded.config.source, "images": len(data),
            "one_pass_psnr": one_pass, "encode_seconds_per_batch": encode_seconds, "tto_by_lr": curves,
            "siren_per_image": siren, "note": "TTO seconds are for the whole batch of images at once; SIREN seconds "
                                              "are per image (mean), each fitted alone from a random init"}


def fit_from_scratch(field, coords: torch.Tensor, target: torch.Tensor, steps: int, record: set[int],
                     device: torch.device) -> list[tuple[int, float, float]]:
    """SIREN on one image: Adam 1e-4 on every pixel (the official setting); (step, PSNR, seconds) at `record`."""
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-4)
    out, seconds = [], 0.0
    for step in range(steps + 1):
        if step in record:
            with torch.no_grad():
                mse = (field(coords).clamp(0, 1) - target).pow(2).mean()
            out.append((step, float(-10 * torch.log10(mse)), seconds))
        if step == steps:
            break
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = (field(coords) - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    return out


def format_row(row: dict) -> str:
    views = " ".join(f"{k[5:6]}v {v:.2f}" for k, v in row.items() if k.startswith("psnr_") and k.endswith("views"))
    memory = f"{row['peak_memory_gb']:.1f} GB" if row.get("peak_memory_gb") else "-"
    util = f"{row['gpu_utilisation_percent']:.0f}%" if row.get("gpu_utilisation_percent") is not None else "-"
    locality = f"{row['locality_top10']:.2f}" if "locality_top10" in row else "-"
    where = f"{row['device_name'].split()[1]:<5} {row['budget_seconds']:3.0f}s " if "budget_seconds" in row else ""
    return (f"{where}{row['row']:<32} test {row['psnr']:6.2f} dB {views:<24} train {row.get('train_psnr', float('nan')):6.2f}  "
            f"{row['epochs']:6.2f} ep  {row['instances_per_second']:8,.0f} inst/s  {memory:>8}  util {util:>4}  "
            f"top10 {locality}  sim {row.get('token_similarity', float('nan')):.2f}  {row['params']:>11,} params")


def show(result: dict) -> None:
    budget = f"{result['seconds']:.0f} s of training per row" if "seconds" in result else "budgets per row"
    print(title(result, budget))
    for row in result.get("rows", []):
        print(format_row(row))
    for curve in result.get("tto", []):
        print(f"TTO ({curve.get('device_name', result['device_name'])}) {curve['method']} on {curve['dataset']} ({curve['images']} images): one pass "
              f"{curve['one_pass_psnr']:.2f} dB")
        for lr, points in curve["tto_by_lr"].items():
            print(f"   TTO lr {lr}: " + ", ".join(f"{p['seconds']:.2f}s {p['psnr']:.2f}" for p in points[::4]))
        print("   SIREN per image: " + ", ".join(f"{p['seconds']:.2f}s {p['psnr']:.2f}"
                                                for p in curve["siren_per_image"][::4]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=[])
    parser.add_argument("--seconds", type=float, default=240.0, help="training seconds per row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-ginr"))
    parser.add_argument("--gpus", type=int, default=0, help="spread the rows over this many GPUs (one process each)")
    parser.add_argument("--tto", type=Path, nargs="+", help="runs whose test-time optimisation curve to measure")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--tto-steps", type=int, default=300)
    parser.add_argument("--siren-steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--merge", type=Path, nargs="+")
    parser.add_argument("--show", type=Path)
    args = parser.parse_args()
    if args.show:
        show(json.loads(args.show.read_text()))
        return
    if args.merge:
        result = merge_results(args.merge, ("rows", "tto"))
        write_results(args.json, result)
        show(result)
        return
    if args.quick:
        args.rows, args.seconds = args.rows or ["fashion-locality", "fashion-functa"], 5.0
    if args.gpus:
        spread(args)
        return
    result = {**header("train_ginr", args.device), "seconds": args.seconds, "rows": [], "tto": []}
    for name in args.rows:
        row = run_row(name, args.seconds, args.runs, args.device, args.quick)
        result["rows"].append(row)
        print(format_row(row), flush=True)
        if args.json:  # after every row, so a time limit keeps what finished
            write_results(args.json, result)
    for run in args.tto or []:
        result["tto"].append(tto_curve(run, args.images, args.tto_steps, args.siren_steps, args.device))
        if args.json:
            write_results(args.json, result)
    show(result)


def spread(args: argparse.Namespace) -> None:
    """Rows round-robin over `--gpus` processes, one GPU each; their JSON merged into --json."""
    parts, processes = [], []
    for gpu in range(args.gpus):
        rows = args.rows[gpu::args.gpus]
        if not rows:
            continue
        part = args.json.with_name(f"{args.json.stem}.gpu{gpu}.json")
        parts.append(part)
        command = [sys.executable, __file__, "--rows", *rows, "--seconds", str(args.seconds), "--runs", str(args.runs),
                   "--json", str(part)]
        processes.append(subprocess.Popen(command, env={**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}))
    for process in processes:
        process.wait()
    existing = [p for p in parts if p.exists()]
    if existing:
        subprocess.run([sys.executable, __file__, "--merge", *map(str, existing), "--json", str(args.json)])


if __name__ == "__main__":
    main()
