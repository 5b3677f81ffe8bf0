"""Training-step time of SIREN and the ReLU+PE MLP: plain PyTorch (fp32, tf32), torch.compile (tf32), PyTorch's
kernels replayed as one CUDA graph, and the fused Triton kernels (nfields.kernels.fused_mlp, tf32) eager and as one
CUDA graph (the step `nfields fit` runs by default on CUDA); and SIREN's PSNR on `camera`, fused vs PyTorch fp32
(evaluated every 25 steps; at steps 500 and 2000 the single value and the median over the last 10% of steps).

    python benchmarks/fit_kernels.py                          # the GPU table (all parts)
    python benchmarks/fit_kernels.py --parts siren            # one section
    python benchmarks/fit_kernels.py --quick --device cpu     # a tiny run that checks the script (no fused rows)

A step is a whole full-batch training step: forward, MSE loss, backward and the field's Adam step. Times are
the median over `--repeats` batches of `--steps` steps (CUDA events), after a warm-up. Matmul FLOPs per step:
6 N sum_l(in_l out_l) (2 for the forward, 4 for the two backward products of every layer, the first layer's
input gradient included although no path computes it): 77.6 GFLOP for SIREN 2-256x4-1 on 256^2. The ceiling
is a large torch.mm (8192^3) measured in the same run.

Prints a table and writes JSON (device, date, numbers) to --json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402
from common import header, release, results_path, write_results  # noqa: E402
from nfields.kernels import triton_available  # noqa: E402
from nfields.train.graph import GraphedStep  # noqa: E402
from nfields.train.device import set_precision  # noqa: E402

PARTS = ("ceiling", "siren", "relu-pe", "quality")
#: The fused rows are compared with these (plain PyTorch, torch.compile, and PyTorch's kernels in one CUDA graph).
BASELINES = ("torch-tf32", "compile-tf32", "torch-tf32-graph")
COMPILE_MODE = "default"  # max-autotune-no-cudagraphs would add minutes of autotuning per shape


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, steps: int, repeats: int, warmup: int) -> float:
    """Median milliseconds per call of fn over `repeats` batches of `steps` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times.append(1000 * (time.perf_counter() - t0) / steps)
    return statistics.median(times)


def ceiling(device: str, quick: bool) -> dict:
    """TFLOP/s of a large square torch.mm in tf32 and in fp32."""
    size = 1024 if quick or device != "cuda" else 8192
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    result = {"mm_size": size}
    for precision in ("tf32", "fp32"):
        set_precision(precision)
        ms = timed(lambda: torch.mm(a, b), device, steps=2 if quick else 20, repeats=3, warmup=2)
        result[f"{precision}_tflops"] = round(2 * size**3 / ms / 1e9, 1)
    set_precision("fp32")
    print(f"matmul ceiling ({size}^3 torch.mm): tf32 {result['tf32_tflops']} TFLOP/s, "
          f"fp32 {result['fp32_tflops']} TFLOP/s", flush=True)
    return result  # a and b are freed here; the next part's release() hands their memory back


def matmul_flops(field: torch.nn.Module, rows: int) -> float:
    linears = [m for m in field.modules() if isinstance(m, torch.nn.Linear)]
    return 6.0 * rows * sum(m.in_features * m.out_features for m in linears)


