"""Multi-GPU training with `torchrun` + DistributedDataParallel: nothing home-made beyond the glue.

`torchrun --nproc_per_node K -m nfields train ginr ...` sets RANK, WORLD_SIZE and LOCAL_RANK; `setup`
joins the process group (NCCL on CUDA, gloo on CPU). Rank 0 writes the run folder; every rank
trains on its own slice of each global batch, and DDP averages the gradients.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True inside a multi-process `torchrun` launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; the device this rank uses (cuda:LOCAL_RANK)."""
    if not launched() or dist.is_initialized():
        return _local(device)
    device = _local(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _local(device: torch.device) -> torch.device:
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (so all ranks stop at the same step)."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def wrap(model: nn.Module) -> nn.Module:
    """The model under DDP when distributed (rank 0's weights are broadcast), else the model itself."""
    if not active():
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class StopVote:
    """Every rank's flag, agreed without a host sync per step: each `post` starts an all-reduce (MAX) of this
    rank's flag and returns the agreed value of the previous post. All ranks post once per step, so all get the
    same answer at the same step, one step late; `close` waits for the last vote. Without a process group, the
    flag itself at once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: tuple[torch.Tensor, object] | None = None

    def post(self, flag: bool) -> bool:
        if not active():
            return flag
        value = torch.full((1,), float(flag), device=self.device)
        work = dist.all_reduce(value, op=dist.ReduceOp.MAX, async_op=True)
        previous, self.pending = self.pending, (value, work)
        if previous is None:
            return False
        tensor, handle = previous
        handle.wait()
        return bool(tensor.item())

    def close(self) -> None:
        if self.pending is not None:
            self.pending[1].wait()
            self.pending = None
