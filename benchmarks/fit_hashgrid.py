"""The hash grid on 512^2 `camera`: the pure PyTorch encoding against the fused Triton one (float16 tables
gathered, float32 master table updated by one fused Adam kernel): ms per step and steps per second, PSNR at
500, 1000 and 2000 steps, seconds of training to 40 dB; the encoding's forward + backward and the Adam step
alone; and what half tables cost in PSNR (the fused kernels gathering from the float32 table instead).

    python benchmarks/fit_hashgrid.py --device cuda           # the GPU table (about 2 minutes on an H100)
    python benchmarks/fit_hashgrid.py --device cpu --quick    # a tiny CPU run of the PyTorch rows only
    python benchmarks/fit_hashgrid.py --show benchmarks/results/fit_hashgrid_cuda.json

Prints a table and writes JSON (device, date, numbers) to --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402
from common import header, release, results_path, title, write_results  # noqa: E402
from nfields.encodings import HashGridEncoding  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402

# (row name, --kernel, dtype the fused kernels gather from)
VARIANTS = [("torch", "torch", torch.float16), ("fused", "fused", torch.float16),
            ("fused-fp32-gather", "fused", torch.float32)]


def timed(fn, device: str, repeats: int, warmup: int = 3) -> float:
    """Median microseconds of `fn()` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(1000 * start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append(1e6 * (time.perf_counter() - began))
    return statistics.median(times)


def encoding_speed(points: int, device: str, variants: list, repeats: int) -> list[dict]:
    """The default 2D encoding (L=16, F=2, T=2^19) on `points` coordinates: forward (no grad), and forward +
    backward to the table as in a training step (the fused rows include re-copying the float16 table)."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(points, 2, generator=generator) * 2 - 1).to(device)
    for name, kernel, gather in variants:
        torch.manual_seed(0)
        enc = HashGridEncoding(2).to(device)
        enc.kernel, enc.gather_dtype = kernel, gather
        grad = torch.randn(points, enc.out_features, device=device)

        def forward():
            with torch.no_grad():
                enc(x)

        def forward_backward():
            enc.table.grad = None
            enc(x).backward(grad)

        row = {"variant": name, "points": points, "forward_us": round(timed(forward, device, repeats), 1),
               "forward_backward_us": round(timed(forward_backward, device, repeats), 1)}
        rows.append(row)
        print(format_encoding(row), flush=True)
        release(device)
    return rows


def adam_speed(device: str, repeats: int, fused: bool) -> list[dict]:
    """One Adam step over the default 2D field's parameters (7.7M, nearly all table): foreach (PyTorch's
    default on CUDA) against fused (what HashGridField.make_optimizer picks on CUDA)."""
    rows = []
    for name, options in [("foreach", {"foreach": True})] + ([("fused", {"fused": True})] if fused else []):
        torch.manual_seed(0)
        field = nfields.make_field("hashgrid", 2, 1).to(device)
        for p in field.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        optimizer = torch.optim.Adam(field.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15, **options)
        row = {"adam": name, "params": parameter_count(field), "step_us": round(timed(optimizer.step, device,
                                                                                         repeats), 1)}
        rows.append(row)
        print(f"Adam step {name:<8} {row['params']:,} params: {row['step_us']:9.1f} us", flush=True)
        del field, optimizer
        release(device)
    return rows


def fit(image, name: str, kernel: str, gather, milestones: list[int], early: list[int], device: str) -> dict:
    torch.manual_seed(0)
    field = nfields.make_field("hashgrid", 2, image.channels)
    field.encoding.gather_dtype = gather
    _, trainer = nfields.fit_image(image, field, steps=max(milestones), device=device, kernel=kernel,
                                   progress=False, eval_at=sorted(set(early + milestones)), log_every=max(milestones),
                                   checkpoint_every=10**9)
    evals = trainer.history.evals
    at = {e["step"]: e for e in evals}
    first_40 = next((e for e in evals if e["psnr"] >= 40.0), None)
    ms = 1000 * trainer.seconds / trainer.step
    return {"variant": name, "kernel": kernel, "gather": str(gather).replace("torch.", ""), "size": image.height,
            "ms_per_step": round(ms, 3), "steps_per_second": round(1000 / ms, 1),
            "psnr": {str(m): round(at[m]["psnr"], 3) for m in milestones},
            "best_psnr": round(max(e["psnr"] for e in evals), 3),
            "steps_to_40db": None if first_40 is None else first_40["step"],
            "seconds_to_40db": None if first_40 is None else round(first_40["seconds"], 3),
            "seconds_total": round(trainer.seconds, 2)}


def fits(size: int, milestones: list[int], device: str, variants: list) -> list[dict]:
    image = nfields.load_image("camera", size=(size,))
    early = list(range(5, min(300, max(milestones)) + 1, 5))  # fine enough to time 40 dB
    rows = []
    for name, kernel, gather in variants:
        # A short warm-up fit first: Triton compiles its kernels, cuBLAS and the allocator settle.
        fit(image, name, kernel, gather, [10], [], device)
        release(device)
        row = fit(image, name, kernel, gather, milestones, early, device)
        rows.append(row)
        print(format_fit(row), flush=True)
        release(device)
    return rows


def summarize(rows: list[dict]) -> dict:
    by = {row["variant"]: row for row in rows}
    if "torch" not in by or "fused" not in by:
        return {}
    torch_row, fused = by["torch"], by["fused"]
    summary = {"step_speedup": round(torch_row["ms_per_step"] / fused["ms_per_step"], 3),
               "fused_over_torch_ms": round(fused["ms_per_step"] / torch_row["ms_per_step"], 3),
               "psnr_fused_minus_torch": {m: round(p - torch_row["psnr"][m], 3) for m, p in fused["psnr"].items()}}
    if torch_row["seconds_to_40db"] and fused["seconds_to_40db"]:
        summary["to_40db_speedup"] = round(torch_row["seconds_to_40db"] / fused["seconds_to_40db"], 3)
    if "fused-fp32-gather" in by:  # same kernels, only the gathered precision differs: the half-table effect
        full = by["fused-fp32-gather"]
        summary["psnr_half_minus_fp32_gather"] = {m: round(p - full["psnr"][m], 3) for m, p in fused["psnr"].items()}
    return summary


def format_encoding(row: dict) -> str:
    return (f"encoding {row['variant']:<18} {row['points']:>8} points: forward {row['forward_us']:9.1f} us, "
            f"forward+backward {row['forward_backward_us']:9.1f} us")


def format_fit(row: dict) -> str:
    to_40 = "-" if row["seconds_to_40db"] is None else f"{row['seconds_to_40db']:.3f} s ({row['steps_to_40db']} steps)"
    return (f"fit {row['variant']:<18} {row['size']}^2  {row['ms_per_step']:7.3f} ms/step "
            f"({row['steps_per_second']:7.1f}/s)  " + "  ".join(f"{m:>5}:{p:7.2f}" for m, p in row["psnr"].items())
            + f"  best {row['best_psnr']:.2f}  to 40 dB: {to_40}")


def format_summary(summary: dict) -> str:
    lines = [f"fused/torch ms per step: {summary['fused_over_torch_ms']}  (speed-up {summary['step_speedup']}x)"]
    if "to_40db_speedup" in summary:
        lines.append(f"seconds to 40 dB, torch/fused: {summary['to_40db_speedup']}x")
    lines.append("PSNR fused - torch (dB): " + ", ".join(f"{m}: {d:+.2f}"
                                                        for m, d in summary["psnr_fused_minus_torch"].items()))
    if "psnr_half_minus_fp32_gather" in summary:
        lines.append("PSNR half tables - fp32 gather, same kernels (dB): " + ", ".join(
            f"{m}: {d:+.2f}" for m, d in summary["psnr_half_minus_fp32_gather"].items()))
    return "\n".join(lines)


def show(path: Path) -> None:
    result = json.loads(path.read_text())
    print(title(result, "hash grid, PyTorch vs fused (half tables)"))
    for row in result.get("encoding", []):
        print(format_encoding(row))
    for row in result.get("adam", []):
        print(f"Adam step {row['adam']:<8} {row['params']:,} params: {row['step_us']:9.1f} us")
    for row in result.get("fit", []):
        print(format_fit(row))
    if result.get("summary"):
        print(format_summary(result["summary"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny CPU run: 64^2, 50 and 100 steps, PyTorch rows")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--show", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args()
    if args.show:
        return show(args.show)

    result = {**header("fit_hashgrid", args.device)}
    path = results_path(args.json, f"fit_hashgrid_{args.device}")

    def save():  # after every part, so a run cut short keeps what it measured
        write_results(path, result)

    if args.quick:
        variants, size, milestones, points, repeats = VARIANTS[:1], 64, [50, 100], 4096, 3
    else:
        variants, size, milestones, points, repeats = VARIANTS, 512, [500, 1000, 2000], 512 * 512, 20
    result["encoding"] = encoding_speed(points, args.device, variants, repeats)
    save()
    result["adam"] = adam_speed(args.device, repeats, fused=not args.quick)
    save()
    result["fit"] = fits(size, milestones, args.device, variants)
    result["summary"] = summarize(result["fit"])
    if result["summary"]:
        print(format_summary(result["summary"]))
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
