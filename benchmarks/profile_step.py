"""Where a SIREN (or ReLU+PE) training step's GPU time goes: per-kernel CUDA time (torch.profiler) of the plain
PyTorch step and of the fused one, and each step's time when the whole step is replayed as one CUDA graph (no
launch cost).

    python benchmarks/profile_step.py --width 256 --size 256 [--field relu-pe]

The eager steps take PyTorch's fused Adam; inside the CUDA graph the fields' Adam runs its Triton kernels.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import nfields
from nfields.kernels import set_kernel
from nfields.train.graph import make_capturable


def step_fn(field, coords, target, optimizer):
    def step():
        loss = ((field(coords) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    return step


def graph_ms(step, repeats: int = 50) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--field", default="siren", choices=["siren", "relu-pe"])
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    image = nfields.load_image("camera", size=(args.size,))
    coords = image.coords("endpoints" if args.field == "siren" else "centers").cuda()
    target = image.targets().cuda() * 2 - 1
    for kernel in ("torch", "fused"):
        torch.manual_seed(0)
        field = nfields.make_field(args.field, 2, 1, width=args.width).cuda()
        set_kernel(field, kernel, coords.device)
        optimizer = field.make_optimizer(field.default_lr)  # the fields' Adam, as fit_kernels.py and the trainer use
        make_capturable(optimizer)
        step = step_fn(field, coords, target, optimizer)
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            torch.cuda.synchronize()
        print(f"== {kernel} {args.field}: width {args.width}, {args.size}^2, per-kernel CUDA time over 10 steps")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
        print(f"{kernel}: one CUDA graph per step: {graph_ms(step):.3f} ms/step")


if __name__ == "__main__":
    main()
