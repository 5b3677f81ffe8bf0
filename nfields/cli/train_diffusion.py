"""`nfields train diffusion --latents RUN`: a DDPM prior over the latents of a stage-1 run."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_run_arguments, fit_settings

DIFFUSION_SETTINGS = ("epochs", "seconds", "eval_at_seconds", "batch", "weight_decay", "ema_decay",
                      "class_conditional", "cfg_dropout", "guidance", "sampling_steps", "diffusion_steps",
                      "eval_limit", "encode_batch", "limit")


def add_parser(sub) -> None:
    p = sub.add_parser("diffusion", help="a DDPM prior over the latents of a 'train ginr' run, to sample new fields",
                       description="Stage 2: a diffusion prior (cosine schedule, x0-prediction, EMA, DDIM sampling) "
                                   "over standardised stage-1 latents: mNIF's residual MLP for latent vectors, a "
                                   "Transformer for latent tokens, class-conditional with classifier-free "
                                   "guidance when the dataset has labels.")
    p.add_argument("--latents", dest="source", metavar="RUN", help="the --out folder of a 'nfields train ginr' run")
    p.add_argument("--denoiser", dest="field", metavar="D",
                   help="auto (default: mlp for vectors, transformer for tokens), mlp or transformer")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, help="passes over the training latents")
    budget.add_argument("--steps", "--max-steps", dest="steps", metavar="S", type=int,
                        help="optimisation steps (default 10000)")
    p.add_argument("--batch", type=int, help="latents per step (default: mlp 64 as mNIF, transformer 256 as A.3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: mlp 0.01, transformer 0)")
    p.add_argument("--ema", dest="ema_decay", type=float, help="EMA decay of the sampled weights (default 0.9999)")
    p.add_argument("--class-conditional", choices=("auto", "on", "off"),
                   help="condition on the dataset's classes (default auto: when it has labels)")
    p.add_argument("--cfg-dropout", type=float, help="share of class conditions dropped in training (default 0.1)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale of samples (default 2.5)")
    p.add_argument("--sampling-steps", type=int, help="DDIM steps when sampling (default 250)")
    p.add_argument("--diffusion-steps", type=int, help="steps of the forward process (default 1000)")
    p.add_argument("--limit", type=int, help="train on the latents of the first N training instances only")
    p.add_argument("--eval-limit", type=int, help="held-out latents evaluated (default 1000, 0: all)")
    p.add_argument("--encode-batch", type=int, help="images encoded at once to extract latents (default 64)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<stage-1 run>-diffusion)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    add_run_arguments(p, "1e-4")
    p.add_argument("--eval-at-seconds", type=float, nargs="+", metavar="S", help="also evaluate at these seconds")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a denoiser option, e.g. -o width=512 -o depth=8 (mlp: width, blocks, groups, "
                        "time_channels, dropout; transformer: width, depth, heads, mlp_ratio, time_channels, "
                        "token_embedding)")
    p.set_defaults(handler=run, width=None, hidden_layers=None)


def run(args: argparse.Namespace) -> int:
    from ..jobs.train_diffusion import TrainDiffusionConfig, run_train_diffusion

    config, explicit, _ = fit_settings(args, TrainDiffusionConfig, "train-diffusion", DIFFUSION_SETTINGS,
                                       "--latents RUN (the folder of a 'nfields train ginr' run)")
    out = args.out or Path("runs") / f"{Path(config.source).name}-diffusion"
    metrics = run_train_diffusion(config, out, resume=args.resume, overwrite=args.overwrite, explicit=explicit,
                                  progress=not args.quiet)
    held_out = f", held-out loss {metrics['loss_test']:.4f}" if "loss_test" in metrics else ""
    classes = f", {metrics['num_classes']} classes (guidance {metrics['guidance']:g})" \
        if metrics["class_conditional"] else ""
    print(f"{metrics['denoiser']} prior over {metrics['train_latents']:,} {metrics['method']} latents "
          f"{tuple(metrics['latent_shape'])} of {metrics['dataset']} ({metrics['device']}): EMA loss "
          f"{metrics['loss_train']:.4f}{held_out}{classes} after {metrics['steps']} steps "
          f"({metrics['epochs']:.1f} epochs) in {metrics['seconds']:.1f} s, {metrics['params']:,} parameters\n"
          f"files: {out}/metrics.json, {out}/curve.png, {out}/samples.png")
    return 0
