"""Our IPC beside the official code (kakaobrain/ginr-ipc) on the same data, batches and settings.

    python benchmarks/ginr_reference.py --official PATH --steps 10000 --eval-at 1000 2000 5000 \\
        --before DIR --json benchmarks/results/ginr_reference_cuda.json

PATH is a checkout of the official code (nothing of it is committed here); it needs omegaconf, einops and
torchvision. DIR, optional, is another checkout of nfields (e.g. `git worktree add DIR HEAD~5`) trained beside.
1. Forward check: the official model's weights copied into ours give the same outputs (largest difference).
2. Speed alone: steps/s of each variant, one after the other, nothing else on the device.
3. Curves: every variant trained side by side (quality per step does not depend on what else runs) at
   Appendix A's and the official config's settings on Fashion-MNIST 28^2: patch 4, 256 weight tokens,
   sigma 64, batch 16, Adam 1e-4, test PSNR on the first 1,000 test images at --eval-at.
   `--extra JSON` adds a variant: Job fields over ours' (e.g. '{"name": "ours-dropout", "options": {"dropout": 0.1}}').
Prints a table, writes JSON and a plot of test PSNR against steps and against seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import header, results_path, write_results  # noqa: E402
from ginr_jobs import Job, launch, shim_official_code, time_alone  # noqa: E402

SETTINGS = {"patch_size": 4, "fourier_sigma": 64, "tokens": 256}  # the official config's, patch for 28^2


def forward_check(official: Path, device: str) -> float:
    """The largest |difference| between the official model's outputs and ours with its weights (eval mode)."""
    from nfields.ginr import DataSpec, make_ginr

    shim_official_code()
    sys.path.insert(0, str(official / "src"))
    from omegaconf import OmegaConf
    from models.generalizable_INR.configs import LowRankModulatedTransINRConfig
    from models.generalizable_INR.low_rank_modulated_transinr import LowRankModulatedTransINR

    arch = OmegaConf.load(official / "configs/image/low_rank_modulated_transinr/"
                                     "celeba178_low_rank_modulated_transinr.yaml").arch
    arch.data_encoder.n_channel, arch.hyponet.output_dim = 1, 1
    arch.data_encoder.encoder_spec.patch_size, arch.data_encoder.encoder_spec.padding = 4, 0
    arch.latent_mapping.n_patches, arch.hyponet.fourier_mapping.ff_sigma = 49, 64
    theirs = LowRankModulatedTransINR(LowRankModulatedTransINRConfig.create(arch)).to(device).eval()
    ours = make_ginr("ipc", DataSpec((28, 28), 1), patch_size=4, fourier_sigma=64).to(device).eval()
    ours.load_state_dict(ported_state(theirs.state_dict(), ours.decoder.config.modulated_layer))
    images = torch.rand(4, 28, 28, 1, device=device)
    with torch.no_grad():
        xs = images.permute(0, 3, 1, 2)
        expected = theirs(xs, theirs.sample_coord_input(xs, device=xs.device)).permute(0, 2, 3, 1)
        got = ours.reconstruct(images)
    return float((expected - got).abs().max())


