"""Every field on `camera`: PSNR at fixed step counts, ms per step, parameters, seconds to 40 dB;
and SIREN's step time against a plain, straightforward PyTorch SIREN measured in the same run.

    python benchmarks/fit_image.py --device cuda              # the GPU table (all parts)
    python benchmarks/fit_image.py --device cpu --quick       # a small CPU run
    python benchmarks/fit_image.py --part quality-512 --fields siren hashgrid ...

Prints a table and writes JSON (device, date, numbers) to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402
from common import header, release, results_path, title, write_results  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402
from nfields.train.device import set_precision  # noqa: E402

FIELDS = ["relu", "relu-pe", "fourier", "siren", "gauss", "hashgrid"]


def coords_for(field: str) -> str:
    # SIREN is measured in its official setup (linspace(-1, 1) coordinates); the others use pixel centres.
    return "endpoints" if field == "siren" else "centers"


def quality(size: int, fields: list[str], milestones: list[int], device: str, eval_every: int) -> list[dict]:
    rows = []
    image = nfields.load_image("camera", size=(size,))
    for name in fields:
        torch.manual_seed(0)
        field = nfields.make_field(name, 2, image.channels)
        fitted, trainer = nfields.fit_image(image, field, steps=max(milestones), device=device, progress=False,
                                            coords=coords_for(name), eval_at=milestones, eval_every=eval_every,
                                            log_every=max(milestones), checkpoint_every=10**9)
        evals = trainer.history.evals
        at = {e["step"]: e for e in evals}
        to_40 = next((e["seconds"] for e in evals if e["psnr"] >= 40.0), None)
        row = {"field": name, "size": size, "params": parameter_count(field),
               "ms_per_step": 1000 * trainer.seconds / trainer.step,
               "psnr": {str(m): round(at[m]["psnr"], 3) for m in milestones},
               "ssim_final": round(at[max(milestones)]["ssim"], 4),
               "seconds_total": round(trainer.seconds, 2),
               "seconds_to_40db": None if to_40 is None else round(to_40, 2)}
        rows.append(row)
        print(format_quality(row), flush=True)
        del fitted, trainer, field
        release(device)
    return rows


def poisson(size: int, milestones: list[int], device: str) -> list[dict]:
    """SIREN recovering `camera` from its gradients or its Laplacian alone (SIREN §4.1)."""
    rows = []
    image = nfields.load_image("camera", size=(size,))
    for supervise in ("gradient", "laplacian"):
        torch.manual_seed(0)
        field = nfields.make_field("siren", 2, 1)
        _, trainer = nfields.fit_image(image, field, steps=max(milestones), device=device, progress=False,
                                       coords="endpoints", supervise=supervise, eval_at=milestones,
                                       log_every=max(milestones), checkpoint_every=10**9)
        at = {e["step"]: e for e in trainer.history.evals}
        row = {"supervise": supervise, "size": size, "psnr": {str(m): round(at[m]["psnr"], 3) for m in milestones},
               "ssim_final": round(at[max(milestones)]["ssim"], 4),
               "ms_per_step": round(1000 * trainer.seconds / trainer.step, 3)}
        rows.append(row)
        print(format_poisson(row), flush=True)
    return rows


def format_poisson(row: dict) -> str:
    return (f"poisson {row['supervise']:<9} {row['size']}^2  "
            + "  ".join(f"{m:>5}:{p:7.2f}" for m, p in row["psnr"].items())
            + f"  SSIM {row['ssim_final']:.3f}  {row['ms_per_step']:7.2f} ms/step")


def format_quality(row: dict) -> str:
    return (f"{row['field']:<9} {row['size']:>4}^2  " + "  ".join(f"{m:>5}:{p:7.2f}" for m, p in row["psnr"].items())
            + f"  {row['ms_per_step']:7.2f} ms/step  {row['params']:>10,} params  "
            f"to 40 dB: {row['seconds_to_40db'] if row['seconds_to_40db'] is not None else '-'} s")


def format_speed(row: dict) -> str:
    return (f"SIREN step {row['size']}^2 {row['precision']}: plain {row['plain_ms']:.3f} ms, "
            f"nfields {row['nfields_ms']:.3f} ms, ratio {row['speedup']:.3f}x")


def show(path: Path) -> None:
    result = json.loads(path.read_text())
    print(title(result, "PSNR in dB at each step count"))
    for row in result.get("quality", []):
        print(format_quality(row))
    for row in result.get("speed", []):
        print(format_speed(row))
    for row in result.get("poisson", []):
        print(format_poisson(row))


class PlainSiren(nn.Module):
    """The straightforward PyTorch SIREN a person would write: Linear, then sin(30 * x)."""

    def __init__(self, width=256, hidden=3):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, width)] + [nn.Linear(width, width) for _ in range(hidden)])
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        for layer in self.layers:
            x = torch.sin(30.0 * layer(x))
        return self.out(x)


def time_steps(model: nn.Module, coords: torch.Tensor, target: torch.Tensor, lr: float, steps: int) -> float:
    """Milliseconds per full training step (forward, MSE, backward, Adam), after a warm-up."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step():
        loss = ((model(coords) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    if coords.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if coords.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / steps


def speed(sizes: list[int], device: str, steps: int, repeats: int = 3) -> list[dict]:
    rows = []
    for precision in ("fp32", "tf32"):
        set_precision(precision)
        for size in sizes:
            image = nfields.load_image("camera", size=(size,))
            coords = image.coords("endpoints").to(device)
            target = (image.targets() * 2 - 1).to(device)
            plain_ms, ours_ms = [], []
            for _ in range(repeats):  # interleaved, so drift hits both alike
                torch.manual_seed(0)
                plain_ms.append(time_steps(PlainSiren().to(device), coords, target, 1e-4, steps))
                torch.manual_seed(0)
                ours_ms.append(time_steps(nfields.make_field("siren", 2, 1).to(device), coords, target, 1e-4, steps))
            plain, ours = min(plain_ms), min(ours_ms)
            row = {"precision": precision, "size": size, "plain_ms": round(plain, 3), "nfields_ms": round(ours, 3),
                   "speedup": round(plain / ours, 3)}
            rows.append(row)
            print(format_speed(row), flush=True)
    set_precision("fp32")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--part", nargs="+", default=["quality-256", "quality-512", "speed"],
                        choices=["quality-256", "quality-512", "speed", "poisson"])
    parser.add_argument("--fields", nargs="+", default=FIELDS)
    parser.add_argument("--quick", action="store_true", help="a small CPU run: 64^2, 100 and 500 steps")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--show", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args()
    if args.show:
        return show(args.show)

    result = {**header("fit_image", args.device)}
    path = results_path(args.json, f"fit_image_{args.device}")

    def save():  # after every part, so a run cut short keeps what it measured
        write_results(path, result)

    result["quality"] = []
    if args.quick:
        result["quality"] = quality(64, args.fields, [100, 500], args.device, eval_every=0)
    if "quality-256" in args.part and not args.quick:
        result["quality"] += quality(256, args.fields, [100, 500, 1000, 2000], args.device, eval_every=0)
        save()
    if "speed" in args.part and not args.quick:
        result["speed"] = speed([256, 512], args.device, steps=200)
        save()
    if "poisson" in args.part and not args.quick:
        result["poisson"] = poisson(256, [500, 1000, 2000], args.device)
        save()
    if "quality-512" in args.part and not args.quick:
        for name in args.fields:
            result["quality"] += quality(512, [name], [100, 500, 1000, 2000, 10000], args.device, eval_every=50)
            save()
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
