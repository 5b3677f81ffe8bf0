"""Generalizable-INR training jobs for the benchmarks, each in its own process.

A `Job` is one training run: ours (nfields' model, objective and Trainer) or the official IPC code's model
(kakaobrain/ginr-ipc, given by its checkout) in a loop that mirrors its trainer. Each job writes its test-PSNR
curve to JSON after every evaluation, so a run cut short by a time limit keeps what it measured. `launch` runs
jobs side by side on one GPU (quality per step does not depend on what else runs; speed is timed alone, see
`Job.time_only`). `code` points a job at another checkout of nfields, e.g. the code before a change.

    python benchmarks/ginr_jobs.py --job '{"name": "x", "method": "ipc", "steps": 200}' --out x.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Job:
    name: str
    impl: str = "ours"  # "ours" or "official" (the official IPC model; needs `official`)
    dataset: str = "fashion-mnist"
    method: str = "ipc"
    options: dict = field(default_factory=dict)  # method options (ours); patch_size, fourier_sigma, tokens (official)
    defaults: bool = False  # ours: start from what `nfields train ginr` does with no -o (else the options alone)
    batch: int = 16
    lr: float = 1e-4
    steps: int = 10_000
    seconds: float = 0.0  # > 0: stop at this much training time instead of `steps`
    eval_at: list = field(default_factory=list)  # steps (or, with `seconds`, seconds) of the test evaluations
    eval_limit: int = 1000  # first N test instances (0: all)
    precision: str = "tf32"
    seed: int = 0
    size: int | None = None
    code: str = ""  # another checkout's root whose nfields this job imports
    official: str = ""  # the official checkout (impl "official")
    time_only: int = 0  # steps `time_jobs` times (after 20 warm-up steps); 0: 200


def job_command(job: Job, out: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    root = job.code or str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return [sys.executable, __file__, "--job", json.dumps(dataclasses.asdict(job)), "--out", str(out)], env


def time_alone(jobs: list[Job], out: Path, timeout: float = 600) -> list[dict]:
    """Steps/s of each job alone (one process, one job after another): [{job, steps_per_second, ...}]."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, __file__, "--time", json.dumps([dataclasses.asdict(j) for j in jobs]), "--out", str(out)]
    try:
        subprocess.run(command, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    return json.loads(out.read_text())["timings"] if out.exists() else []


def launch(jobs: list[Job], folder: Path, parallel: int, timeout: float) -> list[dict]:
    """Run `jobs`, `parallel` at a time, within `timeout` seconds in all; each one's last written result."""
    folder.mkdir(parents=True, exist_ok=True)
    pending, running, deadline = list(jobs), [], time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            command, env = job_command(job, folder / f"{job.name}.json")
            log = open(folder / f"{job.name}.log", "w")
            running.append((job, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(1.0)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                item[2].close()
        if time.monotonic() > deadline:
            for _, process, log in running:
                process.kill()
                log.close()
            break
    results = []
    for job in jobs:
        path = folder / f"{job.name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            tail = (folder / f"{job.name}.log").read_text()[-600:] if (folder / f"{job.name}.log").exists() else ""
            results.append({"job": dataclasses.asdict(job), "curve": [], "error": tail})
    return results


# -- one job, in its own process ------------------------------------------------------------------------

def build(job: Job, cache: dict | None = None):
    """(model, train_step(step) -> train PSNR tensor, evaluate() -> test PSNR, device) for `job`; `cache` keeps
    loaded datasets between the jobs of one process."""
    import torch

    from nfields.jobs import train_ginr as ginr
    from nfields.jobs.common import prepare

    config = ginr.TrainGINRConfig(source=job.dataset, field=job.method, batch=job.batch, lr=job.lr, seed=job.seed,
                                  steps=10**9, precision=job.precision, eval_limit=job.eval_limit, size=job.size,
                                  field_options=job.options if job.impl == "ours" else {}, device="auto",
                                  checkpoint_every=10**9, log_every=100)
    device = prepare(config)
    key = (job.dataset, job.size, job.eval_limit)
    cache = {} if cache is None else cache
    if key not in cache:
        train, spec = ginr.load_instances(config, "train")
        test, _ = ginr.load_instances(config, "test", config.eval_limit)
        cache[key] = (ginr.to_device(train, device), ginr.to_device(test, device), spec)
    train, test, spec = cache[key]
    spec = dataclasses.replace(spec)
    torch.manual_seed(job.seed)
    if job.impl == "official":
        return (*official_model(job, spec, train, test, device), device)
    return (*our_model(job, config, spec, train, test, device), device)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(train_step, device, steps: int, warmup: int = 20) -> float:
    for step in range(warmup):
        train_step(step)
    synchronize(device)
    started = time.perf_counter()
    for step in range(warmup, warmup + steps):
        train_step(step)
    synchronize(device)
    return steps / (time.perf_counter() - started)


def run(job: Job, out: Path) -> None:
    """Train `job`, evaluating at its marks, and write its curve after every evaluation."""
    import torch

    model, train_step, evaluate, device = build(job)
    result = {"job": dataclasses.asdict(job), "device_name": torch.cuda.get_device_name() if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "curve": [],
              "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def write():
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        out.write_text(json.dumps(result, indent=1) + "\n")

    limit = job.seconds or job.steps
    marks = sorted(p for p in set(job.eval_at) if 0 < p < limit) + [limit]
    step, seconds, recent = 0, 0.0, collections.deque(maxlen=100)
    for mark in marks:
        synchronize(device)
        started = time.perf_counter()
        while (seconds + time.perf_counter() - started if job.seconds else step) < mark:
            recent.append(train_step(step))
            step += 1
            if job.seconds and step % 10 == 0:
                synchronize(device)  # the clock then reads the GPU's time, not how fast steps are queued
        synchronize(device)
        seconds += time.perf_counter() - started
        result["curve"].append({"step": step, "seconds": seconds, "test_psnr": evaluate(),
                                "train_psnr": float(torch.stack(list(recent)).mean()) if recent else None})
        result.update(steps=step, seconds=seconds, steps_per_second=step / seconds if seconds else 0.0)
        write()


def time_jobs(jobs: list[Job], out: Path) -> None:
    """Steps/s of each job alone, one after another in this process (`time_only` steps each)."""
    import torch

    cache, result = {}, {"timings": []}
    for job in jobs:
        model, train_step, _, device = build(job, cache)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        speed = steps_per_second(train_step, device, job.time_only or 200, warmup=min(20, job.time_only or 20))
        result["timings"].append({"job": dataclasses.asdict(job), "steps_per_second": speed,
                                  "instances_per_second": speed * job.batch,
                                  "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
                                  if device.type == "cuda" else None})
        out.write_text(json.dumps(result, indent=1) + "\n")
        del model, train_step
        if device.type == "cuda":
            torch.cuda.empty_cache()


def our_model(job, config, spec, train, test, device):
    """nfields' model (options as given, or `nfields train ginr`'s defaults under them), objective and Adam."""
    import torch

    from nfields.ginr import make_ginr
    from nfields.jobs import train_ginr as ginr
    from nfields.metrics.image import mse_to_psnr

    spec.instances = len(train)
    options = dict(job.options)
    if job.defaults:
        rule = getattr(ginr, "default_options", None) or ginr.paper_options
        options = {**rule(job.method, *spec.image_size[:2], False), **options}
    config = dataclasses.replace(config, field_options=options, pixel_fraction=1.0)
    model = make_ginr(job.method, spec, **options).to(device)
    objective = ginr.ImageSetObjective(model, train, test, config)
    optimizer = torch.optim.Adam(model.parameter_groups(job.lr))

    def train_step(step):
        loss, _ = objective.loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return mse_to_psnr(loss.detach())

    return model, train_step, lambda: float(ginr.evaluate_images(model, test).mean())


def official_model(job, spec, train, test, device):
    """The official IPC model (kakaobrain/ginr-ipc, `LowRankModulatedTransINR`) built from its CelebA config
    with only the data's sizes changed, trained as its `trainer_stage_inr.Trainer.train` does: zero_grad,
    forward on the full coordinate grid, `compute_loss` (mean MSE), backward, Adam(1e-4, (0.9, 0.999))."""
    import torch

    from nfields.jobs import train_ginr as ginr
    from nfields.metrics.image import mse_to_psnr

    shim_official_code()
    sys.path.insert(0, str(Path(job.official) / "src"))
    from omegaconf import OmegaConf
    from models.generalizable_INR.configs import LowRankModulatedTransINRConfig
    from models.generalizable_INR.low_rank_modulated_transinr import LowRankModulatedTransINR

    (height, width), channels = spec.image_size[:2], spec.channels
    patch = int(job.options.get("patch_size", 4))
    arch = OmegaConf.load(Path(job.official) / "configs/image/low_rank_modulated_transinr/"
                                               "celeba178_low_rank_modulated_transinr.yaml").arch
    arch.data_encoder.n_channel = channels
    arch.data_encoder.encoder_spec.patch_size, arch.data_encoder.encoder_spec.padding = patch, 0
    arch.latent_mapping.n_patches = (height // patch) * (width // patch)
    arch.hyponet.output_dim = channels
    arch.hyponet.fourier_mapping.ff_sigma = int(job.options.get("fourier_sigma", 64))
    arch.n_weight_groups = [int(job.options.get("tokens", 256))]
    torch.manual_seed(job.seed)
    model = LowRankModulatedTransINR(LowRankModulatedTransINRConfig.create(arch)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.lr, betas=(0.9, 0.999), weight_decay=0.0)
    steps_per_epoch = len(train) // job.batch
    orders = {}

    def batch(step):
        epoch, position = divmod(step, steps_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = ginr.epoch_order(job.seed, epoch, len(train))
        index = orders[epoch][position * job.batch:(position + 1) * job.batch].to(device)
        return train.float_images(index).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W), as its loader

    def train_step(step):
        xs = batch(step)
        model.zero_grad(set_to_none=True)
        outputs = model(xs, model.sample_coord_input(xs, device=xs.device))
        loss = model.compute_loss(outputs, xs)["loss_total"]
        loss.backward()
        optimizer.step()
        return mse_to_psnr(loss.detach())

    @torch.no_grad()
    def evaluate():
        model.eval()
        scores = []
        for start in range(0, len(test), 64):
            images = test.float_images(torch.arange(start, min(len(test), start + 64), device=device))
            xs = images.permute(0, 3, 1, 2).contiguous()
            outputs = model(xs, model.sample_coord_input(xs, device=xs.device))
            scores.append(ginr.batch_psnr(outputs.permute(0, 2, 3, 1), images))
        model.train()
        return float(torch.cat(scores).mean())

    return model, train_step, evaluate


def shim_official_code() -> None:
    """What the official code (written for Python 3.8 and numpy 1) needs on today's versions, changing none of
    its files: dataclass instances as field defaults (refused since Python 3.11) become default factories, and
    numpy's removed `product` is `prod`."""
    import numpy as np

    np.product = np.prod
    original = dataclasses._get_field

    def get_field(cls, name, annotation, *rest):
        default = cls.__dict__.get(name, dataclasses.MISSING)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            setattr(cls, name, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d)))
        return original(cls, name, annotation, *rest)

    dataclasses._get_field = get_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", help="a Job as JSON: train it")
    parser.add_argument("--time", help="a list of Jobs as JSON: time each alone")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.time:
        time_jobs([Job(**j) for j in json.loads(args.time)], args.out)
    else:
        run(Job(**json.loads(args.job)), args.out)


if __name__ == "__main__":
    main()