def ported_state(theirs: dict, modulated: int) -> dict:
    """The official LowRankModulatedTransINR's state_dict under our IPC's names."""
    state = {"encoder.positions": theirs["latent_mapping.pos_emb_latent"],
             "encoder.patch_embed.weight": theirs["latent_mapping.latent_mapping.weight"],
             "encoder.patch_embed.bias": theirs["latent_mapping.latent_mapping.bias"],
             "encoder.latents": theirs["weight_groups.weight_groups"][None],
             "decoder.features.freqs": theirs["hyponet.ff_linear"]}
    blocks = {k.split(".")[2] for k in theirs if k.startswith("transformer.blocks.")}
    for b in blocks:
        old, new = f"transformer.blocks.{b}.", f"encoder.blocks.{b}."
        for part in ("weight", "bias"):
            state[f"{new}norm1.{part}"] = theirs[f"{old}ln1.{part}"]
            state[f"{new}norm2.{part}"] = theirs[f"{old}ln2.{part}"]
            state[f"{new}attn.qkv.{part}"] = torch.cat([theirs[f"{old}attn.{n}.{part}"]
                                                        for n in ("query", "key", "value")])
            state[f"{new}attn.out.{part}"] = theirs[f"{old}attn.proj.{part}"]
            state[f"{new}mlp.0.{part}"] = theirs[f"{old}mlp.0.{part}"]
            state[f"{new}mlp.2.{part}"] = theirs[f"{old}mlp.2.{part}"]
    layers = sorted(int(k.rsplit("wb", 1)[1]) for k in theirs if k.startswith("hyponet.params_dict."))
    shared = 0
    for i in layers:
        wb = theirs[f"hyponet.params_dict.linear_wb{i}"]  # (fan_in + 1, fan_out): weight rows, then the bias
        if i == modulated:
            state["decoder.modulated.bias"] = wb[-1]
            state["decoder.modulated.shared"] = theirs[f"shared_factor.linear_wb{i}"][0]
            for part in ("weight", "bias"):
                state[f"decoder.modulated.token_map.0.{part}"] = theirs[f"group_modulation_postfc.linear_wb{i}.0.{part}"]
                state[f"decoder.modulated.token_map.1.{part}"] = theirs[f"group_modulation_postfc.linear_wb{i}.1.{part}"]
        else:
            state[f"decoder.weights.{shared}"], state[f"decoder.biases.{shared}"] = wb[:-1], wb[-1]
            shared += 1
    return state


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, variant in enumerate(result["variants"]):
        curve, color = variant["curve"], f"C{index}"
        if not curve:
            continue
        speed = result["steps_per_second"].get(variant["job"]["name"])  # alone; side by side is no speed
        steps = [p["step"] for p in curve]
        psnr = [p["test_psnr"] for p in curve]
        axes[0].plot(steps, psnr, marker="o", color=color, label=variant["job"]["name"])
        if speed:
            axes[1].plot([s / speed for s in steps], psnr, marker="o", color=color, label=variant["job"]["name"])
    axes[0].set(xlabel="step", ylabel="test PSNR (dB)", title="per step")
    axes[1].set(xlabel="seconds at the speed measured alone", ylabel="test PSNR (dB)", title="per second")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"IPC on Fashion-MNIST 28x28, ours vs official ({result['precision']}, {result['device_name']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(result: dict) -> None:
    print(f"ginr_reference on {result['device_name']}, {result['date']}: forward check max |diff| "
          f"{result['forward_max_abs_diff']:.2e}")
    print("steps/s alone: " + ", ".join(f"{k} {v:.1f}" for k, v in result["steps_per_second"].items()))
    marks = sorted({p["step"] for v in result["variants"] for p in v["curve"]})
    print(f"{'variant':<22}" + "".join(f"{m:>9}" for m in marks))
    for variant in result["variants"]:
        by_step = {p["step"]: p["test_psnr"] for p in variant["curve"]}
        print(f"{variant['job']['name']:<22}" + "".join(f"{by_step[m]:9.2f}" if m in by_step else f"{'-':>9}"
                                                        for m in marks) + (f"  {variant['error'][-80:]!r}"
                                                                           if variant.get("error") else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of kakaobrain/ginr-ipc")
    parser.add_argument("--before", type=Path, help="another checkout of nfields to train beside")
    parser.add_argument("--before-steps", type=int, help="its steps (default --steps)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-at", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--eval-limit", type=int, default=1000)
    parser.add_argument("--precision", default="tf32", help="every variant's matmul precision (default tf32)")
    parser.add_argument("--extra", action="append", default=[], help="another variant: Job fields as JSON")
    parser.add_argument("--time-steps", type=int, default=200, help="steps timed alone per variant")
    parser.add_argument("--timing-only", action="store_true", help="time the variants alone, write --json, stop")
    parser.add_argument("--timings", type=Path, help="the --json of an earlier --timing-only run to reuse")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3000.0, help="seconds for all the curves together")
    parser.add_argument("--work", type=Path, default=Path("runs/ginr-reference"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--show", type=Path, help="print a results JSON (and redraw its plot beside it)")
    args = parser.parse_args()
    if args.show:
        show(json.loads(args.show.read_text()))
        plot(json.loads(args.show.read_text()), args.show.with_suffix(".png"))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = Job(name="ours", method="ipc", options=dict(SETTINGS), steps=args.steps, eval_at=args.eval_at,
               eval_limit=args.eval_limit, precision=args.precision, official=str(args.official.resolve()))
    variants = [base, dataclasses.replace(base, name="official", impl="official")]
    if args.before:
        variants.append(dataclasses.replace(base, name="ours-before", code=str(args.before.resolve()),
                                            steps=args.before_steps or args.steps))
    for extra in args.extra:
        fields = json.loads(extra)
        variants.append(dataclasses.replace(base, **{**fields, "options": {**base.options,
                                                                           **fields.get("options", {})}}))
    result = {**header("ginr_reference", device), "precision": args.precision, "settings": SETTINGS,
              "forward_max_abs_diff": forward_check(args.official, device), "steps_per_second": {}}
    path = results_path(args.json, f"ginr_reference_{device}")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.timings:
        result["steps_per_second"] = json.loads(args.timings.read_text())["steps_per_second"]
    else:
        timed = [dataclasses.replace(v, time_only=args.time_steps) for v in variants if not v.code]
        for timing in time_alone(timed, args.work / "timings.json"):
            result["steps_per_second"][timing["job"]["name"]] = timing["steps_per_second"]
    if args.timing_only:
        write_results(path, result)
        print(result["steps_per_second"])
        return
    result["variants"] = launch(variants, args.work, parallel=args.parallel, timeout=args.timeout)
    write_results(path, result)
    plot(result, path.with_suffix(".png"))
    show(result)


if __name__ == "__main__":
    main()
