"""What a model costs: parameters, FLOPs and throughput, as in mNIF's efficiency columns.

    parameter_count(model)                        # every parameter
    parameter_count(model, trainable_only=True)   # the learnable ones
    gflops(model, x) / len(x)                     # GFLOPs per sample
    samples_per_second(lambda: sample(64), n=64, device="cuda")
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `module` (each shared tensor once); only those with requires_grad if
    `trainable_only`. Buffers (e.g. batch-norm statistics) are not parameters and are not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def gflops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """GFLOPs (1e9 floating-point operations) of one call `fn(*args, **kwargs)`, counted by PyTorch's
    `FlopCounterMode`.

    It counts matrix products and convolutions (mm, addmm, bmm, baddbmm, conv, scaled-dot-product attention)
    as 2 x multiply-adds, the usual convention; element-wise work (sin, activations, bias adds, norms, softmax)
    is not counted. A backward pass inside `fn` is counted too; call it under torch.no_grad() to count only
    inference.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / 1e9


def samples_per_second(fn: Callable[[], Any], n: int, warmup: int = 3, repeats: int = 10,
                       device: torch.device | str | None = None) -> float:
    """Throughput of `fn`, a call that produces `n` samples: n / median seconds per call over `repeats` timed
    calls after `warmup` untimed ones (kernel selection, caches, lazy loading).

    On a CUDA `device` the GPU is synchronised before and after each call, so the time covers the work and not
    only its launch. The median (ours) keeps one slow call (another process, a page fault) from moving the
    number. Gradient tracking is left to `fn`: wrap it in torch.inference_mode() to time pure inference.
    """
    if n <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError(f"need n > 0, repeats > 0 and warmup >= 0, not n={n}, repeats={repeats}, warmup={warmup}")
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return n / statistics.median(seconds)
