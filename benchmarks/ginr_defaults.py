"""The sweep behind `nfields train ginr`'s defaults: patch size, bandwidths, batch and learning rate of IPC and
the locality-aware INR, at equal training time, on Fashion-MNIST 28^2 and emoji 64^2.

    python benchmarks/ginr_defaults.py --plan fashion --seconds 60 --json $OUT/defaults_fashion.json
    python benchmarks/ginr_defaults.py --plan emoji --groups bandwidth patch --seconds 60 ...
    python benchmarks/ginr_defaults.py --merge a.json b.json --json benchmarks/results/ginr_defaults_sweep_cuda.json

Equal time, measured honestly on a shared device: every setting is first timed alone (steps/s, one after
another, nothing else running), then trained for the steps it makes in --seconds alone, all settings side by
side (quality per step does not depend on what else runs). Test PSNR on the first 1,000 test images
(Fashion-MNIST) or all 393 (emoji), clamped, per image, averaged. Prints a table per group and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import header, merge_results, results_path, write_results  # noqa: E402
from ginr_jobs import Job, launch, time_alone  # noqa: E402

DATASETS = {"fashion": ("fashion-mnist", 1000), "emoji": ("emoji", 0)}
#: The centre of each sweep (the paper's 178^2 values unscaled, which turn 2 found 6-11 dB better on 28^2).
CENTRE = {"fashion": {"patch_size": 4}, "emoji": {"patch_size": 4}}
PATCHES = {"fashion": (2, 7), "emoji": (8,)}  # beside the centre's 4
IPC_SIGMAS = (32, 64, 128)
LOCALITY_BANDS = ((128, 32, 16), (64, 16, 8), (256, 64, 32))
BATCHES = {"locality": ((64, 2e-4), (64, 4e-4)), "ipc": ((64, 2e-4),)}
BANDWIDTH_KEYS = ("fourier_sigma", "sigmas", "query_sigma")


def bands(method: str, value) -> dict:
    if method == "ipc":
        return {"fourier_sigma": float(value)}
    s1, s2, q = value
    return {"sigmas": f"{s1:g},{s2:g}", "query_sigma": float(q)}


def job_name(short: str, job: Job) -> str:
    o = job.options
    band = (f"s{o['fourier_sigma']:g}" if "fourier_sigma" in o else
            f"s{o['sigmas'].replace(',', '-')}-q{o['query_sigma']:g}")
    return f"{short}-{job.method}-p{o['patch_size']}-{band}-b{job.batch}-lr{job.lr:g}"


def plan(short: str, groups: list[str], sigmas=IPC_SIGMAS, locality=LOCALITY_BANDS) -> list[tuple[str, Job]]:
    """(group, job) for the sweep of one dataset; steps are set from the timings later."""
    dataset, eval_limit = DATASETS[short]
    centre = CENTRE[short]
    base = Job(name="", dataset=dataset, eval_limit=eval_limit)
    out = []

    def add(group, method, band, patch=centre["patch_size"], batch=16, lr=1e-4):
        job = dataclasses.replace(base, method=method, batch=batch, lr=lr,
                                  options={"patch_size": patch, **bands(method, band)})
        out.append((group, dataclasses.replace(job, name=job_name(short, job))))

    if "bandwidth" in groups:
        for sigma in sigmas:
            add("bandwidth", "ipc", sigma)
        for band in locality:
            add("bandwidth", "locality", band)
    if "patch" in groups:
        for patch in PATCHES[short]:
            add("patch", "ipc", 64, patch)
            add("patch", "locality", locality[0], patch)
    if "batch" in groups:
        for method, settings in BATCHES.items():
            for batch, lr in settings:
                add("batch", method, 64 if method == "ipc" else locality[0], batch=batch, lr=lr)
    return out


def cost_key(job: Job) -> tuple:
    """Settings that change the time of a step (bandwidths and the rate do not)."""
    options = {k: v for k, v in job.options.items() if k not in BANDWIDTH_KEYS}
    return job.dataset, job.method, job.batch, json.dumps(options, sort_keys=True)


def show(result: dict) -> None:
    print(f"ginr_defaults on {result['device_name']}, {result['date']}: {result['seconds']:g} s alone per setting")
    for group in dict.fromkeys(r["group"] for r in result["rows"]):
        print(f"-- {group}")
        for row in sorted((r for r in result["rows"] if r["group"] == group), key=lambda r: r["name"]):
            curve = " ".join(f"{p['step']}:{p['test_psnr']:.2f}" for p in row["curve"])
            print(f"{row['name']:<46} {row['steps_per_second']:6.1f} steps/s  {row['steps']:>6} steps  "
                  f"test {row['test_psnr'] if row['test_psnr'] is not None else float('nan'):6.2f} dB   [{curve}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=list(DATASETS))
    parser.add_argument("--groups", nargs="+", default=["bandwidth", "patch", "batch"])
    parser.add_argument("--sigmas", type=float, nargs="+", help="IPC bandwidths (default %s)" % (IPC_SIGMAS,))
    parser.add_argument("--bands", nargs="+", help="locality bandwidths as S1,S2,Q (default %s)" % (LOCALITY_BANDS,))
    parser.add_argument("--seconds", type=float, default=60.0, help="training time alone per setting")
    parser.add_argument("--precision", default="tf32")
    parser.add_argument("--time-steps", type=int, default=100)
    parser.add_argument("--timing-only", action="store_true", help="time the settings alone, write --json, stop")
    parser.add_argument("--timings", type=Path, help="the --json of an earlier --timing-only run to reuse")
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=3000.0)
    parser.add_argument("--work", type=Path, default=Path("runs/ginr-defaults"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--merge", type=Path, nargs="+")
    parser.add_argument("--show", type=Path)
    parser.add_argument("--quick", action="store_true", help="a CPU smoke run: tiny models, 64 test images")
    args = parser.parse_args()
    if args.show or args.merge:
        result = json.loads(args.show.read_text()) if args.show else merge_results(args.merge)
        if args.merge:
            write_results(args.json, result)
        show(result)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sigmas = tuple(args.sigmas or IPC_SIGMAS)
    locality = tuple(tuple(float(x) for x in b.split(",")) for b in args.bands) if args.bands else LOCALITY_BANDS
    jobs = [(g, dataclasses.replace(j, precision=args.precision))
            for g, j in plan(args.plan, args.groups, sigmas, locality)]
    if args.quick:
        tiny = {"width": 32, "depth": 1, "heads": 2, "hidden_width": 32}
        jobs = [(g, dataclasses.replace(j, options={**j.options, **tiny}, eval_limit=64)) for g, j in jobs]
    path = results_path(args.json, f"ginr_defaults_{args.plan}_{device}")
    work = args.work / args.plan
    work.mkdir(parents=True, exist_ok=True)
    if args.timings:
        speeds = {tuple(k): v for k, v in json.loads(args.timings.read_text())["speeds"]}
    else:
        classes = list({cost_key(j): dataclasses.replace(j, time_only=args.time_steps) for _, j in jobs}.values())
        speeds = {cost_key(Job(**t["job"])): t["steps_per_second"] for t in time_alone(classes, work / "timings.json")}
    result = {**header("ginr_defaults", device), "precision": args.precision, "seconds": args.seconds,
              "plan": args.plan, "speeds": [[list(k), v] for k, v in speeds.items()], "rows": []}
    if args.timing_only:
        write_results(path, result)
        return
    timed = []
    for group, job in jobs:
        speed = speeds.get(cost_key(job))
        if not speed:
            continue
        steps = max(4, round(speed * args.seconds))
        timed.append((group, speed, dataclasses.replace(job, steps=steps, eval_at=[steps // 4, steps // 2])))
    for (group, speed, job), run in zip(timed, launch([j for _, _, j in timed], work, args.parallel, args.timeout)):
        final = run["curve"][-1] if run["curve"] and run["curve"][-1]["step"] >= job.steps else None
        result["rows"].append({"group": group, "name": job.name, "dataset": job.dataset, "method": job.method,
                               "options": job.options, "batch": job.batch, "lr": job.lr, "steps_per_second": speed,
                               "steps": job.steps, "test_psnr": final["test_psnr"] if final else None,
                               "curve": run["curve"], "peak_memory_gb": run.get("peak_memory_gb"),
                               "error": run.get("error")})
    write_results(path, result)
    show(result)


if __name__ == "__main__":
    main()