def step_time(name: str, options: dict, size: int, variant: str, device: str, steps: int, repeats: int) -> dict:
    """One row: ms per training step of field `name` on size^2 camera with `variant`
    (torch-fp32, torch-tf32, compile-tf32, fused-tf32; a -graph suffix replays the whole step as one CUDA graph,
    as `nfields fit` does with --kernel auto or fused)."""
    path, precision, *graph = variant.split("-")
    row = {"field": name, **options, "size": size, "variant": variant}
    if path == "fused" and not (device == "cuda" and triton_available()):
        row["note"] = "skipped: the fused kernels need CUDA and Triton"
        return row
    set_precision(precision)
    image = nfields.load_image("camera", size=(size,))
    coords = image.coords("endpoints" if name == "siren" else "centers").to(device)
    target = (image.targets() * 2 - 1).to(device)
    torch.manual_seed(0)
    field = nfields.make_field(name, 2, image.channels, **options).to(device)
    if hasattr(field, "kernel"):
        field.kernel = "fused" if path == "fused" else "torch"
    optimizer = field.make_optimizer(field.default_lr)
    model = field
    if path == "compile":
        model = torch.compile(field, mode=None if COMPILE_MODE == "default" else COMPILE_MODE, dynamic=False)

    def train_step(zero_grad: bool):
        loss = ((model(coords) - target) ** 2).mean()
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), {}

    step = GraphedStep(train_step, optimizer) if graph and device == "cuda" else lambda: train_step(True)

    try:
        t0 = time.perf_counter()
        step()  # compiles (torch.compile, Triton) outside the timed warm-up
        synchronize(device)
        row["first_step_s"] = round(time.perf_counter() - t0, 2)
        ms = timed(step, device, steps, repeats, warmup=5)
    except Exception as error:  # noqa: BLE001 (a benchmark row records why it has no number)
        row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
        return row
    finally:
        set_precision("fp32")
    flops = matmul_flops(field, coords.shape[0])
    row.update(ms=round(ms, 4), gflop=round(flops / 1e9, 2), tflops=round(flops / ms / 1e9, 2))
    return row


def speed(name: str, sizes: list[int], widths: list[int], variants: list[str], device: str, steps: int,
          repeats: int, ceil: dict, extra: dict | None = None) -> list[dict]:
    rows = []
    for size in sizes:
        for width in widths:
            group = []
            for variant in variants:
                row = step_time(name, {"width": width, "hidden_layers": 3, **(extra or {})}, size, variant, device,
                                steps, repeats)
                release(device)  # after step_time returned its model
                precision = variant.split("-")[1]
                if "tflops" in row and ceil.get(f"{precision}_tflops"):
                    row["of_ceiling"] = round(row["tflops"] / ceil[f"{precision}_tflops"], 3)
                group.append(row)
            by = {r["variant"]: r.get("ms") for r in group}
            for row in group:
                if row["variant"].startswith("fused") and row.get("ms"):
                    for base in BASELINES:
                        if by.get(base):
                            row[f"speedup_vs_{base}"] = round(by[base] / row["ms"], 2)
                print(format_speed(row), flush=True)
            rows += group
    return rows


def format_speed(row: dict) -> str:
    what = f"{row['field']:<8} w{row['width']:<4} {row['size']:>4}^2  {row['variant']:<17}"
    if "ms" not in row:
        return f"{what} {row.get('note', '')}"
    text = (f"{what} {row['ms']:8.3f} ms/step  {row['tflops']:7.1f} TFLOP/s"
            + (f" ({100 * row['of_ceiling']:.0f}% of mm)" if "of_ceiling" in row else ""))
    for base in BASELINES:
        if f"speedup_vs_{base}" in row:
            text += f"  {row[f'speedup_vs_{base}']:.2f}x vs {base}"
    return text + (f"  [first step {row['first_step_s']} s]" if row.get("first_step_s", 0) > 2 else "")


def window_median(evals: dict[int, float], milestone: int, fraction: float = 0.1) -> float:
    """The median PSNR of the evaluations in the last `fraction` of the steps up to `milestone` (included)."""
    return statistics.median(p for s, p in evals.items() if milestone * (1 - fraction) <= s <= milestone)


#: The fields whose PSNR is compared, with their coordinates (as the fits use them).
QUALITY_FIELDS = (("siren", "endpoints"), ("relu-pe", "centers"))


