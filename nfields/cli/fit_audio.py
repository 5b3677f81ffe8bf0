"""`nfields fit audio`."""

from __future__ import annotations

import argparse

from .common import add_fit_arguments, fit_settings

AUDIO_SETTINGS = ("max_seconds", "batch_samples", "normalize")


def add_parser(sub) -> None:
    p = sub.add_parser("audio", help="fit one audio clip with one field",
                       description="Fit one audio clip (a file or a built-in name) with a neural field of time. "
                                   "SIREN gets a first-layer omega0 of 3000 unless -o first_omega0=X is given.")
    add_fit_arguments(p, "audio file (WAV, FLAC, OGG, MP3; mono or stereo) or built-in name, e.g. front-center")
    p.add_argument("--max-seconds", type=float, metavar="S", help="fit only the first S seconds of the clip")
    p.add_argument("--batch-samples", type=int, metavar="K", help="random samples per step (default 0: all)")
    p.add_argument("--normalize", help="peak (default: divide by max |x|, as SIREN's code does) or none")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit_audio import FitAudioConfig, run_fit_audio

    config, explicit, out = fit_settings(args, FitAudioConfig, "fit-audio", AUDIO_SETTINGS,
                                         "an audio clip (a file path or a built-in name such as 'front-center'; "
                                         "see 'nfields datasets')")
    metrics = run_fit_audio(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            explicit=explicit)
    print(f"{metrics['field']} on {metrics['source']} ({metrics['duration']:.2f} s, {metrics['sample_rate']} Hz, "
          f"{metrics['channels']} ch, {metrics['device']}): PSNR {metrics['psnr']:.2f} dB, SNR {metrics['snr']:.2f} dB "
          f"after {metrics['steps']} steps in {metrics['seconds']:.1f} s ({metrics['params']:,} parameters)\n"
          f"outputs: {out}/reconstruction.wav, {out}/comparison.png, {out}/curve.png")
    return 0
