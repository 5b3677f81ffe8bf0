"""Flags and settings every `nfields fit SIGNAL` command shares."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import NfieldsError
from ..io import read_json
from ..train.manifest import EXTRA_KEYS, KINDS, check_settings, command_of

#: Flags whose values are settings of the same name (FitConfig's fields).
COMMON_SETTINGS = ("source", "field", "steps", "device", "seed", "lr", "precision", "kernel", "checkpoint_every",
                   "log_every", "eval_at", "seconds")
#: Keys a run's config.json holds beside the settings (so it can be passed back as --config).
RUN_ONLY_KEYS = set(EXTRA_KEYS)


def add_fit_arguments(p: argparse.ArgumentParser, source_help: str,
                      field_help: str = "relu, relu-pe, fourier, siren, gauss or hashgrid (default siren)") -> None:
    p.add_argument("source", nargs="?", help=source_help)
    p.add_argument("--field", help=field_help)
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--kernel", help="auto (default: on CUDA, fused Triton kernels where the field has them (SIREN "
                                    "and ReLU MLPs with --precision tf32, the hash grid) and the step replayed as "
                                    "one CUDA graph), torch (plain PyTorch) or fused")
    p.add_argument("--out", type=Path, help="run folder (default runs/<source>-<field>)")
    add_run_arguments(p, "the field's own")
    p.add_argument("--width", type=int, help="field option: hidden width")
    p.add_argument("--hidden-layers", type=int, help="field option: number of width x width layers")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field option, e.g. -o omega0=30 -o log2_table_size=18 (see 'nfields fields')")


def add_run_arguments(p: argparse.ArgumentParser, default_lr: str) -> None:
    """Flags of every training command: seed, optimiser, precision, logging, presets, resuming."""
    p.add_argument("--seed", type=int)
    p.add_argument("--seconds", type=float, metavar="S",
                   help="also stop after S seconds of training (checked after every step; default 0: no limit)")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default: {default_lr})")
    p.add_argument("--precision", help="fp32 (default) or tf32 matmuls on CUDA")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    p.add_argument("--log-every", type=int, help="steps between log points (default 25)")
    p.add_argument("--eval-at", type=int, nargs="+", metavar="STEP", help="also evaluate at these steps")
    p.add_argument("--recipe", help="a named preset (see 'nfields recipes')")
    p.add_argument("--config", type=Path, help="a JSON file of settings (a run's config.json works)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (only a run folder; the old run stays until the new one's first "
                        "checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NfieldsError(f"field option '{pair}' must look like KEY=VALUE, e.g. -o omega0=30.")
        options[key.replace("-", "_")] = value
    return options


def _read_config_file(path: Path, config_cls: type) -> dict[str, Any]:
    """The settings in a --config file, each checked against `config_cls` (nfields.train.manifest)."""
    data = read_json(path, "config file")
    if not isinstance(data, dict):
        raise NfieldsError(f"config file '{path}' must hold a JSON object of settings, not "
                           f"{'null' if data is None else type(data).__name__}.")
    kinds = getattr(config_cls, "kinds", ())
    kind = data.get("kind")
    if kind is not None and kinds and kind not in kinds:
        made = f"a {kind} run's" if kind in KINDS else f"kind {kind!r}"
        raise NfieldsError(f"config file '{path}' holds {made} settings, not those of '{command_of(kinds[0])}'.")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names - RUN_ONLY_KEYS
    if unknown:
        raise NfieldsError(f"config file '{path}' has unknown settings: {', '.join(sorted(unknown))}.")
    return check_settings({k: v for k, v in data.items() if k in names}, config_cls, f"config file '{path}'")


def fit_settings(args: argparse.Namespace, config_cls: type, job: str, extra_settings: tuple[str, ...],
                 what: str) -> tuple[Any, set[str], Path]:
    """defaults < recipe < config file < flags -> (config, the settings given explicitly, run folder)."""
    from ..recipes import recipe

    settings: dict[str, Any] = {}
    if args.recipe:
        settings.update(recipe(args.recipe, job).settings)
    if args.config:
        settings.update(_read_config_file(args.config, config_cls))
    flags = COMMON_SETTINGS + extra_settings
    explicit = {name for name in flags if getattr(args, name, None) is not None}  # train jobs have no --kernel
    settings.update({name: getattr(args, name) for name in explicit})
    options = dict(settings.get("field_options", {}))
    options.update(_parse_options(args.option))
    for flag in ("width", "hidden_layers"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    if options:
        settings["field_options"] = options
        explicit.add("field_options")
    if not settings.get("source") and not (args.resume and args.out):
        raise NfieldsError(f"give {what}, or --resume with the run's --out folder.")
    config = config_cls(**settings)
    out = args.out or Path("runs") / f"{Path(config.source).stem}-{config.field}"
    return config, explicit, out