def quality(size: int, milestones: list[int], device: str, every: int) -> list[dict]:
    """Each field's PSNR on camera at `milestones` (its default lr): PyTorch fp32 against the fused kernels (tf32).

    Near convergence a single evaluation swings by tenths of a dB from step to step (Adam's oscillation; the
    fused kernels' atomics also make runs differ), so the fit is evaluated every `every` steps and each
    milestone reports the single value and the median over the evaluations in the last 10% of steps before it
    (steps 450-500 and 1800-2000); the comparison is between medians."""
    rows = []
    image = nfields.load_image("camera", size=(size,))
    for name, coords in QUALITY_FIELDS:
        group = []
        for kernel, precision in [("torch", "fp32"), ("fused", "tf32")]:
            row = {"field": name, "size": size, "variant": f"{kernel}-{precision}"}
            if kernel == "fused" and not (device == "cuda" and triton_available()):
                row["note"] = "skipped: the fused kernels need CUDA and Triton"
            else:
                torch.manual_seed(0)
                field = nfields.make_field(name, 2, image.channels)
                _, trainer = nfields.fit_image(image, field, steps=max(milestones), device=device, progress=False,
                                               coords=coords, eval_every=every, eval_at=milestones,
                                               log_every=max(milestones), checkpoint_every=10**9, kernel=kernel,
                                               precision=precision)
                evals = {e["step"]: e["psnr"] for e in trainer.history.evals}
                row.update(psnr={str(m): round(evals[m], 3) for m in milestones},
                           psnr_window_median={str(m): round(window_median(evals, m), 3) for m in milestones},
                           eval_every=every, window="last 10% of steps before the milestone",
                           ms_per_step=round(1000 * trainer.seconds / trainer.step, 3))
                set_precision("fp32")
            group.append(row)
            print(format_quality(row), flush=True)
            release(device)
        base = group[0].get("psnr_window_median")
        for row in group[1:]:
            if base and "psnr_window_median" in row:
                row["median_minus_torch_fp32_db"] = {m: round(row["psnr_window_median"][m] - base[m], 3)
                                                     for m in base}
        rows += group
    return rows


def format_quality(row: dict) -> str:
    what = f"PSNR {row['field']:<7} {row['size']}^2 {row['variant']:<11}"
    if "psnr" not in row:
        return f"{what} {row.get('note', '')}"
    return (what + "  ".join(f"{m:>6}: {p:6.2f} (median {row['psnr_window_median'][m]:6.2f})"
                             for m, p in row["psnr"].items()) + f"  {row['ms_per_step']:.3f} ms/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="a tiny run: 32^2, widths 16 and 32, few steps")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches (the median is reported)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/fit_kernels_<device>.json)")
    args = parser.parse_args()

    result = {**header("fit_kernels", args.device), "compile_mode": COMPILE_MODE,
              "flops": "6 N sum(in*out) over the layers", "optimizer": "the field's Adam (torch.optim.Adam defaults)"}
    result["precision"] = "per row"
    path = results_path(args.json, f"fit_kernels_{args.device}")

    def save():  # after every part, so a run cut short keeps what it measured
        write_results(path, result)

    quick = args.quick
    sizes, widths = ([32], [16, 32]) if quick else ([256, 512], [64, 128, 256])
    steps, repeats = (2, 2) if quick else (args.steps, args.repeats)
    variants = ["torch-fp32", "torch-tf32", "compile-tf32", "torch-tf32-graph", "fused-tf32", "fused-tf32-graph"]
    ceil = {}
    if "ceiling" in args.parts:
        ceil = result["ceiling"] = ceiling(args.device, quick)
        save()
    if "siren" in args.parts:
        result["siren"] = speed("siren", sizes, widths, variants, args.device, steps, repeats, ceil)
        save()
    if "relu-pe" in args.parts:
        result["relu_pe"] = speed("relu-pe", sizes, [widths[-1]], variants, args.device, steps, repeats, ceil,
                                  {"frequencies": 10})
        save()
    if "quality" in args.parts:
        result["quality"] = quality(32 if quick else 256, [10, 20] if quick else [500, 2000], args.device,
                                    1 if quick else 25)
        save()
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
