"""Every field on two built-in clips (Debian alsa-utils, 48 kHz mono, ~1.4 s each, fitted whole):
waveform PSNR and SNR at fixed step counts, ms per step, parameters.

    python benchmarks/fit_audio.py --prepare .carry/audio        # here: the clips as .npz (needs soundfile)
    python benchmarks/fit_audio.py --data .carry/audio --device cuda   # the GPU table, from the .npz alone
    python benchmarks/fit_audio.py --data .carry/audio --device cpu --quick   # a CPU smoke run
    python benchmarks/fit_audio.py --show benchmarks/results/fit_audio_cuda.json

Full batch (every sample in every step), the fields' own learning rates, SIREN in its official
audio setup (first-layer omega0 3000, waveform / max|x|); `siren-omega30` is SIREN with the
image setting (first-layer omega0 30) to show why audio needs the larger one. PSNR is on the
waveform with peak-to-peak 2 (10 log10(4 / MSE)), SNR 10 log10(sum x^2 / sum (x - x_hat)^2);
both clamp the prediction to [-1, 1]. Prints a table and writes JSON (device, date, torch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nfields  # noqa: E402  (imports soundfile only when a file is read)
from common import header, release, results_path, title, write_results  # noqa: E402
from nfields.data.audio import AudioSignal  # noqa: E402
from nfields.fields import parameter_count  # noqa: E402

CLIPS = ["front-center", "noise"]
#: (row label, field, options on top of the audio defaults)
RUNS = [("relu", "relu", {}), ("relu-pe", "relu-pe", {}), ("fourier", "fourier", {}), ("siren", "siren", {}),
        ("siren-omega30", "siren", {"first_omega0": 30.0}), ("gauss", "gauss", {}), ("hashgrid", "hashgrid", {})]


def prepare(folder: Path, max_seconds: float) -> None:
    """Store each built-in clip as <name>.npz: samples (N, C) float32 and rate."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        clip = nfields.load_audio(name, max_seconds=max_seconds)
        np.savez_compressed(folder / f"{name}.npz", samples=clip.samples.astype(np.float32), rate=clip.rate)
        print(f"wrote {folder / f'{name}.npz'}: {clip.length} samples, {clip.rate} Hz, {clip.channels} ch")


def load_clips(data: Path | None, max_seconds: float) -> list[AudioSignal]:
    if data is None:
        return [nfields.load_audio(name, max_seconds=max_seconds) for name in CLIPS]
    clips = []
    for name in CLIPS:
        with np.load(data / f"{name}.npz") as stored:
            clips.append(AudioSignal(stored["samples"], int(stored["rate"]), name).cropped(max_seconds))
    return clips


def quality(clip: AudioSignal, runs: list[tuple[str, str, dict]], milestones: list[int], device: str) -> list[dict]:
    rows = []
    for label, name, options in runs:
        torch.manual_seed(0)
        field = nfields.make_audio_field(name, clip.channels, **options)
        fitted, trainer = nfields.fit_audio(clip, field, steps=max(milestones), device=device, progress=False,
                                            eval_at=milestones, log_every=max(milestones), checkpoint_every=10**9)
        at = {e["step"]: e for e in trainer.history.evals}
        row = {"clip": clip.name, "field": label, "options": field.spec()["config"], "samples": clip.length,
               "rate": clip.rate, "params": parameter_count(field),
               "ms_per_step": round(1000 * trainer.seconds / trainer.step, 3),
               "psnr": {str(m): round(at[m]["psnr"], 3) for m in milestones},
               "snr": {str(m): round(at[m]["snr"], 3) for m in milestones},
               "seconds_total": round(trainer.seconds, 2)}
        rows.append(row)
        print(format_row(row), flush=True)
        del fitted, trainer, field
        release(device)
    return rows


def format_row(row: dict) -> str:
    cells = "  ".join(f"{m:>5}: {p:6.2f} / {row['snr'][m]:6.2f}" for m, p in row["psnr"].items())
    return (f"{row['clip']:<13} {row['field']:<14} {cells}  {row['ms_per_step']:7.2f} ms/step  "
            f"{row['params']:>10,} params")


def show(path: Path) -> None:
    result = json.loads(path.read_text())
    print(title(result, "PSNR / SNR in dB at each step count"))
    for row in result["quality"]:
        print(format_row(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="write the clips as .npz into DIR and exit")
    parser.add_argument("--data", type=Path, metavar="DIR", help="run from the .npz files of --prepare")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fields", nargs="+", default=[label for label, _, _ in RUNS],
                        choices=[label for label, _, _ in RUNS])
    parser.add_argument("--max-seconds", type=float, default=2.0, help="crop each clip (default 2 s: all of it)")
    parser.add_argument("--quick", action="store_true", help="a CPU smoke run: 0.05 s of each clip, 10 and 20 steps")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--show", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args()
    if args.show:
        return show(args.show)
    if args.prepare:
        return prepare(args.prepare, args.max_seconds)

    milestones = [10, 20] if args.quick else [500, 1000, 2000]
    clips = load_clips(args.data, 0.05 if args.quick else args.max_seconds)
    runs = [run for run in RUNS if run[0] in args.fields]
    result = {**header("fit_audio", args.device),
              "quick": args.quick, "quality": []}
    path = results_path(args.json, f"fit_audio_{args.device}{'_quick' if args.quick else ''}")
    print("clip          field          step: PSNR / SNR (dB)")
    for clip in clips:
        result["quality"] += quality(clip, runs, milestones, args.device)
        write_results(path, result)  # after every clip, so a cut-short run keeps it
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
